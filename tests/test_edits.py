"""Persistent edits: `with model.edit():` applies to every later block (each invoke, every forward pass) equal to
plain hooks on every forward pass, until `model.clear_edits()`; named sets, `edits=False`, `print(model)`, errors."""

from __future__ import annotations

import pytest
import torch

from ndif_jupyter import Model
from ndif_jupyter.errors import TraceError
from ndif_testing import reference

PROMPT = "The Eiffel Tower is in the city of"
OTHER = "Hello world"
THRESHOLD = 0.18
"""Between the norms of layer 0 at the last position over the steps, so that some steps take the edit."""


def paths(model: Model) -> tuple[str, str]:
    """A layer to steer and an MLP to switch off."""
    if hasattr(model.config, "n_layer"):
        return "transformer.h.1", "transformer.h.0.mlp"
    return "model.layers.1", "model.layers.0.mlp"


def record_edit(model: Model, vector: torch.Tensor, name: str = "default") -> None:
    steered, silenced = paths(model)
    with model.edit(name):
        model.module(steered).output[:, -1] += vector
        model.module(silenced).output[:] = 0


def hook_edit(model: Model, vector: torch.Tensor):
    steered, silenced = paths(model)

    def edit(path, output):
        output = output.clone()
        if path == steered:
            output[:, -1] += vector
        else:
            output[:] = 0
        return output

    return [steered, silenced], edit


@pytest.mark.parametrize("name", ["gpt2", "llama"])
def test_an_edit_applies_to_every_later_block_as_plain_hooks_do(name, request):
    model = request.getfixturevalue(name)
    folder = request.getfixturevalue(f"{name}_dir")
    vector = torch.linspace(-2, 2, model.config.hidden_size)
    record_edit(model, vector)
    with model.generate(max_new_tokens=6, do_sample=False) as generator:
        with generator.invoke(PROMPT):
            pass
    with model.trace() as tracer:
        with tracer.invoke(PROMPT):
            first = model.lm_head.output.save()
            steered = model.module(paths(model)[0]).output.save()
        with tracer.invoke(OTHER):
            second = model.lm_head.output.save()

    ref = reference.load(folder)
    hooked, edit = hook_edit(model, vector)
    ids = model.tokenizer(PROMPT)["input_ids"]
    with reference.capture(ref, hooked, edit=edit) as seen:
        expected_ids = reference.greedy(ref, ids, 6, model.loaded.pad_token_id)
    assert torch.equal(generator.output, expected_ids), "the edit applies at every generated token"
    with reference.capture(ref, hooked, edit=edit) as seen:
        expected_first = reference.forward_logits(ref, ids)
        expected_steered = seen[paths(model)[0]][0]
        expected_second = reference.forward_logits(ref, model.tokenizer(OTHER)["input_ids"])
    torch.testing.assert_close(first.value, expected_first, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(second.value, expected_second, rtol=1e-5, atol=1e-5)
    assert torch.equal(steered.value, expected_steered), "the block reads the edited value"
    plain_ids = reference.greedy(ref, ids, 6, model.loaded.pad_token_id)
    assert not torch.equal(plain_ids, expected_ids), "the edit changed the tokens"


def test_sets_by_name_clearing_and_blocks_without_edits(gpt2: Model):
    with gpt2.trace(PROMPT):
        plain = gpt2.lm_head.output.save()
    vector = torch.linspace(-2, 2, gpt2.config.n_embd)
    record_edit(gpt2, vector, "steer")
    with gpt2.trace(PROMPT):
        once = gpt2.lm_head.output.save()
    record_edit(gpt2, vector, "steer")
    with gpt2.trace(PROMPT):
        replaced = gpt2.lm_head.output.save()
    assert torch.equal(once.value, replaced.value), "the same name replaces its set instead of adding a second"
    with gpt2.edit("scale"):
        gpt2.transformer.h[3].output[:] *= 2
    assert list(gpt2.edits) == ["steer", "scale"]
    assert gpt2.edits["scale"][0].startswith("gpt2.transformer.h[3].output[:] *= 2    # ")
    shown = repr(gpt2)
    assert "Persistent edits" in shown and '"steer"' in shown and "output[:] *= 2" in shown
    with gpt2.trace(PROMPT, edits=False):
        without = gpt2.lm_head.output.save()
    assert torch.equal(without.value, plain.value)
    gpt2.clear_edits("scale")
    with gpt2.trace(PROMPT):
        steer_only = gpt2.lm_head.output.save()
    assert torch.equal(steer_only.value, once.value)
    with pytest.raises(KeyError, match='no edit set "scal" \\(it has "steer"\\)'):
        gpt2.clear_edits("scal")
    gpt2.clear_edits()
    with gpt2.trace(PROMPT):
        cleared = gpt2.lm_head.output.save()
    assert torch.equal(cleared.value, plain.value)
    assert "Persistent edits" not in repr(gpt2)


def test_a_conditional_edit_decides_at_every_forward_pass(llama: Model, llama_dir):
    vector = torch.linspace(-3, 3, llama.config.hidden_size)
    with llama.edit() as edit:
        norm = llama.model.layers[0].output[0, -1].norm()
        with edit.cond(norm > THRESHOLD):
            llama.model.layers[1].output[:, -1] += vector
    with llama.generate(max_new_tokens=6, do_sample=False) as generator:
        with generator.invoke(PROMPT):
            pass
    ref = reference.load(llama_dir)
    decided = []

    def decide(path, output):
        if path == "model.layers.0":
            decided.append(bool(output[0, -1].norm() > THRESHOLD))
            return None
        if not decided[-1]:
            return None
        output = output.clone()
        output[:, -1] += vector
        return output

    ids = llama.tokenizer(PROMPT)["input_ids"]
    with reference.capture(ref, ["model.layers.0", "model.layers.1"], edit=decide):
        expected = reference.greedy(ref, ids, 6, llama.loaded.pad_token_id)
    assert torch.equal(generator.output, expected)
    assert any(decided) and not all(decided), decided


def test_edits_say_what_is_wrong(gpt2: Model):
    hidden = gpt2.transformer.h
    cases = [
        (lambda edit: hidden[0].output.save(), "An edit keeps no values"),
        (lambda edit: hidden[0].output.t(2), "stand-in prompt"),
        (lambda edit: edit.invoke(PROMPT), "it has no prompts of its own"),
        (lambda edit: edit.next(), "it has no steps"),
        (lambda edit: gpt2.lm_head.output.sum().backward(), "gradients, `stop\\(\\)` and `log\\(\\)` belong"),
    ]
    for body, message in cases:
        with pytest.raises(TraceError, match=message):
            with gpt2.edit() as edit:
                body(edit)
        assert not gpt2.edits, "a failed edit is not kept"
    with gpt2.edit("late"):
        hidden[0].output[:, 7] = 0
    with pytest.raises(TraceError, match=r'persistent edit "late" does not fit this block: .*index 7 is out of bounds'):
        with gpt2.generate(max_new_tokens=2) as generator:
            with generator.invoke(PROMPT):
                pass
    with gpt2.trace(PROMPT, edits=False):
        pass
    with gpt2.trace(PROMPT):  # 9 tokens: position 7 exists in a trace
        pass
    gpt2.clear_edits()

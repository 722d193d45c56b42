"""Control flow in the graph: `tracer.cond` equals a plain hook that decides with Python's `if`, at every step of a
generation; `.item()` and `.tolist()` are graph values; `tracer.log` prints after the run; and the errors."""

from __future__ import annotations

import pytest
import torch

from ndif_jupyter import Model
from ndif_jupyter.errors import TraceError
from ndif_testing import reference

PROMPT = "The Eiffel Tower is in the city of"


def layer_paths(model: Model) -> tuple[str, str]:
    prefix = "transformer.h" if hasattr(model.config, "n_layer") else "model.layers"
    return f"{prefix}.1", f"{prefix}.2"


@pytest.mark.parametrize("name", ["gpt2", "llama"])
def test_a_condition_at_every_step_equals_a_hook_that_decides_with_if(name, request):
    model = request.getfixturevalue(name)
    folder = request.getfixturevalue(f"{name}_dir")
    reads, writes = layer_paths(model)
    vector = torch.linspace(-3, 3, model.config.hidden_size)
    with model.generate(max_new_tokens=8, do_sample=False) as plain:
        with plain.invoke(PROMPT):
            norms = [model.module(reads).output[0, -1].norm().save() for _ in plain.steps]
    threshold = torch.stack([norm.value for norm in norms]).median().item()

    with model.generate(max_new_tokens=8, do_sample=False) as generator:
        with generator.invoke(PROMPT):
            for _ in generator.steps:
                with generator.cond(model.module(reads).output[0, -1].norm() > threshold):
                    model.module(writes).output[:, -1] += vector

    ref = reference.load(folder)
    taken = []
    last_norm = {}

    def decide(path, output):
        if path == reads:
            last_norm["value"] = output[0, -1].norm()
            return None
        taken.append(bool(last_norm["value"] > threshold))
        if not taken[-1]:
            return None
        output = output.clone()
        output[:, -1] += vector
        return output

    ids = model.tokenizer(PROMPT)["input_ids"]
    with reference.capture(ref, [reads, writes], edit=decide):
        expected = reference.greedy(ref, ids, 8, model.loaded.pad_token_id)
    assert torch.equal(generator.output, expected)
    assert any(taken) and not all(taken), f"both branches should be taken over the steps: {taken}"


def test_what_a_false_condition_leaves_out_and_nesting(gpt2: Model):
    hidden = gpt2.transformer.h
    with gpt2.trace(PROMPT) as tracer:
        norm = hidden[0].output.norm()
        with tracer.cond(norm > 0):
            with tracer.cond(norm > 1e9):
                never = hidden[1].output.sum().save()
                hidden[1].output[:] = 0
            with tracer.cond(~(norm > 1e9)):
                otherwise = hidden[1].output.sum().save()
        from_never = (never * 2).save()
        logits = gpt2.lm_head.output.save()
    with gpt2.trace(PROMPT):
        untouched = gpt2.lm_head.output.save()
        expected = hidden[1].output.sum().save()
    assert torch.equal(logits.value, untouched.value), "the false branch wrote nothing"
    assert torch.equal(otherwise.value, expected.value)
    for value in (never, from_never):
        with pytest.raises(Exception, match=r"never computed: its condition \(`with tracer.cond\(norm > 1e9\):`\)"):
            value.value


def test_item_and_tolist_are_graph_values(llama: Model):
    with llama.trace(PROMPT):
        logits = llama.lm_head.output[0, -1]
        top = logits.argmax().item()
        chosen = logits[top].save()
        as_number = logits.max().item().save()
        first = logits[:3].tolist().save()
        top_saved = top.save()
    with llama.trace(PROMPT):
        plain = llama.lm_head.output[0, -1].save()
    assert top_saved.value == plain.value.argmax().item() and isinstance(top_saved.value, int)
    assert as_number.value == plain.value.max().item() and isinstance(as_number.value, float)
    assert first.value == plain.value[:3].tolist()
    assert torch.equal(chosen.value, plain.value.max())


def test_log_prints_after_the_run(gpt2: Model, capsys):
    with gpt2.generate(max_new_tokens=3, do_sample=False) as generator:
        with generator.invoke(PROMPT):
            for step in generator.steps:
                token = gpt2.lm_head.output[0, -1].argmax()
                generator.log("step", step, "token", token)
                assert capsys.readouterr().out == "", "nothing is printed while recording"
    tokens = generator.output[0, -3:].tolist()
    printed = capsys.readouterr().out.splitlines()
    assert printed == [f"step {step} token tensor({token})" for step, token in enumerate(tokens)]


def test_control_flow_says_what_is_wrong(gpt2: Model):
    hidden = gpt2.transformer.h
    with pytest.raises(TraceError, match=r"no truth value[\s\S]*with tracer.cond\(value\)"):
        with gpt2.trace(PROMPT):
            if hidden[0].output.norm() > 1:
                pass
    with pytest.raises(TraceError, match="A condition must be one value; this one is a tensor of shape"):
        with gpt2.trace(PROMPT) as tracer:
            with tracer.cond(hidden[0].output > 0):
                pass
    with pytest.raises(TraceError, match="Use a plain Python `if`"):
        with gpt2.trace(PROMPT) as tracer:
            with tracer.cond(True):
                pass
    with pytest.raises(TraceError, match="A backward pass cannot depend on a condition"):
        with gpt2.trace(PROMPT) as tracer:
            loss = gpt2.lm_head.output.sum()
            with tracer.cond(loss > 0):
                loss.backward()
    with pytest.raises(TraceError, match=r"transformer.h\[0\].output` is used before the condition"):
        with gpt2.trace(PROMPT) as tracer:
            with tracer.cond(hidden[2].output.norm() > 1):
                hidden[0].output[:] = 0
    with pytest.raises(TraceError, match="has no single item"):
        with gpt2.trace(PROMPT):
            hidden[0].output.item()

"""`generator.steps`: iterating a generation's steps equals the explicit `next()` form; steering at every step
equals a plain hook that edits every forward pass."""

from __future__ import annotations

import pytest
import torch

from ndif_jupyter import Model
from ndif_jupyter.errors import TraceError
from ndif_testing import reference

PROMPT = "The Eiffel Tower is in the city of"


def layers_of(model: Model):
    return model.transformer.h if hasattr(model.config, "n_layer") else model.model.layers


@pytest.mark.parametrize("name", ["gpt2", "llama"])
def test_a_loop_over_steps_equals_explicit_next_calls(name, request):
    model = request.getfixturevalue(name)
    layers = layers_of(model)
    with model.generate(max_new_tokens=5, do_sample=False) as looped:
        with looped.invoke(PROMPT):
            by_loop = [layers[1].output.save() for _ in looped.steps]
    with model.generate(max_new_tokens=5, do_sample=False) as explicit:
        with explicit.invoke(PROMPT) as invoker:
            by_next = [layers[1].output.save()]
            for _ in range(4):
                invoker.next()
                by_next.append(layers[1].output.save())
    assert torch.equal(looped.output, explicit.output)
    assert len(by_loop) == 5
    for mine, theirs in zip(by_loop, by_next):
        assert torch.equal(mine.value, theirs.value)


def test_a_slice_of_steps_starts_where_it_says(gpt2: Model):
    with gpt2.generate(max_new_tokens=6, do_sample=False) as generator:
        with generator.invoke(PROMPT) as invoker:
            taken = [step for step in generator.steps[2:5]]
            assert invoker.step == 4
            last = [step for step in generator.steps[-1]]
            logits = gpt2.lm_head.output.save()
            assert len(generator.steps) == 6 and len(generator.steps[2:5]) == 3
    with gpt2.generate(max_new_tokens=6, do_sample=False) as explicit:
        with explicit.invoke(PROMPT) as invoker:
            invoker.next(5)
            expected = gpt2.lm_head.output.save()
    assert taken == [2, 3, 4] and last == [5]
    assert torch.equal(logits.value, expected.value)


def test_steering_at_every_step_equals_a_hook_on_every_forward_pass(gpt2: Model, gpt2_dir):
    vector = torch.linspace(-1, 1, gpt2.config.n_embd)
    with gpt2.generate(max_new_tokens=8, do_sample=False) as generator:
        with generator.invoke(PROMPT):
            for _ in generator.steps:
                gpt2.transformer.h[2].output[:, -1] += vector
    ref = reference.load(gpt2_dir)
    ids = gpt2.tokenizer(PROMPT)["input_ids"]

    def steer(path, output):
        output = output.clone()
        output[:, -1] += vector
        return output

    with reference.capture(ref, ["transformer.h.2"], edit=steer):
        expected_ids = reference.greedy(ref, ids, 8, gpt2.loaded.pad_token_id)
    assert torch.equal(generator.output, expected_ids)
    with gpt2.generate(max_new_tokens=8, do_sample=False) as plain:
        with plain.invoke(PROMPT):
            pass
    assert not torch.equal(plain.output, generator.output), "the steering vector changed nothing"


def test_steps_say_what_is_wrong(gpt2: Model):
    with pytest.raises(TraceError, match="no invoke is open"):
        with gpt2.generate(max_new_tokens=3) as generator:
            for _ in generator.steps:
                pass
    with pytest.raises(TraceError, match="only go forward: the open invoke is at step 2"):
        with gpt2.generate(max_new_tokens=4) as generator:
            with generator.invoke(PROMPT) as invoker:
                invoker.next(2)
                for _ in generator.steps[1:]:
                    pass
    with pytest.raises(TraceError, match="Step 7 is not among"):
        with gpt2.generate(max_new_tokens=4) as generator:
            with generator.invoke(PROMPT):
                generator.steps[7]
    with pytest.raises(TraceError, match="a trace runs one forward pass"):
        with gpt2.trace(PROMPT) as tracer:
            tracer.steps

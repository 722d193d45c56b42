"""Beam search and several sequences per prompt: without interventions the tokens equal Hugging Face's own
`generate`; interventions address each invoke's rows as the forward passes see them (a prompt's beams side by
side), equal to a plain hook on every forward pass; values saved per step are the beams of that step."""

from __future__ import annotations

import pytest
import torch

from ndif_jupyter import Model
from ndif_jupyter.errors import TraceError
from ndif_testing import reference

PROMPT = "The Eiffel Tower is in the city of"
SHORT = "Hello world"


def hf_generate(folder, model: Model, prompt: str, edit=None, paths=(), **options) -> tuple[torch.Tensor, dict]:
    ref = reference.load(folder)
    ids = model.tokenizer(prompt)["input_ids"]
    with reference.capture(ref, list(paths), edit=edit) as seen, torch.no_grad():
        output = ref.generate(
            torch.tensor([ids]),
            attention_mask=torch.ones(1, len(ids), dtype=torch.long),
            pad_token_id=model.loaded.pad_token_id,
            **options,
        )
    return output, seen


@pytest.mark.parametrize("name", ["gpt2", "llama"])
def test_beams_equal_hugging_faces_beam_search_and_each_invoke_its_own(name, request):
    model = request.getfixturevalue(name)
    folder = request.getfixturevalue(f"{name}_dir")
    options = {"max_new_tokens": 6, "num_beams": 3, "num_return_sequences": 2, "do_sample": False}
    with model.generate(**options) as generator:
        with generator.invoke(PROMPT) as first:
            pass
        with generator.invoke(SHORT) as second:
            pass
    expected_first, _ = hf_generate(folder, model, PROMPT, **options)
    expected_second, _ = hf_generate(folder, model, SHORT, **options)
    assert generator.output.shape[0] == 4
    assert torch.equal(first.output, expected_first)
    assert torch.equal(second.output, expected_second)


def test_steering_every_beam_equals_a_hook_on_every_forward_pass(gpt2: Model, gpt2_dir):
    vector = torch.linspace(-2, 2, gpt2.config.n_embd)
    options = {"max_new_tokens": 5, "num_beams": 3, "do_sample": False}
    with gpt2.generate(**options) as generator:
        with generator.invoke(PROMPT):
            read = []
            for _ in generator.steps:
                gpt2.transformer.h[1].output[:, -1] += vector
                read.append(gpt2.transformer.h[2].output.save())

    def steer(path, output):
        if path != "transformer.h.1":
            return None
        output = output.clone()
        output[:, -1] += vector
        return output

    expected, seen = hf_generate(
        gpt2_dir, gpt2, PROMPT, edit=steer, paths=["transformer.h.1", "transformer.h.2"], **options
    )
    assert torch.equal(generator.output, expected)
    assert len(read) == len(seen["transformer.h.2"]) == 5
    for mine, theirs in zip(read, seen["transformer.h.2"]):
        assert mine.value.shape[0] == 3, "a step's value holds the prompt's beams, in that step's order"
        assert torch.equal(mine.value, theirs)
    plain, _ = hf_generate(gpt2_dir, gpt2, PROMPT, **options)
    assert not torch.equal(plain, expected), "the steering changed the beams"


def test_seeded_sequences_per_prompt_are_repeatable_and_differ(llama: Model):
    options = {"max_new_tokens": 5, "do_sample": True, "num_return_sequences": 3, "seed": 7}
    outputs = []
    for _ in range(2):
        with llama.generate(**options) as generator:
            with generator.invoke(PROMPT):
                logits = llama.lm_head.output.save()
        outputs.append(generator.output)
    assert torch.equal(outputs[0], outputs[1])
    assert outputs[0].shape[0] == 3 and len({tuple(row.tolist()) for row in outputs[0]}) == 3
    assert logits.value.shape[0] == 3
    record = generator.run_record
    assert record is not None and len(record.invokes[0].rows) == len(record.invokes[0].generated) == 3


def test_several_sequences_say_what_is_wrong(gpt2: Model):
    cases = [
        ({"num_return_sequences": 2}, "without beams or sampling"),
        ({"num_beams": 2, "num_return_sequences": 3}, "more than num_beams=2"),
        ({"num_beams": 2, "seed": 1}, "beam search does not use it"),
        ({"num_beams": 0}, "must be a positive integer"),
    ]
    for options, message in cases:
        with pytest.raises(TraceError, match=message):
            gpt2.generate(max_new_tokens=2, **options)

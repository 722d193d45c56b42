"""Generation: `invoker.next()` moves interventions to the next token; values and ids equal hooks and HF's generate."""

from __future__ import annotations

import torch
from torch.testing import assert_close

from ndif_jupyter import Model
from ndif_testing import reference

PROMPT = "The Eiffel Tower is in the city of"


def test_values_saved_at_each_step_equal_plain_hooks(llama: Model, llama_dir):
    steps = 3
    with llama.generate(max_new_tokens=steps, do_sample=False) as generator:
        with generator.invoke(PROMPT) as invoker:
            saved = [llama.model.layers[-1].output.save()]
            for _ in range(steps - 1):
                invoker.next()
                saved.append(llama.model.layers[-1].output.save())
    ref = reference.load(llama_dir)
    ids = llama.tokenizer(PROMPT)["input_ids"]
    with reference.capture(ref, ["model.layers.3"]) as seen:
        expected_ids = reference.greedy(ref, ids, steps, llama.loaded.pad_token_id)
    assert torch.equal(generator.output, expected_ids)
    assert generator.output.shape == (1, len(ids) + steps)
    assert [proxy.value.shape[1] for proxy in saved] == [len(ids), 1, 1]
    for proxy, hooked in zip(saved, seen["model.layers.3"]):
        assert_close(proxy.value, hooked, rtol=0, atol=0)


def test_an_edit_at_a_later_step_changes_that_step_as_a_hook_does(gpt2: Model, gpt2_dir):
    steps = 3
    with gpt2.generate(max_new_tokens=steps, do_sample=False) as generator:
        with generator.invoke(PROMPT) as invoker:
            invoker.next()
            gpt2.transformer.h[2].output[:] = gpt2.transformer.h[2].output * -3
            logits = gpt2.lm_head.output.save()

    calls = {"n": 0}

    def edit_second_call(path, output):
        calls["n"] += 1
        return output * -3 if calls["n"] == 2 else None

    ref = reference.load(gpt2_dir)
    ids = gpt2.tokenizer(PROMPT)["input_ids"]
    with reference.capture(ref, ["transformer.h.2"], edit=edit_second_call):
        with reference.capture(ref, ["lm_head"]) as seen:
            expected_ids = reference.greedy(ref, ids, steps, gpt2.loaded.pad_token_id)
    assert torch.equal(generator.output, expected_ids)
    assert_close(logits.value, seen["lm_head"][1], rtol=0, atol=0)


def test_a_value_from_one_step_can_be_used_at_a_later_step(gpt2: Model):
    with gpt2.generate(max_new_tokens=2, do_sample=False) as generator:
        with generator.invoke(PROMPT) as invoker:
            first = gpt2.transformer.h[0].output[:, -1:]
            invoker.next()
            gpt2.transformer.h[0].output = first
            patched = gpt2.transformer.h[0].output.save()
            keep = first.save()
    assert_close(patched.value, keep.value, rtol=0, atol=0)


def test_generate_options_go_to_hugging_face(gpt2: Model):
    with gpt2.generate(max_new_tokens=5, do_sample=True, top_k=5, temperature=0.7) as generator:
        with generator.invoke(PROMPT):
            pass
    assert generator.output.shape[1] == len(gpt2.tokenizer(PROMPT)["input_ids"]) + 5


def test_values_after_an_early_end_of_sequence_explain_why_they_are_missing(gpt2: Model):
    from ndif_jupyter import ValueNotReadyError

    eos = gpt2.tokenizer.eos_token_id
    with gpt2.generate(
        max_new_tokens=3,
        do_sample=False,
        forced_eos_token_id=None,
        eos_token_id=eos,
        begin_suppress_tokens=None,
        bad_words_ids=None,
        suppress_tokens=None,
    ) as generator:
        with generator.invoke(PROMPT) as invoker:
            gpt2.lm_head.output[:, -1, eos] = 1e4
            first = gpt2.lm_head.output.save()
            invoker.next()
            never = gpt2.lm_head.output.save()
    assert first.value.shape[1] == 1  # as in Hugging Face's generate, the head sees only the last position
    assert generator.output[0, -1].item() == eos
    try:
        never.value
    except ValueNotReadyError as error:
        assert "generation stopped after 1 forward passes" in str(error)
    else:
        raise AssertionError("a value of a step that never ran must not have a value")

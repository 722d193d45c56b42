"""Several invokes in one batch: each sees only its own rows and tokens and gets what its prompt gives alone."""

from __future__ import annotations

import torch
from torch.testing import assert_close

from ndif_jupyter import Model

SHORT = "Hello world"
LONG = "The Eiffel Tower is in the city of"


def alone_trace(model: Model, prompt):
    with model.trace(prompt):
        h = model.transformer.h[-1].output.save()
        logits = model.lm_head.output.save()
    return h.value, logits.value


def test_batched_invokes_equal_each_prompt_alone_with_absolute_positions(gpt2: Model):
    with gpt2.trace() as tracer:
        with tracer.invoke(SHORT):
            short_h = gpt2.transformer.h[-1].output.save()
            short_logits = gpt2.lm_head.output.save()
            assert short_h.shape[1] == len(gpt2.tokenizer(SHORT)["input_ids"])
        with tracer.invoke(LONG):
            long_logits = gpt2.lm_head.output.save()
    short_alone_h, short_alone_logits = alone_trace(gpt2, SHORT)
    _, long_alone_logits = alone_trace(gpt2, LONG)
    assert short_h.value.shape == short_alone_h.shape
    assert_close(short_h.value, short_alone_h, rtol=1e-5, atol=1e-5)
    assert_close(short_logits.value, short_alone_logits, rtol=1e-5, atol=1e-5)
    assert_close(long_logits.value, long_alone_logits, rtol=1e-5, atol=1e-5)


def test_an_invoke_of_several_prompts_is_padded_like_that_list_alone(llama: Model):
    prompts = [SHORT, LONG]
    with llama.trace() as tracer:
        with tracer.invoke(prompts):
            both = llama.lm_head.output.save()
            first_token = llama.model.layers[0].output.t(0).save()
        with tracer.invoke("The Colosseum"):
            llama.lm_head.output.save()
    with llama.trace(SHORT):
        short = llama.lm_head.output.save()
        short_first = llama.model.layers[0].output[:, 0].save()
    with llama.trace(LONG):
        long = llama.lm_head.output.save()
        long_first = llama.model.layers[0].output[:, 0].save()
    n_short = short.value.shape[1]
    assert both.value.shape[:2] == (2, long.value.shape[1])
    assert_close(both.value[0, -n_short:], short.value[0], rtol=1e-5, atol=1e-5)
    assert_close(both.value[1], long.value[0], rtol=1e-5, atol=1e-5)
    assert_close(first_token.value[0], short_first.value[0], rtol=1e-5, atol=1e-5)
    assert_close(first_token.value[1], long_first.value[0], rtol=1e-5, atol=1e-5)


def test_token_index_ignores_padding(gpt2: Model):
    with gpt2.trace() as tracer:
        with tracer.invoke(SHORT):
            first = gpt2.transformer.h[0].output.t(0).save()
            last = gpt2.transformer.h[0].output.token(-1).save()
        with tracer.invoke(LONG):
            pass
    with gpt2.trace(SHORT):
        alone = gpt2.transformer.h[0].output.save()
    assert_close(first.value, alone.value[:, 0], rtol=1e-5, atol=1e-5)
    assert_close(last.value, alone.value[:, -1], rtol=1e-5, atol=1e-5)


def test_batched_generation_equals_each_prompt_alone(gpt2: Model):
    with gpt2.generate(max_new_tokens=4, do_sample=False) as generator:
        with generator.invoke(SHORT) as short:
            pass
        with generator.invoke(LONG) as long:
            pass
    outputs = {}
    for prompt in (SHORT, LONG):
        with gpt2.generate(max_new_tokens=4, do_sample=False) as alone:
            with alone.invoke(prompt):
                pass
        outputs[prompt] = alone.output
    assert torch.equal(short.output, outputs[SHORT])
    assert torch.equal(long.output, outputs[LONG])
    assert generator.output.shape == (2, long.output.shape[1])


def test_cross_prompt_intervention_moves_one_prompt_into_another(gpt2: Model):
    n = len(gpt2.tokenizer(LONG)["input_ids"])
    filler = gpt2.tokenizer.decode(gpt2.tokenizer(" _" * 40)["input_ids"][:n])
    assert len(gpt2.tokenizer(filler)["input_ids"]) == n
    with gpt2.trace() as tracer:
        with tracer.invoke(LONG):
            embeddings = gpt2.transformer.wte.output
            source_logits = gpt2.lm_head.output.save()
        with tracer.invoke(filler):
            gpt2.transformer.wte.output = embeddings
            patched_logits = gpt2.lm_head.output.save()
    assert_close(patched_logits.value, source_logits.value, rtol=1e-5, atol=1e-5)


def test_an_edit_in_one_invoke_leaves_the_other_untouched(gpt2: Model):
    with gpt2.trace() as tracer:
        with tracer.invoke(SHORT):
            gpt2.transformer.h[1].output[:] = 0
            edited = gpt2.lm_head.output.save()
        with tracer.invoke(LONG):
            untouched = gpt2.lm_head.output.save()
    _, long_alone = alone_trace(gpt2, LONG)
    _, short_alone = alone_trace(gpt2, SHORT)
    assert_close(untouched.value, long_alone, rtol=1e-5, atol=1e-5)
    assert not torch.allclose(edited.value, short_alone)


def test_batched_generation_values_at_every_step_equal_each_prompt_alone(llama: Model):
    def values(generator_prompts, watched):
        saved = {}
        with llama.generate(max_new_tokens=2, do_sample=False) as generator:
            for prompt in generator_prompts:
                with generator.invoke(prompt) as invoker:
                    if prompt == watched:
                        saved["head0"] = llama.lm_head.output.save()
                        saved["norm_in0"] = llama.model.layers[1].input_layernorm.inputs[0][0].save()
                        invoker.next()
                        saved["layer1"] = llama.model.layers[-1].output.save()
                        saved["head1"] = llama.lm_head.output.save()
        return {key: proxy.value for key, proxy in saved.items()}

    batched = values([SHORT, LONG], SHORT)
    alone = values([SHORT], SHORT)
    assert batched["head0"].shape == (1, 1, len(llama.tokenizer))
    for key in alone:
        assert batched[key].shape == alone[key].shape, key
        assert_close(batched[key], alone[key], rtol=1e-5, atol=1e-5)


def test_attention_patterns_of_a_batched_invoke_equal_the_prompt_alone(gpt2_dir):
    model = Model(str(gpt2_dir), attn_implementation="eager")

    def pattern(prompts, watched, generate):
        block = (
            model.generate(max_new_tokens=2, do_sample=False, output_attentions=True)
            if generate
            else model.trace(output_attentions=True)
        )
        with block as tracer:
            for prompt in prompts:
                with tracer.invoke(prompt) as invoker:
                    if prompt == watched:
                        if generate:
                            invoker.next()
                        saved = model.transformer.h[0].attn.output[1].save()
        return saved.value

    n = len(model.tokenizer(SHORT)["input_ids"])
    for generate, shape in ((False, (1, 4, n, n)), (True, (1, 4, 1, n + 1))):
        batched = pattern([SHORT, LONG], SHORT, generate)
        alone = pattern([SHORT], SHORT, generate)
        assert batched.shape == alone.shape == shape
        assert_close(batched, alone, rtol=1e-5, atol=1e-5)

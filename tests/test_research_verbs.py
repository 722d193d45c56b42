"""Caches, skip, stop and the small verbs: `tracer.cache()` (by module path and by TransformerLens name) equals
per-module saves, `module.skip(value)` equals setting the output and spares the module, `tracer.stop()` gives the
full pass's values with fewer modules run, `.values`/`.indices`/`.logits`, weights in a graph, a model output with
its cache saved, and close-name suggestions that are modules."""

from __future__ import annotations

import pytest
import torch

from ndif_jupyter import Model

PROMPT = "The Eiffel Tower is in the city of"


@pytest.mark.parametrize("name", ["gpt2", "llama"])
def test_a_cache_equals_saving_each_module(name, request):
    model = request.getfixturevalue(name)
    with model.trace(PROMPT) as tracer:
        cache = tracer.cache()
    paths = list(cache)
    assert cache.left_out == ["", model.module_paths()[1]], "the model and its base hold the key-value cache"
    assert set(paths) | set(cache.left_out) <= set(model.module_paths())
    with model.trace(PROMPT):
        each = {path: model.module(path).output.save() for path in paths}
    for path in paths:
        mine, theirs = cache[path], each[path].value
        if isinstance(theirs, tuple):
            assert all((a is None and b is None) or torch.equal(a, b) for a, b in zip(mine, theirs))
        else:
            assert torch.equal(mine, theirs), path
    first_layer = "transformer.h.0" if name == "gpt2" else "model.layers.0"
    with model.trace(PROMPT) as tracer:
        some = tracer.cache(modules=[model.lm_head, first_layer])
    assert list(some) == [first_layer, "lm_head"]
    with pytest.raises(KeyError, match="not in this cache"):
        some["lm_hed"]


def test_transformer_lens_names_hold_the_values_they_stand_for_in_gpt2(gpt2: Model):
    heads = gpt2.config.n_head
    with gpt2.trace(PROMPT) as tracer:
        cache = tracer.cache(names="transformer_lens")
        layer = gpt2.transformer.h[2]
        expected = {
            "blocks.2.hook_resid_pre": layer.input.save(),
            "blocks.2.hook_resid_post": layer.output.save(),
            "blocks.2.hook_resid_mid": layer.ln_2.input.save(),
            "blocks.2.attn.hook_z": layer.attn.c_proj.input.save(),
            "blocks.2.attn.hook_v": layer.attn.c_attn.output.save(),
            "blocks.2.mlp.hook_post": layer.mlp.c_proj.input.save(),
            "blocks.2.hook_attn_out": layer.attn.output[0].save(),
            "ln_final.hook_normalized": gpt2.transformer.ln_f.output.save(),
        }
    for block in range(gpt2.config.n_layer):
        for hook in ("hook_resid_pre", "attn.hook_q", "attn.hook_z", "hook_mlp_out", "ln1.hook_normalized"):
            assert f"blocks.{block}.{hook}" in cache
    width = gpt2.config.n_embd
    values = {name: proxy.value for name, proxy in expected.items()}
    values["blocks.2.attn.hook_z"] = values["blocks.2.attn.hook_z"].reshape(1, -1, heads, width // heads)
    values["blocks.2.attn.hook_v"] = values["blocks.2.attn.hook_v"][..., 2 * width :].reshape(
        1, -1, heads, width // heads
    )
    for name, value in values.items():
        assert torch.equal(cache[name], value), name


def test_transformer_lens_names_hold_the_values_they_stand_for_in_llama(llama: Model):
    config = llama.config
    with llama.trace(PROMPT) as tracer:
        cache = tracer.cache(names="transformer_lens", modules=llama.module_paths())
        attention = llama.model.layers[1].self_attn
        keys = attention.k_proj.output.save()
        gate = llama.model.layers[1].mlp.gate_proj.output.save()
    head = config.hidden_size // config.num_attention_heads
    assert cache["blocks.1.attn.hook_k"].shape[-2:] == (config.num_key_value_heads, head)
    assert torch.equal(cache["blocks.1.attn.hook_k"], keys.value.reshape(1, -1, config.num_key_value_heads, head))
    assert torch.equal(cache["blocks.1.mlp.hook_pre"], gate.value)
    assert "blocks.3.mlp.hook_pre_linear" in cache


@pytest.mark.parametrize("name", ["gpt2", "llama"])
def test_skipping_a_layer_equals_setting_its_output_and_the_layer_does_not_run(name, request):
    model = request.getfixturevalue(name)
    layer = model.module("transformer.h.1" if name == "gpt2" else "model.layers.1")
    with model.trace(PROMPT):
        layer.skip(layer.input)
        skipped = model.lm_head.output.save()
    with model.trace(PROMPT):
        layer.output = layer.input
        written = model.lm_head.output.save()
    assert torch.equal(skipped.value, written.value)
    calls = []
    inner = model.local_model.get_submodule(layer.path + ".mlp")
    handle = inner.register_forward_hook(lambda *args: calls.append(1))
    try:
        with model.trace(PROMPT):
            layer.skip(layer.input)
        with model.trace() as tracer:
            with tracer.invoke(PROMPT):
                layer.skip(layer.input)
                first = model.lm_head.output.save()
            with tracer.invoke("Hello"):
                second = model.lm_head.output.save()
    finally:
        handle.remove()
    assert len(calls) == 1, "the skipped layer ran alone; with two invokes it runs and its output is replaced"
    with model.trace("Hello"):
        alone = model.lm_head.output.save()
    torch.testing.assert_close(first.value, skipped.value, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(second.value, alone.value, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("name", ["gpt2", "llama"])
def test_stop_gives_the_full_passs_values_and_runs_fewer_modules(name, request):
    model = request.getfixturevalue(name)
    layer = "transformer.h.1" if name == "gpt2" else "model.layers.1"
    with model.trace(PROMPT):
        full = model.module(layer).output.save()
    calls = []
    handle = model.local_model.lm_head.register_forward_hook(lambda *args: calls.append(1))
    try:
        with model.trace(PROMPT) as tracer:
            early = model.module(layer).output.save()
            tracer.stop()
    finally:
        handle.remove()
    assert torch.equal(early.value, full.value)
    assert calls == [], "the modules after the last one the block reads ran"


def test_fields_of_structured_values_weights_and_outputs_with_a_cache(gpt2: Model):
    with gpt2.trace(PROMPT):
        top = gpt2.lm_head.output[0, -1].topk(3)
        values, indices = top.values.save(), top.indices.save()
        logits = gpt2.output.logits.save()
        best = gpt2.lm_head.output[0].max(-1).indices.save()
        weight = gpt2.lm_head.weight.save()
        projected = (gpt2.transformer.ln_f.output @ gpt2.lm_head.weight.T).save()
        with pytest.warns(UserWarning, match="DynamicCache"):
            whole = gpt2.output.save()
    expected = logits.value[0, -1].topk(3)
    assert torch.equal(values.value, expected.values) and torch.equal(indices.value, expected.indices)
    assert torch.equal(best.value, logits.value[0].argmax(-1))
    assert torch.equal(weight.value, gpt2.local_model.lm_head.weight)
    torch.testing.assert_close(projected.value, logits.value, rtol=1e-5, atol=1e-5)
    assert torch.equal(whole.value["logits"], logits.value)
    assert [key for key, item in whole.value.items() if item is None] in (["cache"], ["past_key_values"])


def test_close_names_are_modules_and_block_verbs_never_module_methods(gpt2: Model):
    with pytest.raises(AttributeError) as raised:
        gpt2.transformer.h[0].dobule
    assert "`double`" not in str(raised.value)
    with pytest.raises(AttributeError, match="Did you mean `mlp`"):
        gpt2.transformer.h[0].mpl
    with pytest.raises(AttributeError) as raised:
        gpt2.transformer.h[0].compiled
    assert "`compile`" not in str(raised.value)
    assert "transformer.h.0.mlp.c_fc" in gpt2.module_paths()


def test_generate_takes_a_seed_before_anything_runs(gpt2: Model):
    with gpt2.generate(max_new_tokens=4, do_sample=True, seed=5) as first:
        with first.invoke(PROMPT):
            pass
    with gpt2.generate(max_new_tokens=4, do_sample=True, seed=5) as second:
        with second.invoke(PROMPT):
            pass
    assert torch.equal(first.output, second.output)


def test_a_cache_names_what_it_cannot_cache(gpt2: Model):
    from ndif_jupyter.errors import TraceError

    with pytest.raises(TraceError, match=r"'transformer\.h\.9', which is not a module"):
        with gpt2.trace(PROMPT) as tracer:
            tracer.cache(modules=["transformer.h.9"])


def test_the_insides_of_a_skipped_module_are_refused_while_recording(gpt2: Model):
    from ndif_jupyter.errors import TraceError

    layer = gpt2.transformer.h[1]
    with pytest.raises(TraceError, match=r"model\.transformer\.h\[1\]\.mlp` does not run at this step"):
        with gpt2.trace(PROMPT):
            layer.skip(layer.input)
            layer.mlp.output.save()
    with pytest.raises(TraceError, match=r"already uses model\.transformer\.h\[1\]\.attn"):
        with gpt2.trace(PROMPT):
            layer.attn.output[0].save()
            layer.skip(layer.input)
    with gpt2.trace() as tracer:
        with tracer.invoke(PROMPT):
            layer.skip(layer.input)
            kept = layer.output.save()
        with tracer.invoke("Hello"):
            inner = layer.mlp.output.save()
    assert kept.value.shape[1] == len(gpt2.tokenizer(PROMPT)["input_ids"]) and inner.value.shape[0] == 1

"""Inner operations (`module.ops`): the functions a module's forward calls by name, listed from its source, read and
set equal to a plain patch of the same function in a separately loaded model; attention weights under sdpa from the
attention interface's inputs; what an unknown name and a saved `None` say."""

from __future__ import annotations

import contextlib
import warnings

import pytest
import torch
from transformers.models.llama import modeling_llama

from ndif_jupyter import Model
from ndif_jupyter.errors import TraceError
from ndif_jupyter.loading.inner_ops import inner_operations, instrument
from ndif_testing import reference

PROMPT = "The Eiffel Tower is in the city of"


@contextlib.contextmanager
def patched_rotary(change=None):
    """`apply_rotary_pos_emb` of the Llama code replaced by one that keeps each call's result (and may change it),
    the ground truth for the engine's inner operations."""
    calls: list[tuple[torch.Tensor, torch.Tensor]] = []
    original = modeling_llama.apply_rotary_pos_emb

    def keep(*args, **kwargs):
        query, key = original(*args, **kwargs)
        if change is not None:
            query, key = change(len(calls), query, key)
        calls.append((query.detach().clone(), key.detach().clone()))
        return query, key

    modeling_llama.apply_rotary_pos_emb = keep
    try:
        yield calls
    finally:
        modeling_llama.apply_rotary_pos_emb = original


def _double(x):
    return x * 2


class _Base(torch.nn.Module):
    def forward(self, x):
        return x + 1


class _Child(_Base):
    def __init__(self):
        super().__init__()
        self.blocks = torch.nn.ModuleList([torch.nn.Identity(), torch.nn.Identity()])

    def forward(self, x):
        y = _double(x)
        for block in self.blocks:
            y = block(y)
        return super().forward(_double(y))


def test_an_instrumented_forward_keeps_super_and_leaves_loops_alone():
    module = _Child()
    assert [operation.name for operation in inner_operations(module)] == ["_double", "_double_1"]
    seen = []

    def dispatch(name, callee, *args, **kwargs):
        seen.append(name)
        return callee(*args, **kwargs) + 1 if name == "_double_1" else callee(*args, **kwargs)

    undo = instrument(module, dispatch)
    assert torch.equal(module(torch.ones(2)), torch.full((2,), 6.0)), "(1 * 2) * 2 + 1 from the dispatch, + 1"
    undo()
    assert seen == ["_double", "_double_1"] and "forward" not in module.__dict__
    assert torch.equal(module(torch.ones(2)), torch.full((2,), 5.0))


def test_a_modules_operations_are_listed_from_its_forward(llama: Model, gpt2: Model):
    attention = llama.model.layers[1].self_attn
    assert [operation.path for operation in attention.ops] == [
        "model.layers.1.self_attn.ops.apply_rotary_pos_emb",
        "model.layers.1.self_attn.ops.attention_interface",
    ]
    listing = repr(attention.ops)
    assert listing.startswith("model.model.layers[1].self_attn.ops (LlamaAttention.forward):")
    assert "apply_rotary_pos_emb(query_states, key_states, cos, sin)" in listing
    assert dir(gpt2.transformer.h[0].attn.ops) == ["attention_interface"]
    assert "create_causal_mask" in dir(llama.model.ops)
    assert len(llama.model.layers[0].mlp.ops) == 0
    assert "no inner operations" in repr(llama.model.layers[0].mlp.ops)
    with pytest.raises(AttributeError, match="Did you mean `apply_rotary_pos_emb`"):
        attention.ops.apply_rotary
    assert "decoder_layer" not in dir(llama.model.ops), "a loop over the layers calls modules, not operations"


def test_rotary_queries_and_keys_equal_the_function_the_model_calls(llama: Model, llama_dir):
    layers = llama.model.layers
    with llama.generate(max_new_tokens=3, do_sample=False) as generator:
        with generator.invoke(PROMPT):
            saved = []
            for _ in generator.steps:
                query, key = layers[1].self_attn.ops.apply_rotary_pos_emb.output
                saved.append((query.save(), key.save()))
            first_input = layers[1].self_attn.ops.apply_rotary_pos_emb.input.save()
    ref = reference.load(llama_dir)
    ids = llama.tokenizer(PROMPT)["input_ids"]
    with patched_rotary() as calls:
        expected = reference.greedy(ref, ids, 3, llama.loaded.pad_token_id)
    assert torch.equal(generator.output, expected)
    per_pass = llama.config.num_hidden_layers
    for step, (query, key) in enumerate(saved):
        assert torch.equal(query.value, calls[step * per_pass + 1][0])
        assert torch.equal(key.value, calls[step * per_pass + 1][1])
    assert first_input.value.shape == (1, llama.config.num_attention_heads, 1, llama.config.head_dim)


def test_setting_an_operations_output_equals_patching_the_function(llama: Model, llama_dir):
    with llama.trace(PROMPT):
        query, _ = llama.model.layers[2].self_attn.ops.apply_rotary_pos_emb.output
        query[:, :, -1] = 0
        logits = llama.lm_head.output.save()
    with llama.trace(PROMPT):
        untouched = llama.lm_head.output.save()

    def silence(index, query, key):
        if index == 2:
            query = query.clone()
            query[:, :, -1] = 0
        return query, key

    ref = reference.load(llama_dir)
    with patched_rotary(silence):
        expected = reference.forward_logits(ref, llama.tokenizer(PROMPT)["input_ids"])
    torch.testing.assert_close(logits.value, expected, rtol=1e-5, atol=1e-6)
    assert not torch.equal(logits.value, untouched.value)


def test_attention_weights_under_sdpa_come_from_the_interfaces_inputs(llama_dir):
    sdpa = Model(str(llama_dir))
    eager = Model(str(llama_dir), attn_implementation="eager")
    config = sdpa.config
    groups = config.num_attention_heads // config.num_key_value_heads
    attention = sdpa.model.layers[1].self_attn
    with sdpa.trace(PROMPT):
        args, _ = attention.ops.attention_interface.inputs
        query, key = args[1], args[2].repeat_interleave(groups, dim=1)
        scores = query @ key.transpose(-1, -2) * attention.scaling
        length = scores.shape[-1]
        causal = torch.ones(length, length, dtype=torch.bool).tril()
        weights = scores.masked_fill(~causal, float("-inf")).softmax(-1).save()
        with pytest.warns(UserWarning, match="sdpa"):
            none = attention.output[1].save()
    with eager.trace(PROMPT):
        expected = eager.model.layers[1].self_attn.output[1].save()
    assert none.value is None
    torch.testing.assert_close(weights.value, expected.value, rtol=1e-5, atol=1e-6)


def test_the_causal_mask_and_the_gpt2_attention_interface(gpt2: Model):
    attention = gpt2.transformer.h[0].attn
    with gpt2.trace(PROMPT):
        args, _ = attention.ops.attention_interface.inputs
        query = args[1].save()
        output = attention.ops.attention_interface.output[0].save()
        projected = attention.c_attn.output.save()
    width = gpt2.config.n_embd
    heads = gpt2.config.n_head
    expected_query = projected.value[..., :width].reshape(1, -1, heads, width // heads).transpose(1, 2)
    assert torch.equal(query.value, expected_query)
    assert output.value.shape == (1, projected.value.shape[1], heads, width // heads)


def test_operations_say_what_is_wrong(llama: Model):
    with pytest.raises(TraceError, match=r"`model.model.layers\[0\].self_attn.ops.apply_rotary_pos_emb.output` cannot"):
        with llama.trace(PROMPT):
            llama.model.layers[0].self_attn.ops.apply_rotary_pos_emb.output = torch.zeros(3)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with llama.trace(PROMPT):
            llama.model.layers[0].self_attn.ops.apply_rotary_pos_emb.output[0].save()

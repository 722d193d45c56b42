"""The shape oracle: shapes from fake-tensor passes, cached, and fitted for new prompt lengths without a pass."""

from __future__ import annotations

import torch

from ndif_jupyter import Model
from ndif_jupyter.ir.nested import leaves
from ndif_jupyter.loading.shapes import ShapeOracle, _Chain

LENGTHS = (3, 5, 8)


def shapes_of(record) -> dict[str, list]:
    return {
        path: [
            leaf.shape if isinstance(leaf, torch.Tensor) else type(leaf)
            for leaf in leaves((r.args, r.kwargs, r.output))
        ]
        for path, r in record.modules.items()
    }


def real_pass(oracle: ShapeOracle, rows: int, length: int, step: int, options: dict):
    chain = _Chain()
    for _ in range(step + 1):
        oracle._advance(chain, rows, length, options)
    return chain.records[step]


def test_the_same_shapes_cost_one_pass(llama: Model):
    oracle = llama.tracing.shapes
    first = oracle.step(1, 6, 0, {})
    passes = oracle.forward_passes
    assert oracle.step(1, 6, 0, {}) is first
    assert oracle.forward_passes == passes


def test_a_new_length_is_fitted_from_three_and_equals_a_real_pass(llama: Model, gpt2: Model):
    for model in (llama, gpt2):
        oracle = model.tracing.shapes
        for step, options in ((0, {}), (1, {"logits_to_keep": 1})):
            for length in LENGTHS:
                oracle.step(2, length, step, options)
            passes = oracle.forward_passes
            fitted = oracle.step(2, 13, step, options)
            assert oracle.forward_passes == passes, "a fourth length must not need a forward pass"
            assert shapes_of(fitted) == shapes_of(real_pass(oracle, 2, 13, step, options))


def test_traces_with_fitted_shapes_give_the_same_values(gpt2: Model):
    prompts = ["Hello", "Hello world", "The Eiffel Tower", "The Eiffel Tower is in the city of"]
    for prompt in prompts[:3]:
        with gpt2.trace(prompt):
            gpt2.lm_head.output.save()
    passes = gpt2.tracing.shapes.forward_passes
    with gpt2.trace() as tracer:
        with tracer.invoke(prompts[3]):
            h = gpt2.transformer.h[2].output.save()
            assert h.shape[1] == len(gpt2.tokenizer(prompts[3])["input_ids"])
        with tracer.invoke(prompts[0]):
            short = gpt2.lm_head.output.save()
    assert gpt2.tracing.shapes.forward_passes == passes
    with gpt2.trace(prompts[0]):
        alone = gpt2.lm_head.output.save()
    torch.testing.assert_close(short.value, alone.value, rtol=1e-5, atol=1e-5)

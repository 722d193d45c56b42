"""The shape oracle: shapes from fake-tensor passes of a one-layer twin, cached, and fitted for new prompt lengths and
later generation steps without a pass; each equal to passes of the whole model."""

from __future__ import annotations

import pytest
import torch

from ndif_jupyter import Model
from ndif_jupyter.ir.nested import leaves
from ndif_jupyter.loading.layer_stack import LayerStack, expand, one_layer_twin
from ndif_jupyter.loading.records import ModuleRecord, StepRecord

LENGTHS = (3, 5, 8)


def shapes_of(record) -> dict[str, tuple]:
    """Every module's leaves (shape and dtype of tensors, the type of others) and its two events, in call order."""
    return {
        path: (
            [
                (leaf.shape, leaf.dtype) if isinstance(leaf, torch.Tensor) else type(leaf)
                for leaf in leaves((r.args, r.kwargs, r.output))
            ],
            r.pre_event,
            r.post_event,
        )
        for path, r in record.modules.items()
    }


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
            assert shapes_of(fitted) == shapes_of(oracle.full_passes(2, 13, step + 1, options)[step])


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


def test_the_one_layer_twin_and_fitted_steps_equal_passes_of_the_whole_model(llama: Model, gpt2: Model):
    for model in (llama, gpt2):
        oracle = model.tracing.shapes
        assert oracle.uses_twin
        for options in ({}, {"logits_to_keep": 1}):
            passes = oracle.forward_passes
            records = [oracle.step(2, 5, step, options) for step in range(9)]
            assert oracle.forward_passes == passes + 3, "steps after the second are fitted, not passed"
            for step, whole in enumerate(oracle.full_passes(2, 5, 9, options)):
                assert shapes_of(records[step]) == shapes_of(whole)
                assert list(records[step].modules) == list(whole.modules), "the call order differs"


@pytest.mark.default_model
def test_the_default_models_thirty_steps_cost_three_passes_of_one_layer():
    model = Model()
    oracle = model.tracing.shapes
    assert oracle.uses_twin
    records = [oracle.step(1, 9, step, {"logits_to_keep": 1}) for step in range(30)]
    assert oracle.forward_passes == 3
    assert len([path for path in records[29].modules if path.count(".") == 2 and ".layers." in path]) == 30
    for step, whole in enumerate(oracle.full_passes(1, 9, 6, {"logits_to_keep": 1})):
        assert shapes_of(records[step]) == shapes_of(whole)


def test_no_twin_where_a_layer_could_differ(llama: Model):
    config = llama.config
    config.per_layer_setting = [1, 2, 1, 1]
    assert one_layer_twin(llama.loaded.meta_model, config, lambda c: None) is None
    del config.per_layer_setting


def test_a_layer_whose_events_interleave_with_other_modules_is_not_expanded():
    stack = LayerStack("layers", 3)
    record = StepRecord(
        {
            "": ModuleRecord(0, 7),
            "layers.0": ModuleRecord(1, 4),
            "shared": ModuleRecord(2, 3),  # a module outside the layer, called inside it
            "norm": ModuleRecord(5, 6),
        }
    )
    assert expand(record, stack) is None
    record.modules["shared"] = ModuleRecord(5, 6)
    record.modules["layers.0.inner"] = ModuleRecord(2, 3)
    del record.modules["norm"]
    expanded = expand(record, stack)
    assert expanded is not None
    assert {path: (r.pre_event, r.post_event) for path, r in expanded.modules.items()} == {
        "": (0, 15),
        "layers.0": (1, 4),
        "layers.0.inner": (2, 3),
        "layers.1": (5, 8),
        "layers.1.inner": (6, 7),
        "layers.2": (9, 12),
        "layers.2.inner": (10, 11),
        "shared": (13, 14),
    }

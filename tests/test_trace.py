"""One forward pass: saved values equal what plain hooks see, and edits change the logits exactly as hook edits do."""

from __future__ import annotations

import copy

import torch
from torch.testing import assert_close

from ndif_jupyter import Model
from ndif_testing import reference

PROMPT = "The Eiffel Tower is in the city of"


def ids_of(model: Model, prompt: str = PROMPT) -> list[int]:
    return model.tokenizer(prompt)["input_ids"]


def test_saved_layer_outputs_equal_plain_hooks(gpt2: Model, gpt2_dir):
    with gpt2.trace(PROMPT):
        saved = [layer.output.save() for layer in gpt2.transformer.h]
        logits = gpt2.lm_head.output.save()
    ref = reference.load(gpt2_dir)
    paths = [f"transformer.h.{i}" for i in range(4)]
    with reference.capture(ref, paths) as seen:
        expected_logits = reference.forward_logits(ref, ids_of(gpt2))
    for proxy, path in zip(saved, paths):
        assert_close(proxy.value, seen[path][0], rtol=0, atol=0)
    assert_close(logits.value, expected_logits, rtol=0, atol=0)


def test_item_assignment_changes_logits_as_a_hook_edit_does(gpt2: Model, gpt2_dir):
    with gpt2.trace(PROMPT):
        gpt2.transformer.h[1].output[:, -1] = 0
        logits = gpt2.lm_head.output.save()

    def zero_last(path, output):
        output = output.clone()
        output[:, -1] = 0
        return output

    ref = reference.load(gpt2_dir)
    with reference.capture(ref, ["transformer.h.1"], edit=zero_last):
        expected = reference.forward_logits(ref, ids_of(gpt2))
    assert_close(logits.value, expected, rtol=0, atol=0)
    assert not torch.equal(expected, reference.forward_logits(ref, ids_of(gpt2)))


def test_setting_an_output_replaces_it(llama: Model, llama_dir):
    with llama.trace(PROMPT):
        mlp = llama.model.layers[2].mlp
        mlp.output = mlp.output * 2 + 1
        doubled = llama.model.layers[2].mlp.output.save()
        logits = llama.lm_head.output.save()
    ref = reference.load(llama_dir)
    with reference.capture(ref, ["model.layers.2.mlp"], edit=lambda path, out: out * 2 + 1) as seen:
        expected = reference.forward_logits(ref, ids_of(llama))
    assert_close(doubled.value, seen["model.layers.2.mlp"][0])
    assert_close(logits.value, expected, rtol=0, atol=0)


def test_logit_lens_calls_modules_on_traced_values(gpt2: Model, gpt2_dir):
    with gpt2.trace(PROMPT):
        hidden = gpt2.transformer.h[1].output
        lens = gpt2.lm_head(gpt2.transformer.ln_f(hidden)).save()
        probs = torch.softmax(lens[:, -1], dim=-1).save()
    ref = reference.load(gpt2_dir)
    with reference.capture(ref, ["transformer.h.1"]) as seen:
        reference.forward_logits(ref, ids_of(gpt2))
    with torch.no_grad():
        expected = ref.lm_head(ref.transformer.ln_f(seen["transformer.h.1"][0]))
    assert_close(lens.value, expected)
    assert_close(probs.value, torch.softmax(expected[:, -1], dim=-1))


def test_inputs_are_what_the_module_receives(llama: Model, llama_dir):
    with llama.trace(PROMPT):
        first = llama.model.layers[1].mlp.input.save()
        args, _kwargs = llama.model.layers[1].mlp.inputs
        same = args[0].save()
        normed = llama.model.layers[1].post_attention_layernorm.output.save()
    assert_close(first.value, normed.value, rtol=0, atol=0)
    assert_close(same.value, normed.value, rtol=0, atol=0)


def test_setting_an_input_changes_what_the_module_computes(gpt2: Model, gpt2_dir):
    with gpt2.trace(PROMPT):
        gpt2.transformer.ln_f.input = torch.zeros(64)
        out = gpt2.transformer.ln_f.output.save()
    bias = reference.load(gpt2_dir).transformer.ln_f.bias.detach()
    assert_close(out.value, bias.expand_as(out.value))


def test_operators_methods_and_torch_functions(gpt2: Model, gpt2_dir):
    with gpt2.trace(PROMPT):
        h = gpt2.transformer.h[0].output
        results = {
            "arith": ((h + 1) * 2 - h / 3).save(),
            "reversed": (1 - h).save(),
            "compare": (h > 0).save(),
            "norm": h.norm(dim=-1).save(),
            "mean": torch.mean(h, dim=1).save(),
            "cat": torch.cat([h, h], dim=1).save(),
            "topk": torch.topk(h[0, -1], 3)[1].save(),
            "transpose": h.transpose(1, 2).save(),
            "index": h[:, 2:5, ::2].save(),
        }
        plain = h.save()
    hv = plain.value
    assert_close(results["arith"].value, (hv + 1) * 2 - hv / 3)
    assert_close(results["reversed"].value, 1 - hv)
    assert torch.equal(results["compare"].value, hv > 0)
    assert_close(results["norm"].value, hv.norm(dim=-1))
    assert_close(results["mean"].value, hv.mean(dim=1))
    assert_close(results["cat"].value, torch.cat([hv, hv], dim=1))
    assert torch.equal(results["topk"].value, torch.topk(hv[0, -1], 3)[1])
    assert_close(results["transpose"].value, hv.transpose(1, 2))
    assert_close(results["index"].value, hv[:, 2:5, ::2])


def test_shapes_and_dtypes_are_known_while_tracing_without_weights(gpt2: Model):
    n = len(ids_of(gpt2))
    with gpt2.trace(PROMPT):
        h = gpt2.transformer.h[-1].output
        assert h.shape == torch.Size([1, n, 64])
        assert h.dtype == torch.float32
        assert gpt2.lm_head.output.shape == torch.Size([1, n, len(gpt2.tokenizer)])
        assert h[:, -1].shape == torch.Size([1, 64])
        assert gpt2.local_model is None
        h.save()
    assert gpt2.local_model is not None


def test_explicit_invokes_in_a_trace(gpt2: Model):
    with gpt2.trace() as tracer:
        with tracer.invoke(PROMPT):
            a = gpt2.lm_head.output.save()
    with gpt2.trace(PROMPT):
        b = gpt2.lm_head.output.save()
    assert_close(a.value, b.value, rtol=0, atol=0)


def test_saved_values_are_cpu_copies_detached_from_the_model(gpt2: Model):
    with gpt2.trace(PROMPT):
        h = gpt2.transformer.h[0].output.save()
        h[:, 0] = 5.0
    assert h.value.device.type == "cpu"
    assert not h.value.requires_grad
    assert torch.all(h.value[:, 0] == 5.0)


def test_the_graph_is_plain_data(gpt2: Model):
    from ndif_jupyter.ir.graph import CONSTANT_TYPES, Ref

    with gpt2.trace(PROMPT) as tracer:
        h = gpt2.transformer.h[0].output
        gpt2.transformer.h[1].output = h * torch.ones(64)
        gpt2.lm_head(h).save()
    graph = tracer.graph()

    def check(value):
        if isinstance(value, (tuple, list)):
            for item in value:
                check(item)
        elif isinstance(value, dict):
            assert all(isinstance(k, str) for k in value)
            for item in value.values():
                check(item)
        else:
            assert isinstance(value, (Ref, *CONSTANT_TYPES)), type(value)

    ops = [node.op for node in graph.nodes]
    assert ops == ["module.output", "mul", "module.set_output", "module.call"]
    for node in graph.nodes:
        check(node.args)
        check(node.kwargs)
        assert node.source is not None and node.source.filename == __file__
    assert graph.invokes[0].rows == [ids_of(gpt2)]


def test_a_submodule_replaced_between_runs_is_hooked_in_its_new_place(gpt2):
    """Nothing about the model's modules is cached across runs: the next run reads the module that is there now."""
    with gpt2.trace("Hello", device_map="cpu"):
        before = gpt2.transformer.h[0].mlp.output.save()
    loaded = gpt2.local_model
    replacement = copy.deepcopy(loaded.transformer.h[0].mlp)
    loaded.transformer.h[0].mlp = replacement
    with gpt2.trace("Hello", device_map="cpu"):
        after = gpt2.transformer.h[0].mlp.output.save()
    assert torch.equal(before.value, after.value)
    assert loaded.transformer.h[0].mlp is replacement

"""Gradients: `with loss.backward():` and `.grad` read and assigned equal plain PyTorch autograd on the same loss;
attribution patching in one block; a probe trained by a loop of blocks equals the same loop in plain PyTorch."""

from __future__ import annotations

import pytest
import torch

from ndif_jupyter import Model
from ndif_jupyter.errors import ExecutionError, TraceError
from ndif_testing import reference

PROMPT = "The Eiffel Tower is in the city of"
TARGET = 11


def layer_paths(model: Model) -> tuple[list[str], str, str]:
    """The layers' paths, the first layer's attention path, and the final norm's path."""
    if hasattr(model.config, "n_layer"):
        return [f"transformer.h.{i}" for i in range(model.config.n_layer)], "transformer.h.0.attn", "transformer.ln_f"
    layers = [f"model.layers.{i}" for i in range(model.config.num_hidden_layers)]
    return layers, "model.layers.0.self_attn", "model.norm"


class Leaves:
    """Plain hooks: module outputs (and a tuple's first part) made autograd leaves where they need no gradient yet,
    kept by path, with an optional hook on each gradient."""

    def __init__(self, model: torch.nn.Module, paths: list[str], on_grad=None):
        self.values: dict[str, torch.Tensor] = {}
        self.handles = []
        for path in paths:
            self.handles.append(model.get_submodule(path).register_forward_hook(self._hook(path, on_grad)))

    def _hook(self, path, on_grad):
        def hook(module, args, output):
            tensor = output[0] if isinstance(output, tuple) else output
            if not tensor.requires_grad:
                tensor = tensor.detach().requires_grad_(True)
            if on_grad is not None:
                tensor.register_hook(lambda grad: on_grad(path, grad))
            self.values[path] = tensor
            return (tensor, *output[1:]) if isinstance(output, tuple) else tensor

        return hook

    def remove(self):
        for handle in self.handles:
            handle.remove()


def plain_model(folder) -> torch.nn.Module:
    model = reference.load(folder)
    model.requires_grad_(False)
    return model


@pytest.mark.parametrize("name", ["gpt2", "llama"])
def test_gradients_equal_plain_autograd(name, request):
    model = request.getfixturevalue(name)
    layers, attention, _ = layer_paths(model)
    with model.trace(PROMPT) as tracer:
        first = model.module(layers[0]).output
        attn = model.module(attention).output[0]
        last = model.module(layers[-1]).output
        loss = model.lm_head.output[0, -1].log_softmax(-1)[TARGET]
        with loss.backward():
            grads = [first.grad.save(), attn.grad.save(), last.grad.save()]
        saved_loss = loss.save()
    ref = plain_model(request.getfixturevalue(f"{name}_dir"))
    hooks = Leaves(ref, [layers[0], attention, layers[-1]])
    ids = model.tokenizer(PROMPT, return_tensors="pt")
    logits = ref(**ids).logits
    hooks.remove()
    plain_loss = logits[0, -1].log_softmax(-1)[TARGET]
    expected = torch.autograd.grad(plain_loss, [hooks.values[p] for p in (layers[0], attention, layers[-1])])
    assert torch.equal(saved_loss.value, plain_loss.detach())
    for mine, theirs in zip(grads, expected):
        assert mine.value.shape == theirs.shape
        torch.testing.assert_close(mine.value, theirs, rtol=1e-6, atol=1e-7)
    assert tracer.result is not None and all(p.grad is None for p in model.local_model.parameters())


@pytest.mark.parametrize("name", ["gpt2", "llama"])
def test_an_assigned_gradient_flows_back_as_a_tensor_hook_does(name, request):
    model = request.getfixturevalue(name)
    layers, _, _ = layer_paths(model)
    with model.trace(PROMPT):
        early = model.module(layers[0]).output
        late = model.module(layers[2]).output
        loss = model.lm_head.output[0, -1].log_softmax(-1)[TARGET]
        with loss.backward():
            late.grad = late.grad * 2 + 0.5
            edited = early.grad.save()
    ref = plain_model(request.getfixturevalue(f"{name}_dir"))

    def edit(path, grad):
        return grad * 2 + 0.5 if path == layers[2] else None

    hooks = Leaves(ref, [layers[0], layers[2]], on_grad=edit)
    logits = ref(**model.tokenizer(PROMPT, return_tensors="pt")).logits
    hooks.remove()
    (expected,) = torch.autograd.grad(logits[0, -1].log_softmax(-1)[TARGET], [hooks.values[layers[0]]])
    torch.testing.assert_close(edited.value, expected, rtol=1e-6, atol=1e-7)
    with model.trace(PROMPT):
        early = model.module(layers[0]).output
        loss = model.lm_head.output[0, -1].log_softmax(-1)[TARGET]
        with loss.backward():
            plain = early.grad.save()
    assert not torch.allclose(plain.value, edited.value), "the assigned gradient changed nothing"


def test_attribution_patching_in_one_block_equals_plain_pytorch(gpt2: Model, gpt2_dir):
    clean, corrupt = "The Eiffel Tower is in Paris", "The Colosseum Tower is in Rome"
    assert len(gpt2.tokenizer(clean)["input_ids"]) == len(gpt2.tokenizer(corrupt)["input_ids"])
    right, wrong = 11, 23
    layers, _, _ = layer_paths(gpt2)
    with gpt2.trace() as tracer:
        with tracer.invoke(clean):
            clean_acts = [gpt2.module(path).output[:, -1] for path in layers]
        with tracer.invoke(corrupt):
            corrupt_outs = [gpt2.module(path).output for path in layers]
            logits = gpt2.lm_head.output[0, -1]
            metric = logits[right] - logits[wrong]
        with metric.backward():
            scores = [
                ((clean_acts[i] - out[:, -1]) * out.grad[:, -1]).sum().save() for i, out in enumerate(corrupt_outs)
            ]
    ref = plain_model(gpt2_dir)
    with torch.no_grad():
        hooks = Leaves(ref, layers)
        ref(**gpt2.tokenizer(clean, return_tensors="pt"))
        hooks.remove()
    clean_values = [hooks.values[path][:, -1] for path in layers]
    hooks = Leaves(ref, layers)
    out = ref(**gpt2.tokenizer(corrupt, return_tensors="pt")).logits[0, -1]
    hooks.remove()
    corrupt_values = [hooks.values[path] for path in layers]
    for value in corrupt_values:
        value.retain_grad()
    (out[right] - out[wrong]).backward()
    expected = [((c - v[:, -1]) * v.grad[:, -1]).sum() for c, v in zip(clean_values, corrupt_values)]
    for mine, theirs in zip(scores, expected):
        torch.testing.assert_close(mine.value, theirs.detach(), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("name", ["gpt2", "llama"])
def test_a_probe_trained_by_a_loop_of_blocks_equals_a_plain_pytorch_loop(name, request):
    model = request.getfixturevalue(name)
    layers, _, _ = layer_paths(model)
    prompts = ["The Eiffel Tower is in Paris", "The Colosseum Tower is in Rome"]
    assert len({len(model.tokenizer(p)["input_ids"]) for p in prompts}) == 1
    labels = torch.tensor([0, 1])
    width = model.config.hidden_size

    def train(step_loss) -> tuple[list[float], torch.Tensor]:
        torch.manual_seed(0)
        probe = (torch.randn(width, 2) * 0.1).requires_grad_(True)
        optimizer = torch.optim.SGD([probe], lr=0.5)
        losses = []
        for _ in range(3):
            optimizer.zero_grad()
            losses.append(step_loss(probe))
            optimizer.step()
        return losses, probe.detach()

    def ours(probe):
        with model.trace(prompts) as tracer:
            weights = tracer.trainable(probe)
            hidden = model.module(layers[1]).output[:, -1]
            loss = torch.nn.functional.cross_entropy(hidden @ weights, labels)
            loss.backward()
            saved = loss.save()
        return saved.value.item()

    ref = plain_model(request.getfixturevalue(f"{name}_dir"))
    batch = model.tokenizer(prompts, return_tensors="pt")

    def plain(probe):
        hooks = Leaves(ref, [layers[1]])
        ref(**batch)
        hooks.remove()
        loss = torch.nn.functional.cross_entropy(hooks.values[layers[1]][:, -1] @ probe, labels)
        loss.backward()
        return loss.item()

    our_losses, our_probe = train(ours)
    plain_losses, plain_probe = train(plain)
    assert our_losses == pytest.approx(plain_losses, rel=1e-6)
    assert our_losses[2] < our_losses[0], "the probe did not learn"
    torch.testing.assert_close(our_probe, plain_probe, rtol=1e-5, atol=1e-6)


def test_gradient_mistakes_are_named_at_the_users_line(gpt2: Model):
    with pytest.raises(TraceError, match="has none before this line"):
        with gpt2.trace(PROMPT):
            gpt2.transformer.h[0].output.grad
    with pytest.raises(TraceError, match="not for values computed from them"):
        with gpt2.trace(PROMPT):
            doubled = gpt2.transformer.h[0].output * 2
            loss = gpt2.lm_head.output.sum()
            with loss.backward():
                doubled.grad
    with pytest.raises(TraceError, match="needs `gradient=`"):
        with gpt2.trace(PROMPT):
            gpt2.lm_head.output.backward()
    with pytest.raises(TraceError, match="generation runs without gradients"):
        with gpt2.generate(max_new_tokens=2) as generator:
            with generator.invoke(PROMPT):
                gpt2.lm_head.output.sum().backward()
    with pytest.raises(ExecutionError, match="does not depend on any value whose gradient"):
        with gpt2.trace(PROMPT):
            loss = gpt2.lm_head.output.sum()
            loss.backward()
    with pytest.raises(ExecutionError, match=r"brought no gradient to model\.transformer\.h\.2\.output"):
        with gpt2.trace(PROMPT):
            early = gpt2.transformer.h[0].output
            late = gpt2.transformer.h[2].output
            loss = early.sum()
            with loss.backward():
                early.grad.save()
                late.grad.save()


def test_a_module_value_steered_in_place_still_gets_its_gradient(gpt2: Model, gpt2_dir):
    vector = torch.linspace(-1, 1, gpt2.config.n_embd)
    with gpt2.trace(PROMPT):
        hidden = gpt2.transformer.h[1].output
        hidden[:, -1] += vector
        loss = gpt2.lm_head.output[0, -1].log_softmax(-1)[TARGET]
        with loss.backward():
            grad = hidden.grad.save()
    ref = plain_model(gpt2_dir)
    kept = {}

    def steer(module, args, output):
        output = output.detach().requires_grad_(True)
        kept["leaf"] = output
        steered = output.clone()
        steered[:, -1] += vector
        return steered

    handle = ref.transformer.h[1].register_forward_hook(steer)
    logits = ref(**gpt2.tokenizer(PROMPT, return_tensors="pt")).logits
    handle.remove()
    (expected,) = torch.autograd.grad(logits[0, -1].log_softmax(-1)[TARGET], [kept["leaf"]])
    torch.testing.assert_close(grad.value, expected, rtol=1e-6, atol=1e-7)


class _Recorded(Exception):
    """Leaves a block once its graph is taken."""


def recorded(model: Model, body) -> object:
    try:
        with model.trace(PROMPT) as tracer:
            body()
            graph = tracer.graph()
            raise _Recorded
    except _Recorded:
        return graph


def test_the_cost_of_a_gradient_run_counts_what_autograd_keeps(gpt2: Model):
    from ndif_jupyter.errors import ProtocolError
    from ndif_jupyter.protocol.cost import estimate_cost
    from ndif_jupyter.protocol.limits import Limits

    def reads(layer: int, backward: bool):
        def body():
            hidden = gpt2.transformer.h[layer].output
            loss = gpt2.lm_head.output.sum()
            if backward:
                with loss.backward():
                    hidden.grad.save()
            else:
                hidden.save()

        return recorded(gpt2, body)

    plain = estimate_cost(reads(0, False), gpt2.loaded, Limits()).peak_bytes
    from_first = estimate_cost(reads(0, True), gpt2.loaded, Limits()).peak_bytes
    from_last = estimate_cost(reads(3, True), gpt2.loaded, Limits()).peak_bytes
    assert from_first > from_last > plain, "autograd keeps more the earlier the first gradient is taken"
    with pytest.raises(ProtocolError, match="the backward pass would keep"):
        estimate_cost(reads(0, True), gpt2.loaded, Limits(max_memory_bytes=(plain + from_first) // 2))


@pytest.mark.parametrize("name", ["gpt2", "llama"])
def test_a_weights_gradient_is_asked_for_and_the_weights_stay_frozen_after(name, request):
    model = request.getfixturevalue(name)
    _, attention, _ = layer_paths(model)
    projection = f"{attention}.c_attn" if name == "gpt2" else f"{attention}.q_proj"
    with model.trace(PROMPT):
        head = model.lm_head.weight
        inner = model.module(projection).weight
        loss = model.lm_head.output[0, -1].log_softmax(-1)[TARGET]
        with loss.backward():
            grads = [head.grad.save(), inner.grad.save()]
    ref = reference.load(request.getfixturevalue(f"{name}_dir"))
    ref.requires_grad_(False)
    wanted = [ref.lm_head.weight, ref.get_submodule(projection).weight]
    for weight in wanted:
        weight.requires_grad_(True)
    logits = ref(**model.tokenizer(PROMPT, return_tensors="pt")).logits
    expected = torch.autograd.grad(logits[0, -1].log_softmax(-1)[TARGET], wanted)
    for mine, theirs in zip(grads, expected):
        torch.testing.assert_close(mine.value, theirs, rtol=1e-6, atol=1e-7)
    assert all(not p.requires_grad and p.grad is None for p in model.local_model.parameters())

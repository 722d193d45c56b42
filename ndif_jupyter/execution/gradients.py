"""The executor's side of a gradient run: which event each gradient node belongs to, and the tensors it hooks.

A `grad` or `set_grad` node belongs to the gradient event of its target: the backward pass reaching one tensor of a
module value at one step (`(path, "grad output[0]", step)`), a trainable tensor (`("", "grad trainable", id)`), or a
weight of the model (`(path, "grad weight bias", 0)`).
When a module event fires, before its nodes run, the tensors whose gradients the graph wants are made part of the
autograd graph (a tensor that needs no gradient yet is replaced by a copy that does) and hooked; the hook fires the
gradient event, whose nodes read the gradient (cut to their invoke) or replace it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from ..errors import ExecutionError
from ..ir.gradients import GRADIENT_READERS, WHOLE_TENSORS, gradient_target
from ..ir.graph import Node
from ..ir.nested import first_input, rebuild
from ..operations import GETTER_PHASES

BACKWARD_EVENT = ("", "backward", 0)
"""The event the `backward` node runs at: after the forward pass has returned."""


@dataclass(frozen=True)
class HookedTensor:
    """A tensor of a module value whose gradient the graph reads or replaces: which value and the event it fires."""

    kind: str
    indices: tuple[int, ...]
    event: tuple[str, str, int]


def gradient_events(nodes: list[Node]) -> tuple[dict[int, tuple], dict[tuple, list[HookedTensor]], dict[int, tuple]]:
    """For a graph: each gradient node's event, the tensors to hook after each module event, and the events of the
    whole tensors (trainables and weights) by the id of their node.

    Raises ExecutionError for a gradient of something that is neither a module value's tensor nor a trainable.
    """
    event_of: dict[int, tuple] = {}
    hooked: dict[tuple, list[HookedTensor]] = {}
    whole: dict[int, tuple] = {}
    for node in nodes:
        if node.op == "backward":
            event_of[node.id] = BACKWARD_EVENT
        if node.op not in GRADIENT_READERS:
            continue
        target = gradient_target(nodes, node.args[0].id) if node.args else None
        if target is None:
            raise ExecutionError("A gradient is taken of a value that is not a module value.", node.source)
        root, indices = nodes[target[0]], target[1]
        if root.op == "trainable":
            event = ("", "grad trainable", root.id)
            whole[root.id] = event
        elif root.op == "module.weight":
            event = (root.args[0], f"grad weight {root.args[1]}", 0)
            whole[root.id] = event
        else:
            path, _, step = root.args[:3]
            kind = root.op.split(".")[1]
            event = (path, f"grad {kind}{''.join(f'[{index}]' for index in indices)}", step)
            module_event = (path, GETTER_PHASES[root.op], step)
            wanted = HookedTensor(kind, indices, event)
            if wanted not in hooked.setdefault(module_event, []):
                hooked[module_event].append(wanted)
        event_of[node.id] = event
    return event_of, hooked, whole


def invoke_of(nodes: list[Node], node: Node) -> int | None:
    """The invoke whose rows a gradient node's target belongs to; None for a trainable or a weight (no rows)."""
    target = gradient_target(nodes, node.args[0].id)
    root = nodes[target[0]] if target is not None else None
    return root.args[1] if root is not None and root.op not in WHOLE_TENSORS else None


def hook_tensor(value: Any, wanted: HookedTensor, hook) -> tuple[Any, bool]:
    """`value` (a module event's `(args, kwargs)` or output) with the wanted tensor hooked by `hook`; the tensor is
    first swapped for a copy that requires a gradient when it has none. Returns the value and whether it
    changed."""
    if wanted.kind == "output":
        tensor, replaced = _hooked(_leaf_at(value, wanted.indices, wanted), hook)
        return (_with_leaf_at(value, wanted.indices, tensor), True) if replaced else (value, False)
    args, kwargs = value
    if wanted.kind == "input":
        first = first_input(args, kwargs)
        tensor, replaced = _hooked(_leaf_at(first, wanted.indices, wanted), hook)
        if not replaced:
            return value, False
        written = _with_leaf_at(first, wanted.indices, tensor)
        if args:
            return ((written, *args[1:]), kwargs), True
        name = next(iter(kwargs))
        return (args, {**kwargs, name: written}), True
    tensor, replaced = _hooked(_leaf_at(value, wanted.indices, wanted), hook)
    return (_with_leaf_at(value, wanted.indices, tensor), True) if replaced else (value, False)


class WeightGradient:
    """A weight of the model that takes part in the backward pass for one run: it requires a gradient and is hooked
    until `remove()`, which freezes it again and drops what it accumulated."""

    def __init__(self, weight: torch.Tensor, hook):
        self.weight = weight
        weight.requires_grad_(True)
        self.handle = weight.register_hook(hook)

    def remove(self) -> None:
        self.handle.remove()
        self.weight.requires_grad_(False)
        self.weight.grad = None


def make_trainable(tensor: torch.Tensor) -> torch.Tensor:
    """A trainable constant as the run uses it: a copy of its own that requires a gradient."""
    return tensor.detach().clone().requires_grad_(True)


def run_backward(loss: Any, gradient: Any, node: Node) -> None:
    """The backward pass of `loss`; an ExecutionError at the user's line when nothing it depends on has a gradient."""
    if not isinstance(loss, torch.Tensor) or not loss.requires_grad:
        raise ExecutionError(
            "The loss does not depend on any value whose gradient this block takes, so there is no backward pass.",
            node.source,
            "Read `.grad` of a module value the loss is computed from (or use a `tracer.trainable` tensor in it).",
        )
    torch.autograd.backward(loss, gradient)


def _hooked(tensor: Any, hook) -> tuple[torch.Tensor, bool]:
    if not isinstance(tensor, torch.Tensor) or not tensor.is_floating_point():
        raise TypeError("not a floating-point tensor")
    replaced = not tensor.requires_grad
    if replaced:  # a copy that is not a leaf, so that the block may still change it in place
        tensor = tensor.detach().requires_grad_(True).clone()
    tensor.register_hook(hook)
    return tensor, replaced


def _leaf_at(value: Any, indices: tuple[int, ...], wanted: HookedTensor) -> Any:
    for index in indices:
        if not isinstance(value, (tuple, list)) or not -len(value) <= index < len(value):
            raise ExecutionError(f"The module value has no part {index} to take the gradient of ({wanted.event[1]}).")
        value = value[index]
    return value


def _with_leaf_at(value: Any, indices: tuple[int, ...], leaf: Any) -> Any:
    if not indices:
        return leaf
    items = list(value)
    items[indices[0]] = _with_leaf_at(items[indices[0]], indices[1:], leaf)
    return rebuild(value, items)

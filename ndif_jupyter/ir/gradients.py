"""Which value a gradient node is the gradient of: a module value (or a part of it taken by integer indices), a
trainable tensor, or a weight of the model. Tracing, the server's validation and the executor all resolve targets
here."""

from __future__ import annotations

from .graph import Node, Ref

MODULE_GETTERS = frozenset({"module.output", "module.input", "module.inputs"})
GRADIENT_READERS = frozenset({"grad", "set_grad"})
WHOLE_TENSORS = frozenset({"trainable", "module.weight"})
"""Gradient targets without rows: the gradient of the whole tensor, whichever invoke reads it."""


def gradient_target(nodes: list[Node], node_id: int) -> tuple[int, tuple[int, ...]] | None:
    """For the value of node `node_id`: the module getter, `trainable` or `module.weight` node it is part of, and
    the integer indices that lead from that node's value to it; None when it is none of them (a computed value has
    no gradient of its own that the model's backward pass reaches)."""
    path: list[int] = []
    node = nodes[node_id]
    while node.op == "getitem":
        container, key = (*node.args, None, None)[:2]
        if not isinstance(container, Ref) or isinstance(key, bool) or not isinstance(key, int):
            return None
        path.append(key)
        node = nodes[container.id]
    if node.op not in MODULE_GETTERS and node.op not in WHOLE_TENSORS:
        return None
    return node.id, tuple(reversed(path))

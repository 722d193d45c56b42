"""The graph as plain data: nodes with an operation name, constant or reference arguments, source lines."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, Literal

import torch

from .nested import iter_leaves
from .source import Source

GraphKind = Literal["trace", "generate"]


@dataclass(frozen=True)
class Ref:
    """An argument that is the value of an earlier node."""

    id: int


@dataclass
class Node:
    """One recorded operation.

    `op` names an entry of `ndif_jupyter.operations` or a module event (`module.output`, `module.set_output`, ...).
    `args` and `kwargs` hold only constants (see `CONSTANT_TYPES`), containers of them, and `Ref`s.
    """

    id: int
    op: str
    args: tuple = ()
    kwargs: dict = field(default_factory=dict)
    source: Source | None = None
    saved: bool = False


@dataclass
class Invoke:
    """One `invoke(...)`: its prompts as token ids, one list per row, without padding."""

    rows: list[list[int]]

    @property
    def length(self) -> int:
        return max(len(row) for row in self.rows)


@dataclass
class Graph:
    """Everything one run needs: the nodes, the inputs of each invoke, and the run's options.

    `kind` is "trace" (one forward pass) or "generate"; `options` are keyword arguments for the model's forward or
    for Hugging Face's `generate` (plain values only); `pad_token_id` pads rows on the left into one batch;
    `saved_bytes` is the size of the saved values as traced, which a server checks against its limit before running.
    """

    kind: GraphKind
    nodes: list[Node]
    invokes: list[Invoke]
    options: dict[str, Any]
    pad_token_id: int
    saved_bytes: int = 0

    @property
    def batch_size(self) -> int:
        return sum(len(invoke.rows) for invoke in self.invokes)


CONSTANT_TYPES = (
    type(None),
    bool,
    int,
    float,
    complex,
    str,
    slice,
    type(Ellipsis),
    torch.dtype,
    torch.device,
    torch.Tensor,
)


def iter_refs(value: Any) -> Iterator[Ref]:
    """Every Ref inside an argument, however deeply nested in tuples, lists, dicts and slices."""
    for leaf in iter_leaves(value):
        if isinstance(leaf, Ref):
            yield leaf


METADATA_KWARGS = frozenset({"shapes"})
"""Keyword arguments that describe a node (the shapes traced for a module event) and hold no values or refs."""


def node_refs(node: Node) -> list[int]:
    """The ids of the nodes that `node` reads, in order, without repeats."""
    seen: dict[int, None] = {}
    for ref in iter_refs(node.args):
        seen[ref.id] = None
    for key, value in node.kwargs.items():
        if key not in METADATA_KWARGS:
            for ref in iter_refs(value):
                seen[ref.id] = None
    return list(seen)

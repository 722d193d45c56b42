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

    @property
    def steps(self) -> int:
        """The model's forward passes in the run: `max_new_tokens` for a generation, one for a trace."""
        return int(self.options.get("max_new_tokens", 1)) if self.kind == "generate" else 1

    @property
    def row_copies(self) -> int:
        """How many rows each prompt fills in the forward passes (`rows_per_prompt`)."""
        return rows_per_prompt(self.kind, self.options)

    @property
    def forward_rows(self) -> int:
        """The rows of every forward pass: each prompt's beams, or its sampled sequences."""
        return self.batch_size * self.row_copies


def rows_per_prompt(kind: GraphKind, options: dict[str, Any]) -> int:
    """How many rows each prompt fills in a run's forward passes: its beams in a beam search, its sequences when
    sampling several (`num_return_sequences`), else one. Hugging Face repeats each prompt's row that many times,
    side by side, before the first forward pass."""
    if kind != "generate":
        return 1
    beams = options.get("num_beams") or 1
    return beams if beams > 1 else options.get("num_return_sequences") or 1


def several_sequences_problem(options: dict[str, Any]) -> tuple[str, str] | None:
    """What is wrong with a generation's `num_beams` and `num_return_sequences`, and how to fix it; None if nothing."""
    beams = options.get("num_beams", 1)
    sequences = options.get("num_return_sequences", 1)
    for key, value in (("num_beams", beams), ("num_return_sequences", sequences)):
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            return f"{key}={value!r} must be a positive integer.", f"Give {key} as a whole number, 1 or more."
    if beams > 1 and sequences > beams:
        return (
            f"num_return_sequences={sequences} is more than num_beams={beams}: beam search returns its best beams.",
            f"Raise num_beams to at least {sequences}.",
        )
    if beams == 1 and sequences > 1 and not options.get("do_sample"):
        return (
            f"num_return_sequences={sequences} without beams or sampling gives one sequence {sequences} times.",
            "Add do_sample=True to sample several sequences, or num_beams to keep the best beams.",
        )
    if beams > 1 and options.get("seed") is not None:
        return "seed= draws the tokens of sampling; beam search does not use it.", "Leave out seed= with num_beams."
    return None


def sequences_per_prompt(kind: GraphKind, options: dict[str, Any]) -> int:
    """How many rows of generated ids each prompt gets back (`num_return_sequences`)."""
    return (options.get("num_return_sequences") or 1) if kind == "generate" else 1


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

CONDITION = "condition"
"""The keyword of a node recorded under `tracer.cond(...)`: a Ref to its `cond` node. It is not an argument of the
operation; a node whose condition is false (or was itself skipped) does not run, nor does any node reading it."""


def node_condition(node: Node) -> int | None:
    """The id of the `cond` node that `node` runs under, or None."""
    ref = node.kwargs.get(CONDITION)
    return ref.id if isinstance(ref, Ref) else None


def operation_kwargs(kwargs: dict) -> dict:
    """A node's keyword arguments as its operation takes them: without metadata or its condition."""
    if not kwargs.keys() & _NOT_ARGUMENTS:
        return kwargs
    return {key: value for key, value in kwargs.items() if key not in _NOT_ARGUMENTS}


_NOT_ARGUMENTS = METADATA_KWARGS | {CONDITION}


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

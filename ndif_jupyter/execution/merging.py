"""Several jobs' graphs as one batched graph, and its result split back into each job's own result.

Each job's invokes become invokes of the merged graph, after those of the jobs before it; its nodes are renumbered
by an offset, and its module events name the renumbered invokes. The executor runs the merged graph with one
`Part` per job, so that each job's failure, cancellation and end of generation stay its own.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from ..ir.graph import Graph, Invoke, Node, Ref
from ..ir.nested import map_leaves
from ..ir.result import ExecutionResult
from ..operations import GETTER_PHASES, GRADIENT_OPS, SETTER_PHASES

PER_JOB_OPTIONS = frozenset({"max_new_tokens", "seed"})
"""Options that may differ between jobs of one batch: each job's rows stop at their own number of new tokens, and
sample from their own seeded generator."""

_UNMERGEABLE_OPTIONS = {"num_beams": 1, "num_return_sequences": 1}
"""Options whose other values reorder or multiply rows, so that a job's rows could not be found in the batch."""


@dataclass(frozen=True)
class Part:
    """One job inside a merged graph: its nodes, invokes and rows, its number of new tokens and its seed."""

    first_node: int
    nodes: int
    first_invoke: int
    invokes: int
    first_row: int
    rows: int
    max_new_tokens: int = 0
    seed: int | None = None

    def owns(self, node_id: int) -> bool:
        return self.first_node <= node_id < self.first_node + self.nodes


def batch_key(graph: Graph) -> str | None:
    """What jobs must share to run as one batch (their kind, padding and options but those of PER_JOB_OPTIONS), or
    None when the graph runs only alone."""
    for option, alone in _UNMERGEABLE_OPTIONS.items():
        if graph.options.get(option, alone) != alone:
            return None
    if any(node.op in RUNS_ALONE for node in graph.nodes):
        return None
    shared = {key: value for key, value in graph.options.items() if key not in PER_JOB_OPTIONS}
    try:
        options = json.dumps(shared, sort_keys=True)
    except TypeError:
        return None
    return f"{graph.kind}|{graph.pad_token_id}|{options}"


RUNS_ALONE = GRADIENT_OPS | {"module.skip", "stop"}
"""Operations whose graph runs alone: a backward pass of its own, a module not run at all, a forward pass ended
early."""

LENGTH_RATIO = 2
"""Generations batch together only when their numbers of new tokens are within this factor of each other: a job's
result is written when its batch ends, so a short job should not wait for a much longer one."""


def similar_length(first: Graph, other: Graph) -> bool:
    """Whether `other` may join `first`'s batch by its number of new tokens (traces always may)."""
    if first.kind != "generate":
        return True
    a, b = int(first.options.get("max_new_tokens", 1)), int(other.options.get("max_new_tokens", 1))
    return max(a, b) <= LENGTH_RATIO * min(a, b)


def single_part(graph: Graph) -> Part:
    """The one part of a graph that runs alone."""
    return _part(graph, 0, 0, 0)


def merge(graphs: Sequence[Graph]) -> tuple[Graph, list[Part]]:
    """One graph running every graph of `graphs` in one batch (they share a `batch_key`), and each one's part."""
    first = graphs[0]
    nodes: list[Node] = []
    invokes: list[Invoke] = []
    parts = []
    rows = 0
    for graph in graphs:
        part = _part(graph, len(nodes), len(invokes), rows)
        parts.append(part)
        nodes.extend(_moved(node, part) for node in graph.nodes)
        invokes.extend(Invoke([list(row) for row in invoke.rows]) for invoke in graph.invokes)
        rows += graph.batch_size
    options = {key: value for key, value in first.options.items() if key not in PER_JOB_OPTIONS}
    if first.kind == "generate":
        options["max_new_tokens"] = max(part.max_new_tokens for part in parts)
    saved_bytes = sum(graph.saved_bytes for graph in graphs)
    return Graph(first.kind, nodes, invokes, options, first.pad_token_id, saved_bytes), parts


def split(result: ExecutionResult, part: Part, steps_run: int, merged_length: int, own_length: int) -> ExecutionResult:
    """The result of one job from the result of its merged graph: its saved values by its own node ids, its rows of
    the output ids (padded to its own prompt length `own_length`, as long as its own generation ran), and what of it
    never ran."""
    saved = {node_id - part.first_node: value for node_id, value in result.saved.items() if part.owns(node_id)}
    missing = {node_id - part.first_node: why for node_id, why in result.missing.items() if part.owns(node_id)}
    output_ids = None
    if result.output_ids is not None:
        rows = result.output_ids[part.first_row : part.first_row + part.rows]
        output_ids = rows[:, merged_length - own_length : merged_length + steps_run].clone()
    return ExecutionResult(saved, output_ids, missing, steps_run, result.seconds)


def _part(graph: Graph, first_node: int, first_invoke: int, first_row: int) -> Part:
    steps = int(graph.options.get("max_new_tokens", 0)) if graph.kind == "generate" else 0
    seed = graph.options.get("seed")
    return Part(
        first_node,
        len(graph.nodes),
        first_invoke,
        len(graph.invokes),
        first_row,
        graph.batch_size,
        steps,
        seed if isinstance(seed, int) and not isinstance(seed, bool) else None,
    )


def _moved(node: Node, part: Part) -> Node:
    """`node` with its id and references moved by the part's node offset, and its invoke by the invoke offset."""
    offset = part.first_node

    def move(leaf: Any) -> Any:
        return Ref(leaf.id + offset) if isinstance(leaf, Ref) else leaf

    args = node.args
    if node.op in GETTER_PHASES or node.op in SETTER_PHASES:
        path, invoke, step, *rest = args
        args = (path, invoke + part.first_invoke, step, *rest)
    if offset:
        args = map_leaves(move, args)
        kwargs = map_leaves(move, node.kwargs)
    else:
        kwargs = node.kwargs
    return Node(node.id + offset, node.op, tuple(args), dict(kwargs), node.source, node.saved)

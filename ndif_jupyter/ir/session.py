"""A session as plain data: several graphs of one model run in order as one request, later ones reading earlier
ones' values through `session.value` nodes."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal, TypeAlias

from .graph import Graph, Node

SESSION_VALUE = "session.value"
"""The operation of a node that is the value of a node of an earlier block of the same session: args `(block,
node)`. Each reading node gets its own copy of that value, so what a block changes in it stays in that block."""

MAX_BLOCKS = 64
"""The most blocks one session may hold."""


@dataclass
class Session:
    """`with model.session():`'s blocks as one request: their graphs, run in this order on one model."""

    graphs: list[Graph]

    kind: Literal["session"] = "session"

    @property
    def nodes(self) -> int:
        return sum(len(graph.nodes) for graph in self.graphs)


Request: TypeAlias = "Graph | Session"
"""What one request asks a server (or a kernel) to run: one block's graph, or a session's graphs."""


def imported(node: Node) -> tuple[Any, Any] | None:
    """The (block, node) a `session.value` node reads, as sent (validation checks they are integers); else None."""
    if node.op != SESSION_VALUE or len(node.args) != 2:
        return None
    return node.args[0], node.args[1]


def kept_values(session: Session) -> list[set[int]]:
    """For each block, the ids of its nodes that a later block reads: the run keeps their values for those blocks."""
    kept: list[set[int]] = [set() for _ in session.graphs]
    for graph in session.graphs:
        for node in graph.nodes:
            found = imported(node)
            if found is not None:
                kept[found[0]].add(found[1])
    return kept


def steps_of(request: Request) -> int:
    """The forward passes a request's blocks run in all (one per trace, `max_new_tokens` per generation)."""
    graphs = request.graphs if isinstance(request, Session) else [request]
    return sum(graph.steps for graph in graphs)

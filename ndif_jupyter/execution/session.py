"""Running a session: its blocks' graphs in order on one model with the one executor, earlier values flowing on."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

from ..ir.graph import Graph
from ..ir.nested import value_bytes
from ..ir.result import ExecutionResult, RunResult, SessionResult
from ..ir.session import Request, Session, kept_values
from .executor import execute
from .guard import RunGuard


def execute_session(
    session: Session,
    model: torch.nn.Module,
    on_forward: Callable[[int], None] | None = None,
    guard: RunGuard | None = None,
) -> SessionResult:
    """Run each block of `session` on `model` in order, as `execute` runs one; a block's `session.value` nodes read
    the values earlier blocks kept for them, which never leave the model's device.

    `on_forward(n)` counts the forward passes of all blocks together. One `guard` bounds the whole session: its
    deadline runs from the first block, and the values kept for later blocks count against its memory in every
    block after theirs. The first block that fails ends the session with its error.
    """
    guard = guard or RunGuard()
    guard.start()
    keep = kept_values(session)
    imports: dict[tuple[int, int], Any] = {}
    results: list[ExecutionResult] = []
    passes = 0
    try:
        for index, graph in enumerate(session.graphs):
            counted = passes

            def report(forward: int, counted: int = counted) -> None:
                if on_forward is not None:
                    on_forward(counted + forward)

            carried = sum(value_bytes(value) for value in imports.values())
            result = execute(graph, model, report, guard.carry(carried), imports, keep[index])
            imports.update({(index, node_id): value for node_id, value in result.kept.items()})
            result.kept = {}
            passes += result.forward_calls
            results.append(result)
    finally:
        imports.clear()  # a raised error's traceback holds this frame: the kept tensors must not stay with it
    return SessionResult(results)


def run_request(
    request: Request,
    model: torch.nn.Module,
    on_forward: Callable[[int], None] | None = None,
    guard: RunGuard | None = None,
) -> RunResult:
    """Run one request, a block's graph or a session, with the one executor."""
    if isinstance(request, Graph):
        return execute(request, model, on_forward, guard)
    return execute_session(request, model, on_forward, guard)

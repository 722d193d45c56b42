"""Where a graph runs: in this process on dispatched weights, or on a server; one small runner per place.

`runner_for(loaded, device_map)` picks the runner a block's `device_map` asks for, and refuses, when the block
opens, one whose place is not available.
"""

from __future__ import annotations

from typing import Any, Protocol

from ..ir.graph import Graph
from ..ir.result import ExecutionResult, SessionResult
from ..ir.session import Session
from ..loading.loaded import LoadedModel
from .local import LocalRunner
from .server import SERVER, ServerRunner


class Runner(Protocol):
    """Runs a recorded graph (or a session's graphs, in order) somewhere and gives back its result."""

    def run(self, graph: Graph) -> ExecutionResult: ...

    def run_session(self, session: Session) -> SessionResult: ...


def runner_for(loaded: LoadedModel, device_map: Any) -> Runner:
    """The runner for `device_map`: "server" for the server extension, anything else for this process."""
    if device_map == SERVER:
        return ServerRunner(loaded.name)
    return LocalRunner(loaded, device_map)


__all__ = ["SERVER", "LocalRunner", "Runner", "ServerRunner", "runner_for"]

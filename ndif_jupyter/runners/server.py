"""ServerRunner: `device_map="server"`, a graph runs in the Jupyter server extension this kernel was told about."""

from __future__ import annotations

from typing import TypeVar

from ..client import ServerClient
from ..errors import ProtocolError
from ..ir.graph import Graph
from ..ir.result import ExecutionResult, RunResult, SessionResult
from ..ir.session import Session
from .origin import running_origin

SERVER = "server"


class ServerRunner:
    """Sends the graph to the server's model of the same name, with the notebook and cell it comes from; the kernel
    needs no weights.

    Made when the block opens, so a kernel that knows of no server is told then, before anything is recorded.
    """

    def __init__(self, model_name: str):
        self.client = ServerClient.from_environment()
        self.model_name = model_name

    def run(self, graph: Graph) -> ExecutionResult:
        return _answer(self.client.run(graph, self.model_name, running_origin()), ExecutionResult)

    def run_session(self, session: Session) -> SessionResult:
        """Send a session's blocks as one request: one job, one round trip."""
        return _answer(self.client.run(session, self.model_name, running_origin()), SessionResult)


_Answer = TypeVar("_Answer", ExecutionResult, SessionResult)


def _answer(result: RunResult, expected: type[_Answer]) -> _Answer:
    if not isinstance(result, expected):
        raise ProtocolError(f"the server answered with {type(result).__name__} where {expected.__name__} was due")
    return result

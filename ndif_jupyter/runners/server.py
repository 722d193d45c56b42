"""ServerRunner: `device_map="server"`, a graph runs in the Jupyter server extension this kernel was told about."""

from __future__ import annotations

from ..client import ServerClient
from ..ir.graph import Graph
from ..ir.result import ExecutionResult

SERVER = "server"


class ServerRunner:
    """Sends the graph to the server's model of the same name; the kernel needs no weights.

    Made when the block opens, so a kernel that knows of no server is told then, before anything is recorded.
    """

    def __init__(self, model_name: str):
        self.client = ServerClient.from_environment()
        self.model_name = model_name

    def run(self, graph: Graph) -> ExecutionResult:
        return self.client.run(graph, self.model_name)

"""ServerRunner: `device_map="server"`, a graph runs in the Jupyter server extension this kernel was told about."""

from __future__ import annotations

import os

from ..client import SERVER_URL_ENV, ServerClient, missing_server_message
from ..errors import NDIFError
from ..ir.graph import Graph
from ..ir.result import ExecutionResult

SERVER = "server"


class ServerRunner:
    """Sends the graph to the server's model of the same name; the kernel needs no weights."""

    def __init__(self, model_name: str):
        if not os.environ.get(SERVER_URL_ENV):
            raise NDIFError(missing_server_message())
        self.model_name = model_name

    def run(self, graph: Graph) -> ExecutionResult:
        return ServerClient.from_environment().run(graph, self.model_name)

"""LocalRunner: a graph runs in this process, on the model's weights dispatched with the block's `device_map`."""

from __future__ import annotations

from typing import Any

import torch

from ..errors import NDIFError
from ..execution.executor import execute
from ..execution.session import execute_session
from ..ir.graph import Graph
from ..ir.result import ExecutionResult, SessionResult
from ..ir.session import Session
from ..loading.loaded import LoadedModel


class LocalRunner:
    """Dispatches the weights (once per `device_map`) and runs the one executor on them."""

    def __init__(self, loaded: LoadedModel, device_map: Any):
        if isinstance(device_map, str) and device_map.startswith("cuda") and not torch.cuda.is_available():
            raise NDIFError(
                f"device_map={device_map!r} needs a CUDA GPU, and torch sees none on this machine.\n"
                "Use device_map='cpu' (or leave it out: the default is the GPU when there is one, else the CPU)."
            )
        self.loaded = loaded
        self.device_map = device_map

    def run(self, graph: Graph) -> ExecutionResult:
        return execute(graph, self.loaded.dispatch(self.device_map))

    def run_session(self, session: Session) -> SessionResult:
        return execute_session(session, self.loaded.dispatch(self.device_map))

"""The worker inside a kernel on the GPU host: loads one model once, then runs requests that arrive as data.

The gateway backend starts a kernel and executes exactly two kinds of code in it, both calls into this module:
`start(config)` once, and `run(job_id)` per job. Requests arrive as buffers of comm messages on the target
`ndif.worker`; progress and the result (in chunks, with a sha256 digest) go back the same way. No user code runs.
"""

from __future__ import annotations

import hashlib
from typing import Any

from ndif_jupyter.execution.executor import execute
from ndif_jupyter.execution.guard import RunGuard
from ndif_jupyter.loading.loaded import LoadedModel
from ndif_jupyter.protocol.admission import Refusal, admit
from ndif_jupyter.protocol.limits import Limits
from ndif_jupyter.protocol.result import check_result_size, encode_result

COMM_TARGET = "ndif.worker"
CHUNK_BYTES = 4 * 1024 * 1024

_worker: Worker | None = None


def start(config: dict[str, Any]) -> str:
    """Load the model named in `config` and listen for requests; returns the model's class name."""
    global _worker
    from IPython import get_ipython

    _worker = Worker(config)
    get_ipython().kernel.comm_manager.register_target(COMM_TARGET, _worker.open)
    return type(_worker.model.meta_model).__name__


def run(job_id: str) -> None:
    """Run the request received for `job_id` and send back its progress and result."""
    if _worker is None:
        raise RuntimeError("the worker was not started in this kernel")
    _worker.run(job_id)


class Worker:
    """One model, loaded once; requests assembled from comm buffers; results sent back in chunks."""

    def __init__(self, config: dict[str, Any]):
        self.model = LoadedModel(config["model"])
        self.weights = self.model.dispatch(config.get("device_map"))
        self.limits = Limits(**config.get("limits", {}))
        self.comm: Any = None
        self.parts: dict[str, list[bytes]] = {}

    def open(self, comm: Any, message: dict) -> None:
        self.comm = comm
        comm.on_msg(self.receive)

    def receive(self, message: dict) -> None:
        data = message["content"]["data"]
        if data.get("kind") == "request-part":
            self.parts.setdefault(data["job"], []).extend(bytes(buffer) for buffer in message.get("buffers", []))

    def run(self, job_id: str) -> None:
        request = bytearray(b"".join(self.parts.pop(job_id, [])))
        phase = "validating"
        try:
            graph = admit(request, lambda name: self.model, self.limits).graph
            phase = "running"
            guard = RunGuard(seconds=self.limits.max_job_seconds, max_value_bytes=self.limits.max_memory_bytes)
            on_forward = lambda step: self._send({"kind": "step", "step": step})  # noqa: E731
            result = execute(graph, self.weights, on_forward=on_forward, guard=guard)
            check_result_size(result, self.limits.max_result_bytes)
            phase = "writing result"
            self._send_result(encode_result(result))
        except KeyboardInterrupt:
            self._send({"kind": "cancelled"})
        except Refusal as refusal:
            self._send({"kind": "error", "error": _refusal_document(refusal)})
        except Exception as error:
            from .backends.base import error_document

            self._send({"kind": "error", "error": error_document(error, phase)})

    def _send_result(self, data: bytes) -> None:
        view = memoryview(data)
        parts = max(1, -(-len(data) // CHUNK_BYTES))
        for index in range(parts):
            chunk = view[index * CHUNK_BYTES : (index + 1) * CHUNK_BYTES]
            self._send({"kind": "result-part", "index": index, "parts": parts}, [chunk])
        self._send({"kind": "result-end", "bytes": len(data), "sha256": hashlib.sha256(data).hexdigest()})

    def _send(self, data: dict[str, Any], buffers: list | None = None) -> None:
        self.comm.send(data, buffers=buffers)


def _refusal_document(refusal: Refusal) -> dict[str, Any]:
    return {"type": "ProtocolError", "message": refusal.message, "hint": None, "source": None, "phase": "validating"}

"""The worker inside a kernel on the GPU host: loads one model once, then runs requests that arrive as data.

The gateway backend starts a kernel and executes exactly two kinds of code in it, both calls into this module:
`start(config)` once, and `run(job_ids)` per batch of jobs. Requests arrive as buffers of comm messages on the target
`ndif.worker`; each is admitted again here; the batch runs as one batched forward (`execute_batch`); each job's
progress and result (in chunks, with a sha256 digest) go back the same way, tagged with its id. No user code runs.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from typing import Any

from ndif_jupyter.errors import NotInBatch, RunTimedOut
from ndif_jupyter.execution.executor import execute_batch
from ndif_jupyter.execution.guard import RunGuard
from ndif_jupyter.execution.session import run_request
from ndif_jupyter.loading.loaded import LoadedModel
from ndif_jupyter.protocol.admission import Refusal, admit
from ndif_jupyter.protocol.limits import Limits
from ndif_jupyter.protocol.result import check_result_size, encode_result

from .progress import Throttle

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


def run(job_ids: list[str]) -> None:
    """Run the requests received for `job_ids` as one batch and send back each one's progress and result."""
    if _worker is None:
        raise RuntimeError("the worker was not started in this kernel")
    _worker.run(job_ids)


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

    def run(self, job_ids: list[str]) -> None:
        admitted = {}
        for job_id in job_ids:
            request = bytearray(b"".join(self.parts.pop(job_id, [])))
            try:
                admitted[job_id] = admit(request, lambda name: self.model, self.limits).request
            except Refusal as refusal:
                self._send({"kind": "error", "job": job_id, "error": _refusal_document(refusal)})
            except Exception as error:
                self._send({"kind": "error", "job": job_id, "error": _error_document(error, "validating")})
        if not admitted:
            return
        ids = list(admitted)
        answered: set[str] = set()
        try:
            if len(ids) == 1:
                outcomes: list[Any] = [self._alone(ids[0], admitted[ids[0]])]
            else:
                outcomes = self._together(ids, [admitted[job_id] for job_id in ids])
            for job_id, outcome in zip(ids, outcomes):
                if isinstance(outcome, NotInBatch):
                    outcome = self._alone(job_id, admitted[job_id])
                self._send_outcome(job_id, outcome)
                answered.add(job_id)
        except KeyboardInterrupt:
            for job_id in ids:
                if job_id not in answered:
                    self._send({"kind": "cancelled", "job": job_id})

    def _reporter(self, ids: list[str]) -> Callable[[int], None]:
        """Sends the step the jobs reached: the first at once, then as a `Throttle` allows."""
        throttle = Throttle()

        def report(step: int) -> None:
            if throttle.due():
                for job_id in ids:
                    self._send({"kind": "step", "job": job_id, "step": step})

        return report

    def _guard(self) -> RunGuard:
        return RunGuard(seconds=self.limits.max_job_seconds, max_value_bytes=self.limits.max_memory_bytes)

    def _alone(self, job_id: str, request: Any) -> Any:
        try:
            on_forward = self._reporter([job_id])
            return run_request(request, self.weights, on_forward=on_forward, guard=self._guard())
        except Exception as error:
            return error

    def _together(self, ids: list[str], graphs: list[Any]) -> list[Any]:
        try:
            return execute_batch(graphs, self.weights, on_forward=self._reporter(ids), guard=self._guard())
        except RunTimedOut as error:
            return [error] * len(ids)
        except Exception as error:
            return [NotInBatch(str(error))] * len(ids)

    def _send_outcome(self, job_id: str, outcome: Any) -> None:
        phase = "running"
        try:
            if isinstance(outcome, BaseException):
                raise outcome
            check_result_size(outcome, self.limits.max_result_bytes)
            self._send({"kind": "step", "job": job_id, "step": outcome.forward_calls})
            phase = "writing result"
            self._send_result(job_id, encode_result(outcome))
        except Exception as error:
            self._send({"kind": "error", "job": job_id, "error": _error_document(error, phase)})

    def _send_result(self, job_id: str, data: bytes) -> None:
        view = memoryview(data)
        parts = max(1, -(-len(data) // CHUNK_BYTES))
        for index in range(parts):
            chunk = view[index * CHUNK_BYTES : (index + 1) * CHUNK_BYTES]
            self._send({"kind": "result-part", "job": job_id, "index": index, "parts": parts}, [chunk])
        digest = hashlib.sha256(data).hexdigest()
        self._send({"kind": "result-end", "job": job_id, "bytes": len(data), "sha256": digest})

    def _send(self, data: dict[str, Any], buffers: list | None = None) -> None:
        self.comm.send(data, buffers=buffers)


def _error_document(error: BaseException, phase: str) -> dict[str, Any]:
    from .backends.base import error_document

    return error_document(error, phase)


def _refusal_document(refusal: Refusal) -> dict[str, Any]:
    return {"type": "ProtocolError", "message": refusal.message, "hint": None, "source": None, "phase": "validating"}

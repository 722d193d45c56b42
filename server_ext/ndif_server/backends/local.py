"""The local backend: models loaded once in the server process, one worker thread per model taking its jobs in fair
order."""

from __future__ import annotations

import threading
import time
import traceback
from typing import Any

from ndif_jupyter.errors import NDIFError, RunCancelled
from ndif_jupyter.execution.executor import execute
from ndif_jupyter.execution.guard import RunGuard
from ndif_jupyter.ir.graph import Graph
from ndif_jupyter.protocol.limits import Limits
from ndif_jupyter.protocol.result import check_result_size, write_result

from ..jobs import FINISHED, Job, JobStore, os_error_reason
from .base import Backend, error_document


class ResultNotWritten(NDIFError):
    """The result of a job could not be written under the server's response path."""


class LocalBackend(Backend):
    """Runs graphs here, with the one executor of `ndif_jupyter`, never on the server's event loop."""

    def __init__(self, models: list[str], store: JobStore, device_map: Any, limits: Limits, log: Any):
        super().__init__(models, store)
        self.device_map = device_map
        self.limits = limits
        self.log = log
        self.stopping = False
        self._workers = [
            threading.Thread(target=self._work, args=(name,), name=f"ndif-{index}", daemon=True)
            for index, name in enumerate(self.models)
        ]
        for worker in self._workers:
            worker.start()

    def shutdown(self) -> None:
        """Take no more jobs, and stop the running ones at their next node or forward pass. Their records stay as
        they are, so that the next start marks them as stopped by the restart, at their real step."""
        self.stopping = True
        super().shutdown()

    def _work(self, name: str) -> None:
        """Model `name`'s worker: its jobs one at a time, in the queue's fair order, until shutdown."""
        while not self.stopping:
            taken = self.next_job(name, timeout=None)
            if taken is None:
                return
            job, graph = taken
            self.running[name] = job
            try:
                self._run(job, graph)
            except BaseException as error:
                self._ran(job, error)
            finally:
                self.running.pop(name, None)

    def _run(self, job: Job, graph: Graph) -> None:
        if job.cancel_requested or job.status != "queued":
            return
        store = self.store
        store.update(job, status="running", phase="loading model", started=time.time())
        try:
            model = self.model(job.model)
            torch_model = model.dispatch(self.device_map)
            store.update(job, phase="running")
            guard = RunGuard(
                should_stop=lambda: job.cancel_requested or self.stopping,
                seconds=self.limits.max_job_seconds,
                max_value_bytes=self.limits.max_memory_bytes,
            )
            result = execute(graph, torch_model, on_forward=lambda step: store.update(job, step=step), guard=guard)
            check_result_size(result, self.limits.max_result_bytes)
            store.update(job, phase="writing result")
            written = self._write(job, result)
            store.update(job, status="done", phase="done", result_bytes=written, finished=time.time())
        except RunCancelled:
            if self.stopping and not job.cancel_requested:
                self.log.warning("ndif job %s stopped with the server at step %d", job.id, job.step)
                return
            store.update(job, status="cancelled", phase="cancelled", finished=time.time())
        except Exception as error:
            if not isinstance(error, NDIFError):
                self.log.error("ndif job %s failed:\n%s", job.id, traceback.format_exc())
            self._fail(job, error)

    def _write(self, job: Job, result: Any) -> int:
        try:
            return write_result(result, self.store.result_path(job.id))
        except OSError as error:
            self.log.error("ndif job %s: its result could not be written: %s", job.id, error)
            raise ResultNotWritten(
                f"the server could not write the result ({os_error_reason(error)}); try again later or tell the "
                "server's administrator"
            ) from None

    def _fail(self, job: Job, error: BaseException) -> None:
        failed_in = job.phase
        self.store.update(
            job, status="error", phase="failed", error=error_document(error, failed_in), finished=time.time()
        )

    def _ran(self, job: Job, error: BaseException) -> None:
        """Log a run that raised (it could not record its own failure), and fail its job if it is not finished."""
        self.log.error("ndif job %s failed:\n%s", job.id, "".join(traceback.format_exception(error)))
        if job.status not in FINISHED:
            try:
                self._fail(job, error)
            except Exception as saving:
                self.log.error("ndif job %s: its failure could not be saved: %r", job.id, saving)

"""The local backend: models loaded once in the server process, one worker thread per model running its jobs in turn."""

from __future__ import annotations

import time
import traceback
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

from ndif_jupyter.errors import NDIFError, RunCancelled
from ndif_jupyter.execution.executor import execute
from ndif_jupyter.ir.graph import Graph
from ndif_jupyter.protocol.result import check_result_size, write_result

from ..jobs import FINISHED, Job, JobStore
from .base import Backend, error_document


class LocalBackend(Backend):
    """Runs graphs here, with the one executor of `ndif_jupyter`, never on the server's event loop."""

    def __init__(self, models: list[str], store: JobStore, device_map: Any, max_result_bytes: int, log: Any):
        super().__init__(models, store)
        self.device_map = device_map
        self.max_result_bytes = max_result_bytes
        self.log = log
        self._workers = {
            name: ThreadPoolExecutor(1, thread_name_prefix=f"ndif-{index}") for index, name in enumerate(models)
        }

    def submit(self, job: Job, graph: Graph) -> None:
        future = self._workers[job.model].submit(self._run, job, graph)
        future.add_done_callback(lambda done: self._ran(job, done))

    def shutdown(self) -> None:
        for worker in self._workers.values():
            worker.shutdown(wait=False, cancel_futures=True)

    def _run(self, job: Job, graph: Graph) -> None:
        if job.cancel_requested or job.status != "queued":
            return
        store = self.store
        store.update(job, status="running", phase="loading model", started=time.time())
        try:
            model = self.model(job.model)
            torch_model = model.dispatch(self.device_map)
            store.update(job, phase="running")
            result = execute(graph, torch_model, on_forward=lambda step: self._forward(job, step))
            check_result_size(result, self.max_result_bytes)
            store.update(job, phase="writing result")
            written = write_result(result, store.result_path(job.id))
            store.update(job, status="done", phase="done", result_bytes=written, finished=time.time())
        except RunCancelled:
            store.update(job, status="cancelled", phase="cancelled", finished=time.time())
        except Exception as error:
            if not isinstance(error, NDIFError):
                self.log.error("ndif job %s failed:\n%s", job.id, traceback.format_exc())
            self._fail(job, error)

    def _fail(self, job: Job, error: BaseException) -> None:
        self.store.update(job, status="error", phase="failed", error=error_document(error), finished=time.time())

    def _ran(self, job: Job, future: Future) -> None:
        """Log a run that raised (it could not record its own failure), and fail its job if it is not finished."""
        error = None if future.cancelled() else future.exception()
        if error is None:
            return
        self.log.error("ndif job %s failed:\n%s", job.id, "".join(traceback.format_exception(error)))
        if job.status not in FINISHED:
            try:
                self._fail(job, error)
            except Exception as saving:
                self.log.error("ndif job %s: its failure could not be saved: %r", job.id, saving)

    def _forward(self, job: Job, step: int) -> None:
        if job.cancel_requested:
            raise RunCancelled("the job was cancelled")
        self.store.update(job, step=step)

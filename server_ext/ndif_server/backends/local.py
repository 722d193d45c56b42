"""The local backend: models loaded once in the server process, a worker thread per model and replica taking its
jobs in fair order, in batches."""

from __future__ import annotations

import threading
import time
import traceback
from collections.abc import Callable
from typing import Any, cast

import torch

from ndif_jupyter.errors import NDIFError, NotInBatch, RunCancelled, RunTimedOut
from ndif_jupyter.execution.executor import execute_batch
from ndif_jupyter.execution.guard import RunGuard
from ndif_jupyter.execution.session import run_request
from ndif_jupyter.ir.graph import Graph
from ndif_jupyter.ir.result import RunResult
from ndif_jupyter.ir.session import Request
from ndif_jupyter.loading.loaded import LoadedModel
from ndif_jupyter.protocol.limits import Limits
from ndif_jupyter.protocol.result import check_result_size, write_result

from ..jobs import FINISHED, Job, JobStore, os_error_reason
from .base import Backend, StepReporter, error_document


class ResultNotWritten(NDIFError):
    """The result of a job could not be written under the server's response path."""


class LocalBackend(Backend):
    """Runs graphs here, with the one executor of `ndif_jupyter`, never on the server's event loop.

    Each model has one worker thread per replica, each with its own copy of the weights (`replica_device_maps`);
    an idle worker takes the next batch of its model's queue, so a batch goes to a replica that is free.
    """

    def __init__(
        self,
        models: list[str],
        store: JobStore,
        device_map: Any,
        limits: Limits,
        log: Any,
        batch_jobs: int = 1,
        replica_device_maps: list[Any] | None = None,
    ):
        super().__init__(models, store, limits, batch_jobs)
        self.replica_device_maps = replica_device_maps or [device_map]
        self.log = log
        self.stopping = False
        self._replicas: dict[tuple[str, int], LoadedModel] = {}
        self._workers = [
            threading.Thread(target=self._work, args=(name, replica), name=f"ndif-{index}-{replica}", daemon=True)
            for index, name in enumerate(self.models)
            for replica in range(len(self.replica_device_maps))
        ]
        for worker in self._workers:
            worker.start()

    def shutdown(self) -> None:
        """Take no more jobs, and stop the running ones at their next node or forward pass. Their records stay as
        they are, so that the next start marks them as stopped by the restart, at their real step."""
        self.stopping = True
        super().shutdown()

    def _work(self, name: str, replica: int) -> None:
        """One worker of model `name`: batches of its jobs, in the queue's fair order, until shutdown."""
        while not self.stopping:
            try:
                batch = self.next_batch(name, timeout=None)
            except Exception:
                self.log.error("ndif: taking the next jobs of %s failed:\n%s", name, traceback.format_exc())
                continue
            if not batch:
                return
            jobs = [job for job, _ in batch]
            self.started(name, jobs)
            try:
                self._run(batch, replica)
            except BaseException as error:
                for job in jobs:
                    self._ran(job, error)
            finally:
                self.ended(name, jobs)

    def _weights(self, name: str, replica: int) -> torch.nn.Module:
        """Replica `replica` of model `name`, its weights loaded once (the first replica is the described model)."""
        if replica == 0:
            return self.model(name).dispatch(self.replica_device_maps[0])
        if (name, replica) not in self._replicas:
            self._replicas[(name, replica)] = LoadedModel(name)
        return self._replicas[(name, replica)].dispatch(self.replica_device_maps[replica])

    def _run(self, batch: list[tuple[Job, Request]], replica: int) -> None:
        batch = [(job, graph) for job, graph in batch if not job.cancel_requested and job.status == "queued"]
        if not batch:
            return
        store = self.store
        for job, _ in batch:
            store.update(job, status="running", phase="loading model", started=time.time(), batch=len(batch))
        jobs = [job for job, _ in batch]
        try:
            torch_model = self._weights(jobs[0].model, replica)
        except Exception as error:
            for job in jobs:
                self._finish(job, error)
            return
        for job in jobs:
            store.update(job, phase="running")
        if len(batch) == 1:
            self._finish(jobs[0], self._alone(jobs[0], batch[0][1], torch_model))
            return
        guard = self._guard(lambda: self.stopping or all(job.cancel_requested for job in jobs))
        try:
            outcomes: list[Any] = execute_batch(
                [cast(Graph, graph) for _, graph in batch],
                torch_model,
                on_forward=StepReporter(store, jobs),
                guard=guard,
                job_stopped=lambda index: jobs[index].cancel_requested,
            )
        except (RunCancelled, RunTimedOut) as error:
            outcomes = [error] * len(batch)
        except NDIFError as error:
            self.log.warning("ndif: a batch of %d jobs failed as a whole (%s); running each alone", len(batch), error)
            outcomes = [NotInBatch(str(error))] * len(batch)
        for (job, graph), outcome in zip(batch, outcomes):
            if isinstance(outcome, NotInBatch) and not job.cancel_requested:
                store.update(job, batch=1, step=0)
                outcome = self._alone(job, graph, torch_model)
            self._finish(job, outcome)

    def _guard(self, should_stop: Callable[[], bool]) -> RunGuard:
        """A run's guard: `should_stop`, and this server's time and memory limits for a job."""
        return RunGuard(should_stop, self.limits.max_job_seconds, self.limits.max_memory_bytes)

    def _alone(self, job: Job, request: Request, torch_model: torch.nn.Module) -> RunResult | BaseException:
        """Run one job (a graph or a session) by itself: its result, or the error that ended it."""
        guard = self._guard(lambda: job.cancel_requested or self.stopping)
        try:
            return run_request(request, torch_model, on_forward=StepReporter(self.store, [job]), guard=guard)
        except Exception as error:
            return error

    def _finish(self, job: Job, outcome: RunResult | BaseException) -> None:
        """Write a job's result, or record how it ended."""
        store = self.store
        try:
            if isinstance(outcome, BaseException):
                raise outcome
            check_result_size(outcome, self.limits.max_result_bytes)
            store.update(job, phase="writing result", step=outcome.forward_calls)
            written = self._write(job, outcome)
            store.update(job, status="done", phase="done", result_bytes=written, finished=time.time())
        except RunCancelled:
            if self.stopping and not job.cancel_requested:
                self.log.warning("ndif job %s stopped with the server at step %d", job.id, job.step)
                return
            store.update(job, status="cancelled", phase="cancelled", finished=time.time())
        except Exception as error:
            if not isinstance(error, NDIFError):
                self.log.error("ndif job %s failed:\n%s", job.id, "".join(traceback.format_exception(error)))
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

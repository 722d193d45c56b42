"""The gateway backend: each served model lives in warmed kernels (its replicas) on a Jupyter Kernel Gateway (the
GPU host); batches of jobs go to a free one as data, and each job's result comes back in checked chunks."""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import json
import time
from dataclasses import dataclass
from typing import Any

from ndif_jupyter.ir.session import Request
from ndif_jupyter.protocol.limits import Limits
from ndif_jupyter.protocol.request import encode_request

from ..jobs import Job, JobStore
from ..worker import CHUNK_BYTES, COMM_TARGET
from .base import Backend
from .kernel_client import GatewayError, KernelClient, KernelDied


@dataclass(frozen=True)
class GatewaySettings:
    url: str
    token: str
    kernel_name: str
    request_timeout: float
    warm_timeout: float
    job_timeout: float
    ca_certs: str = ""


Replica = tuple[str, int]
"""One copy of a served model: its name and its replica number."""


class GatewayBackend(Backend):
    """Forwards validated jobs to warmed kernels on the gateway: `replicas` kernels per model, each running one batch
    at a time; a kernel that is free takes the model's next batch, so batches go to the least-loaded replica."""

    def __init__(
        self,
        models: list[str],
        store: JobStore,
        settings: GatewaySettings,
        device_map: Any,
        limits: Limits,
        log: Any,
        batch_jobs: int = 1,
        replicas: int = 1,
    ):
        super().__init__(models, store, limits, batch_jobs)
        self.settings = settings
        self.device_map = device_map
        self.log = log
        self.replicas = max(1, replicas)
        self._kernels: dict[Replica, KernelClient] = {}
        self._comms: dict[Replica, str] = {}
        self._batches: dict[Replica, list[Job]] = {}
        self._ready: dict[str, asyncio.Event] = {}
        self._consumers: dict[Replica, asyncio.Task] = {}
        self._interrupts: set[asyncio.Task] = set()

    def loaded(self, name: str) -> bool:
        return any(self._alive((name, replica)) for replica in range(self.replicas))

    def _alive(self, replica: Replica) -> bool:
        kernel = self._kernels.get(replica)
        return kernel is not None and kernel.alive

    def kernel_id(self, name: str) -> str | None:
        """The gateway's id of the first kernel that serves model `name`, once one was started."""
        return next(iter(self.kernel_ids(name)), None)

    def kernel_ids(self, name: str) -> list[str]:
        """The gateway's ids of the kernels started for model `name`, by replica."""
        found = [self._kernels.get((name, replica)) for replica in range(self.replicas)]
        return [kernel.kernel_id for kernel in found if kernel is not None and kernel.kernel_id is not None]

    def _queued(self, name: str) -> None:
        self._ready.setdefault(name, asyncio.Event()).set()
        for replica in range(self.replicas):
            consumer = self._consumers.get((name, replica))
            if consumer is None or consumer.done():
                self._consumers[(name, replica)] = asyncio.ensure_future(self._consume((name, replica)))

    def _stop_running(self, job: Job) -> None:
        for replica, jobs in self._batches.items():
            if job in jobs and self._alive(replica) and replica in self._comms:
                task = asyncio.ensure_future(self._interrupt(replica))
                self._interrupts.add(task)  # the loop keeps only a weak reference to a task
                task.add_done_callback(self._interrupts.discard)

    async def stopped(self) -> None:
        """Return once every kernel of this backend was asked to stop (the gateway would keep them, and their models,
        until culled)."""
        await asyncio.gather(*(kernel.stopped() for kernel in self._kernels.values()))

    def shutdown(self) -> None:
        super().shutdown()
        for consumer in self._consumers.values():
            consumer.cancel()
        for kernel in self._kernels.values():
            kernel.shutdown()

    # ----- one replica's batches, one at a time, in fair order -----
    async def _consume(self, replica: Replica) -> None:
        name = replica[0]
        ready = self._ready[name]
        while True:
            batch = self.next_batch(name)
            if not batch:
                ready.clear()
                await ready.wait()
                continue
            ready.set()  # other replicas look for more waiting jobs
            jobs = [job for job, _ in batch]
            self.started(name, jobs)
            self._batches[replica] = jobs
            try:
                while batch:
                    batch = await self._run(batch, replica)
            finally:
                self._batches.pop(replica, None)
                self.ended(name, jobs)

    async def _run(self, batch: list[tuple[Job, Request]], replica: Replica) -> list[tuple[Job, Request]]:
        """Run a batch on a replica; the jobs to run again (those interrupted with the batch for another's cancel)."""
        store = self.store
        batch = [(job, graph) for job, graph in batch if not job.cancel_requested]
        if not batch:
            return []
        jobs = [job for job, _ in batch]
        for job in jobs:
            store.update(job, status="running", phase="starting kernel", started=time.time(), batch=len(batch))
        try:
            collectors = await self._attempt(batch, replica)
            if collectors is None:
                self._discard(replica)
                collectors = await self._attempt(batch, replica)
            if collectors is None:
                raise GatewayError("the worker in the gateway kernel is gone and could not be started again")
        except GatewayError as error:
            if isinstance(error, KernelDied) or not self._alive(replica):
                self._discard(replica)
                message = f"{error}; the next job starts a fresh kernel"
            else:
                message = str(error)
            for job in jobs:
                self._gateway_failure(job, message, job.phase)
            return []
        again = []
        for (job, graph), collector in zip(batch, collectors):
            if collector.outcome == "cancelled" and not job.cancel_requested:
                collector.discard()
                store.update(job, step=0)
                again.append((job, graph))
            elif collector.outcome == "cancelled" or job.cancel_requested:
                collector.discard()
                store.update(job, status="cancelled", phase="cancelled", finished=time.time())
            elif collector.outcome == "error":
                collector.discard()
                store.update(job, status="error", phase="failed", error=collector.error, finished=time.time())
            else:
                try:
                    size = collector.store_result()
                except GatewayError as error:
                    self._gateway_failure(job, str(error), "transferring")
                    continue
                store.update(job, status="done", phase="done", result_bytes=size, finished=time.time())
        return again

    def _gateway_failure(self, job: Job, message: str, phase: str) -> None:
        error = {"type": "GatewayError", "message": message, "hint": None, "source": None, "phase": phase}
        self.store.update(job, status="error", phase="failed", finished=time.time(), error=error)

    async def _attempt(self, batch: list[tuple[Job, Request]], replica: Replica) -> list[_ResultCollector] | None:
        """Send the batch to the replica's warm kernel and wait for it; None when the kernel had lost its worker
        before the batch began (it died or restarted while idle), so that the batch can go to a fresh kernel."""
        jobs = [job for job, _ in batch]
        kernel, comm = await self._warm(replica, jobs)
        collectors = {job.id: _ResultCollector(job, self.store) for job in jobs}
        for job in jobs:
            if job.cancel_requested:
                collectors[job.id].outcome = "cancelled"
        batch = [(job, graph) for job, graph in batch if not job.cancel_requested]
        if not batch:
            return [collectors[job.id] for job in jobs]
        for job, graph in batch:
            self.store.update(job, phase="sending request")
            request = memoryview(encode_request(graph, job.model))
            for start in range(0, len(request), CHUNK_BYTES):
                kernel.send_comm(comm, {"kind": "request-part", "job": job.id}, [request[start : start + CHUNK_BYTES]])
            self.store.update(job, phase="running")

        def receive(data: dict, buffers: list) -> None:
            collector = collectors.get(data.get("job", ""))
            if collector is not None:
                collector.receive(data, buffers)

        ids = [job.id for job, _ in batch]
        try:
            reply = await kernel.execute(f"__ndif_worker__.run({ids!r})", self.settings.job_timeout, receive)
        except KernelDied:
            heard = any(collector.heard for collector in collectors.values())
            for collector in collectors.values():
                collector.discard()
            if heard:
                raise
            return None
        except BaseException:
            for collector in collectors.values():
                collector.discard()
            raise
        heard = any(collector.heard for collector in collectors.values())
        if reply.get("status") == "error" and reply.get("ename") == "NameError" and not heard:
            return None
        return [collectors[job.id] for job in jobs]

    async def _warm(self, replica: Replica, jobs: list[Job]) -> tuple[KernelClient, str]:
        """The replica's kernel, started and with the model loaded, reusing a live one."""
        name = replica[0]
        kernel = self._kernels.get(replica)
        if kernel is not None and kernel.alive:
            return kernel, self._comms[replica]
        self._discard(replica)
        settings = self.settings
        kernel = KernelClient(
            settings.url, settings.token, settings.kernel_name, settings.request_timeout, settings.ca_certs
        )
        self._kernels[replica] = kernel
        self.log.info("ndif: starting kernel %d for %s on the gateway %s", replica[1], name, settings.url)
        await kernel.start()
        self.log.info("ndif: gateway kernel %s started; loading %s", kernel.kernel_id, name)
        for job in jobs:
            self.store.update(job, phase="loading model")
        config = {"model": name, "device_map": self.device_map, "limits": dataclasses.asdict(self.limits)}
        code = (
            "import json, ndif_server.worker as __ndif_worker__\n"
            f"__ndif_worker__.start(json.loads({json.dumps(config)!r}))"
        )
        reply = await kernel.execute(code, settings.warm_timeout)
        if reply.get("status") != "ok":
            self._discard(replica)
            raise GatewayError(
                f"loading {name} in the gateway kernel failed: {reply.get('ename')}: {reply.get('evalue')}"
            )
        self._comms[replica] = kernel.open_comm(COMM_TARGET)
        return kernel, self._comms[replica]

    def _discard(self, replica: Replica) -> None:
        kernel = self._kernels.pop(replica, None)
        self._comms.pop(replica, None)
        if kernel is not None:
            self.log.info(
                "ndif: stopping gateway kernel %s of %s (%s)",
                kernel.kernel_id,
                replica[0],
                kernel.failure or "replaced",
            )
            kernel.shutdown()

    async def _interrupt(self, replica: Replica) -> None:
        kernel = self._kernels.get(replica)
        try:
            if kernel is not None:
                await kernel.interrupt()
        except GatewayError as error:
            self.log.warning("ndif: interrupting the gateway kernel of %s failed: %s", replica[0], error)


class _ResultCollector:
    """Progress, errors and result chunks sent by the worker for one job. Chunks go straight to a partial result
    file, hashed as they come; the file becomes the job's result only once its size and digest are right."""

    def __init__(self, job: Job, store: JobStore):
        self.job = job
        self.store = store
        self.outcome: str | None = None
        self.error: dict | None = None
        self.expected: dict | None = None
        self.heard = False
        self.received = 0
        self._digest = hashlib.sha256()
        self._path = store.result_path(job.id)
        self._partial = self._path.with_name(self._path.name + ".partial")
        self._file: Any = None

    def receive(self, data: dict, buffers: list) -> None:
        self.heard = True
        kind = data.get("kind")
        if kind == "step":
            self.store.update(self.job, step=self.job.capped_step(data["step"]))
        elif kind == "result-part":
            if self._file is None:
                self.store.update(self.job, phase="transferring")
                self._file = open(self._partial, "wb")  # noqa: SIM115 (written chunk by chunk, closed in finish)
            for buffer in buffers:
                self._file.write(buffer)
                self._digest.update(buffer)
                self.received += len(buffer)
        elif kind == "result-end":
            self.outcome, self.expected = "result", data
        elif kind == "error":
            self.outcome, self.error = "error", data.get("error")
        elif kind == "cancelled":
            self.outcome = "cancelled"

    def store_result(self) -> int:
        """Check the received result and make it the job's result file; returns its size."""
        self.close()
        if self.outcome != "result" or self.expected is None or self._file is None:
            raise GatewayError("the gateway kernel finished the job without sending its result")
        if self.received != self.expected["bytes"] or self._digest.hexdigest() != self.expected["sha256"]:
            self.discard()
            raise GatewayError(
                f"the result arrived damaged: {self.received} of {self.expected['bytes']} bytes, or a different digest"
            )
        self._partial.replace(self._path)
        return self.received

    def close(self) -> None:
        if self._file is not None and not self._file.closed:
            self._file.close()

    def discard(self) -> None:
        """Drop what arrived of a result that will not be used."""
        self.close()
        self._partial.unlink(missing_ok=True)

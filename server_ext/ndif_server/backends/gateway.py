"""The gateway backend: each served model lives in one warmed kernel on a Jupyter Kernel Gateway (the GPU host);
jobs go to it as data, and results come back in checked chunks."""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import json
import time
from dataclasses import dataclass
from typing import Any

from ndif_jupyter.ir.graph import Graph
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


class GatewayBackend(Backend):
    """Forwards validated jobs to a warmed kernel per model on the gateway, one job at a time per model."""

    def __init__(
        self, models: list[str], store: JobStore, settings: GatewaySettings, device_map: Any, limits: Limits, log: Any
    ):
        super().__init__(models, store)
        self.settings = settings
        self.device_map = device_map
        self.limits = limits
        self.log = log
        self._kernels: dict[str, KernelClient] = {}
        self._comms: dict[str, str] = {}
        self._ready: dict[str, asyncio.Event] = {}
        self._consumers: dict[str, asyncio.Task] = {}
        self._interrupts: set[asyncio.Task] = set()

    def loaded(self, name: str) -> bool:
        kernel = self._kernels.get(name)
        return kernel is not None and kernel.alive

    def kernel_id(self, name: str) -> str | None:
        """The gateway's id of the kernel that serves model `name`, once one was started."""
        kernel = self._kernels.get(name)
        return kernel.kernel_id if kernel is not None else None

    def _queued(self, name: str) -> None:
        self._ready.setdefault(name, asyncio.Event()).set()
        consumer = self._consumers.get(name)
        if consumer is None or consumer.done():
            self._consumers[name] = asyncio.ensure_future(self._consume(name))

    def _stop_running(self, job: Job) -> None:
        if self.running.get(job.model) is job and self.loaded(job.model):
            task = asyncio.ensure_future(self._interrupt(job.model))
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

    # ----- one model's jobs, one at a time in fair order -----
    async def _consume(self, name: str) -> None:
        ready = self._ready[name]
        while True:
            taken = self.next_job(name)
            if taken is None:
                ready.clear()
                await ready.wait()
                continue
            job, graph = taken
            self.running[name] = job
            try:
                await self._run(job, graph)
            finally:
                self.running.pop(name, None)

    async def _run(self, job: Job, graph: Graph) -> None:
        store = self.store
        store.update(job, status="running", phase="starting kernel", started=time.time())
        try:
            collector = await self._attempt(job, graph)
            if collector is None:
                self._discard(job.model)
                collector = await self._attempt(job, graph)
            if collector is None:
                raise GatewayError("the worker in the gateway kernel is gone and could not be started again")
            if collector.outcome == "cancelled" or job.cancel_requested:
                collector.discard()
                store.update(job, status="cancelled", phase="cancelled", finished=time.time())
            elif collector.outcome == "error":
                collector.discard()
                store.update(job, status="error", phase="failed", error=collector.error, finished=time.time())
            else:
                size = collector.store_result()
                store.update(job, status="done", phase="done", result_bytes=size, finished=time.time())
        except GatewayError as error:
            failed_in = job.phase
            if isinstance(error, KernelDied) or not self.loaded(job.model):
                self._discard(job.model)
                message = f"{error}; the next job starts a fresh kernel"
            else:
                message = str(error)
            store.update(
                job,
                status="error",
                phase="failed",
                finished=time.time(),
                error={"type": "GatewayError", "message": message, "hint": None, "source": None, "phase": failed_in},
            )

    async def _attempt(self, job: Job, graph: Graph) -> _ResultCollector | None:
        """Send the job to the model's warm kernel and wait for it; None when the kernel had lost its worker before
        the job began (it died or restarted while idle), so that the job can go to a fresh kernel."""
        kernel, comm = await self._warm(job)
        collector = _ResultCollector(job, self.store)
        if job.cancel_requested:
            collector.outcome = "cancelled"
            return collector
        self.store.update(job, phase="sending request")
        request = memoryview(encode_request(graph, job.model))
        for start in range(0, len(request), CHUNK_BYTES):
            kernel.send_comm(comm, {"kind": "request-part", "job": job.id}, [request[start : start + CHUNK_BYTES]])
        self.store.update(job, phase="running")
        try:
            reply = await kernel.execute(
                f"__ndif_worker__.run({job.id!r})", self.settings.job_timeout, collector.receive
            )
        except KernelDied:
            collector.discard()
            if collector.heard:
                raise
            return None
        except BaseException:
            collector.discard()
            raise
        if reply.get("status") == "error" and reply.get("ename") == "NameError" and not collector.heard:
            return None
        return collector

    async def _warm(self, job: Job) -> tuple[KernelClient, str]:
        """The model's kernel, started and with the model loaded, reusing a live one."""
        name = job.model
        kernel = self._kernels.get(name)
        if kernel is not None and kernel.alive:
            return kernel, self._comms[name]
        self._discard(name)
        settings = self.settings
        kernel = KernelClient(
            settings.url, settings.token, settings.kernel_name, settings.request_timeout, settings.ca_certs
        )
        self._kernels[name] = kernel
        self.log.info("ndif: starting a kernel for %s on the gateway %s", name, settings.url)
        await kernel.start()
        self.log.info("ndif: gateway kernel %s started; loading %s", kernel.kernel_id, name)
        self.store.update(job, phase="loading model")
        config = {"model": name, "device_map": self.device_map, "limits": dataclasses.asdict(self.limits)}
        code = (
            "import json, ndif_server.worker as __ndif_worker__\n"
            f"__ndif_worker__.start(json.loads({json.dumps(config)!r}))"
        )
        reply = await kernel.execute(code, settings.warm_timeout)
        if reply.get("status") != "ok":
            self._discard(name)
            raise GatewayError(
                f"loading {name} in the gateway kernel failed: {reply.get('ename')}: {reply.get('evalue')}"
            )
        self._comms[name] = kernel.open_comm(COMM_TARGET)
        return kernel, self._comms[name]

    def _discard(self, name: str) -> None:
        kernel = self._kernels.pop(name, None)
        self._comms.pop(name, None)
        if kernel is not None:
            self.log.info(
                "ndif: stopping gateway kernel %s of %s (%s)", kernel.kernel_id, name, kernel.failure or "replaced"
            )
            kernel.shutdown()

    async def _interrupt(self, name: str) -> None:
        kernel = self._kernels.get(name)
        try:
            if kernel is not None:
                await kernel.interrupt()
        except GatewayError as error:
            self.log.warning("ndif: interrupting the gateway kernel of %s failed: %s", name, error)


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
            self.store.update(self.job, step=data["step"])
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

"""NDIFCore: what one NDIF server keeps (job store, backend, admissions) and its rules per user, behind every API."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from traitlets import TraitError

from ndif_jupyter.protocol.admission import Refusal

from .admissions import Admissions
from .backends.base import Backend
from .backends.gateway import GatewayBackend, GatewaySettings
from .backends.local import LocalBackend
from .identity import Caller
from .jobs import FINISHED, Job, JobStore
from .settings import NDIFSettings


class NDIFCore:
    """The job store, the backend and the admissions made from `settings`, shared by the server extension and the
    hub service; and what every API answers per user: which jobs a caller sees, queue places, the caps (429)."""

    def __init__(self, settings: NDIFSettings, log: Any):
        self.settings = settings
        self.log = log
        self.limits = settings.limits
        self.store = JobStore(
            Path(settings.response_path).expanduser(),
            keep=settings.keep_jobs,
            log=log,
            keep_bytes_per_owner=settings.max_stored_bytes_per_user,
        )
        self.backend = self._make_backend()
        self.admissions = Admissions(settings.admission_threads, settings.max_admitting)

    def _make_backend(self) -> Backend:
        settings = self.settings
        if settings.backend == "local":
            return LocalBackend(
                settings.models,
                self.store,
                settings.device_map,
                self.limits,
                self.log,
                batch_jobs=settings.batch_jobs,
                replica_device_maps=list(settings.replica_device_maps)
                or [settings.device_map] * max(1, settings.replicas),
            )
        if not settings.gateway_url:
            raise TraitError("backend = 'gateway' needs gateway_url, the Kernel Gateway's URL")
        gateway = GatewaySettings(
            settings.gateway_url,
            settings.gateway_auth_token,
            settings.gateway_kernel_name,
            settings.gateway_request_timeout,
            settings.gateway_warm_timeout,
            settings.gateway_job_timeout,
            settings.gateway_ca_certs,
        )
        return GatewayBackend(
            settings.models,
            self.store,
            gateway,
            settings.device_map,
            self.limits,
            self.log,
            batch_jobs=settings.batch_jobs,
            replicas=max(1, settings.replicas),
        )

    def bind_loop(self, loop: asyncio.AbstractEventLoop) -> None:
        self.store.bind_loop(loop)

    async def shutdown(self, seconds: float = 10.0) -> None:
        """Stop taking jobs and wait (up to `seconds`) until the backend has let go of what it holds elsewhere."""
        self.backend.shutdown()
        self.admissions.shutdown()
        try:
            await asyncio.wait_for(self.backend.stopped(), seconds)
        except asyncio.TimeoutError:
            self.log.warning("ndif: the backend did not stop in %g s", seconds)

    # ----- what a caller sees -----
    def visible_job(self, caller: Caller, job_id: str) -> Job | None:
        """The job, if it exists and `caller` may see it; another user's job is as unknown as a missing one."""
        job = self.store.get(job_id)
        return job if job is not None and caller.sees(job) else None

    def job_documents(self, caller: Caller) -> list[dict[str, Any]]:
        """The jobs `caller` sees, oldest first, each with its place in its model's queue."""
        places = self.backend.queue_places()
        return [self.job_document(job, places) for job in self.store.all() if caller.sees(job)]

    def job_document(self, job: Job, places: dict[str, int] | None = None) -> dict[str, Any]:
        """The job as JSON with its `queue_position`, from `places` or, for a waiting job, its own model's queue."""
        document = job.document()
        if places is None:
            places = self.backend.queue_places(job.model) if job.status == "queued" else {}
        document["queue_position"] = places.get(job.id)
        return document

    # ----- caps -----
    def check_caps(self, caller: Caller, cost: dict[str, int] | None = None, model: str | None = None) -> None:
        """Refuse (429) a user with too many unfinished jobs or too many result bytes to come, or a server with too
        many waiting. `cost` and `model`: the new job's, once known (before, only the bound over all models)."""
        settings = self.settings
        unfinished = [job for job in self.store.all() if job.status not in FINISHED]
        mine = [job for job in unfinished if job.owner == caller.name]
        if len(mine) >= settings.max_queued_per_user:
            raise Refusal(
                429,
                f"you have {len(mine)} jobs waiting or running, the limit per user (max_queued_per_user); retry "
                "when one has finished, or cancel some",
            )
        waiting = [job for job in unfinished if job.status == "queued"]
        if len(waiting) >= settings.max_queued_jobs * len(self.backend.models):
            raise Refusal(
                429, f"{len(waiting)} jobs are waiting on this server, its limit (max_queued_jobs); retry in a minute"
            )
        for_model = sum(job.model == model for job in waiting)
        if model is not None and for_model >= settings.max_queued_jobs:
            raise Refusal(
                429, f"{for_model} jobs are waiting for this model, its limit (max_queued_jobs); retry in a minute"
            )
        if cost is None:
            return
        coming = sum((job.cost or {}).get("saved_bytes", 0) for job in mine) + cost.get("saved_bytes", 0)
        if coming > settings.max_stored_bytes_per_user:
            raise Refusal(
                429,
                f"the results of your unfinished jobs and this one would hold {coming:,} bytes, over the "
                f"{settings.max_stored_bytes_per_user:,} bytes kept per user (max_stored_bytes_per_user); retry "
                "when your running jobs have finished, or save less",
            )

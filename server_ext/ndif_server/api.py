"""The REST API's endpoints, the same for the server extension and the hub service: models, jobs, a job's status
and result, cancelling. Each is a mixin over a base handler that authenticates the request and says who sent it."""

from __future__ import annotations

import asyncio
import json
from typing import Any, cast

from tornado import web
from tornado.http1connection import HTTP1Connection

from ndif_jupyter.client import CLIENT_HEADER
from ndif_jupyter.errors import NDIFError
from ndif_jupyter.ir.session import steps_of
from ndif_jupyter.protocol.admission import Refusal, too_large_message
from ndif_jupyter.protocol.container import CONTENT_TYPE
from ndif_jupyter.protocol.limits import cut

from .admissions import RETRY_SECONDS
from .core import NDIFCore
from .identity import Caller, client_of
from .jobs import FINISHED, Job, StoreUnavailable
from .prompt_preview import prompt_preview

LONGEST_WAIT = 30.0
CHUNK = 4 * 1024 * 1024
DISCARD_AT_MOST = 4 * 1024**3
"""A body declared larger than this is refused before it is read, and its connection closed; a smaller one over
the limit is read and let go, so that the client can read the 413 that explains it."""
JOB_ID = r"(?P<job_id>[0-9a-f]{32})"


class NDIFApi(web.RequestHandler):
    """What every endpoint needs from its base handler: `core`, and `caller` (set once the request is
    authenticated, before the method runs), and a JSON `write_error`; JSON answers; `Retry-After` on a 429."""

    core: NDIFCore
    caller: Caller
    retry_after: int | None = None

    def write_error(self, status_code: int, **kwargs: Any) -> None:
        """The base handler's JSON error body, with `Retry-After` on a 429 (headers set before the error are
        cleared, so it is set here)."""
        if status_code == 429 and self.retry_after is not None:
            self.set_header("Retry-After", str(self.retry_after))
        super().write_error(status_code, **kwargs)

    def write_json(self, document: Any, status: int = 200) -> None:
        self.set_status(status)
        self.set_header("Content-Type", "application/json")
        self.finish(json.dumps(document))

    def refuse(self, refusal: Refusal) -> web.HTTPError:
        if refusal.status == 429:
            self.retry_after = refusal.retry_after or RETRY_SECONDS
        return web.HTTPError(refusal.status, refusal.message)

    def job_or_404(self, job_id: str) -> Job:
        """The caller's job (any job, for an admin); another user's answers 404 exactly as an unknown one."""
        job = self.core.visible_job(self.caller, job_id)
        if job is None:
            raise web.HTTPError(404, f"there is no job {job_id} on this server")
        return job

    async def in_thread(self, function, *args):
        return await asyncio.get_running_loop().run_in_executor(None, function, *args)


class ModelsApi(NDIFApi):
    async def get(self) -> None:
        """The served models (class, size, loaded or not, jobs waiting and running, module tree), this server's
        limits, and who the caller is."""
        backend = self.core.backend
        try:
            models = [await self.in_thread(backend.describe, name) for name in backend.models]
        except NDIFError as error:
            raise web.HTTPError(500, f"a served model cannot be read: {error}") from None
        self.write_json(
            {
                "backend": self.core.settings.backend,
                "models": models,
                "limits": self.core.settings.limits_document(),
                "user": self.caller.document(),
            }
        )


class JobsApi(NDIFApi):
    """GET lists the caller's jobs; POST takes a request body as it streams in, never holding more than the limit.
    (Its handler classes are made with `tornado.web.stream_request_body`.)"""

    body: bytearray
    declared_too_large: bool

    async def prepare(self) -> None:
        authenticated = super().prepare()  # the base handler's, which authenticates
        if authenticated is not None:
            await authenticated
        self.body = bytearray()
        self.declared_too_large = False
        if self.request.method != "POST":
            return
        limit = self.core.limits.max_request_bytes
        try:
            declared = int(self.request.headers.get("Content-Length", "0"))
        except ValueError:
            raise web.HTTPError(400, "Content-Length is not a number") from None
        if declared > DISCARD_AT_MOST:
            raise web.HTTPError(413, too_large_message(declared, self.core.limits))
        self.declared_too_large = declared > limit
        connection = cast(HTTP1Connection, self.request.connection)
        connection.set_max_body_size(max(declared, limit + 1))

    def data_received(self, chunk: bytes) -> None:
        """Keep the body while it is within the limit; past it, let the rest go by unkept (answered 413 at its end)."""
        if self.declared_too_large:
            return
        self.body += chunk
        if len(self.body) > self.core.limits.max_request_bytes:
            self.declared_too_large = True
            self.body = bytearray()

    async def get(self) -> None:
        """The caller's jobs (everyone's, for an admin), oldest first, with their places in the queues."""
        self.write_json({"jobs": self.core.job_documents(self.caller)})

    async def post(self) -> None:
        """Check a request and queue it; answers with the job at once (202), or a short 4xx naming the problem."""
        core, caller = self.core, self.caller
        try:
            if self.declared_too_large:
                raise Refusal(413, too_large_message(None, core.limits))
            core.check_caps(caller)
            backend = core.backend
            admission = await core.admissions.admit(caller.name, self.body, self._served, core.limits, backend.models)
            self.body = bytearray()
            cost = admission.cost.document()
            core.check_caps(caller, cost, admission.model.name)
        except Refusal as refusal:
            raise self.refuse(refusal) from None
        request = admission.request
        client = client_of(self.request.headers.get(CLIENT_HEADER))
        prompt = prompt_preview(request, admission.model.tokenizer)
        origin = admission.origin.document() if admission.origin is not None else None
        try:
            job = core.store.new(
                admission.model.name, request.kind, steps_of(request), caller.name, cost, client, prompt, origin
            )
        except StoreUnavailable as error:
            raise web.HTTPError(503, cut(str(error), 600)) from None
        backend.submit(job, request)
        self.set_header("Location", self.request.path.rstrip("/") + "/" + job.id)
        self.write_json(core.job_document(job), status=202)

    def _served(self, requested: str):
        backend = self.core.backend
        name = backend.served_name(requested)
        return None if name is None else backend.model(name)


class JobApi(NDIFApi):
    async def get(self, job_id: str) -> None:
        """A job's status, timings and queue place. `?wait=S` answers when the job changes, or after S seconds (at
        most 30); with `&until=finished`, when it finishes."""
        job = self.job_or_404(job_id)
        try:
            wait = min(float(self.get_query_argument("wait", "0")), LONGEST_WAIT)
        except ValueError:
            raise web.HTTPError(400, "wait is a number of seconds") from None
        until = self.get_query_argument("until", "change")
        if until not in ("change", "finished"):
            raise web.HTTPError(400, "until is `change` or `finished`")
        if wait > 0 and job.status not in FINISHED:
            await self.core.store.wait_for_change(job, wait, until_finished=until == "finished")
        self.write_json(self.core.job_document(job))

    async def delete(self, job_id: str) -> None:
        """Cancel a queued or running job (202); remove a finished one and its result (204)."""
        job = self.job_or_404(job_id)
        if job.status in FINISHED:
            try:
                self.core.store.remove(job.id)
            except StoreUnavailable as error:
                raise web.HTTPError(503, cut(str(error), 600)) from None
            self.set_status(204)
            self.finish()
            return
        self.core.backend.cancel(job)
        self.write_json(self.core.job_document(job), status=202)


class JobResultApi(NDIFApi):
    async def get(self, job_id: str) -> None:
        """The result of a done job: the binary container of `ndif_jupyter.protocol` (saved values, output ids)."""
        job = self.job_or_404(job_id)
        if job.status != "done":
            raise web.HTTPError(409, f"job {job_id} is {job.status}; a result exists only once it is done")
        path = self.core.store.result_path(job.id)
        if job.expired or not path.is_file():
            reason = "it expired, your newer results filling the storage per user" if job.expired else "it is gone"
            raise web.HTTPError(410, f"the result of job {job_id} is no longer on this server ({reason})")
        self.set_header("Content-Type", CONTENT_TYPE)
        self.set_header("Content-Length", str(path.stat().st_size))
        with open(path, "rb") as handle:
            while chunk := handle.read(CHUNK):
                self.write(chunk)
                await self.flush()
        self.finish()


def routes(prefix: str, base: type) -> list[tuple[str, type]]:
    """The API's routes under `prefix` (ending in "/"), each endpoint made over the handler class `base`."""

    def over(endpoint: type, streaming: bool = False) -> type:
        handler = type(f"{endpoint.__name__}Handler", (endpoint, base), {})
        return web.stream_request_body(handler) if streaming else handler

    return [
        (rf"{prefix}models/?", over(ModelsApi)),
        (rf"{prefix}jobs/?", over(JobsApi, streaming=True)),
        (rf"{prefix}jobs/{JOB_ID}/?", over(JobApi)),
        (rf"{prefix}jobs/{JOB_ID}/result/?", over(JobResultApi)),
    ]

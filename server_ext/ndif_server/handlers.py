"""The REST API under `{base_url}ndif/api/`: models, jobs, a job's status and result, and cancelling a job."""

from __future__ import annotations

import asyncio
import json
from typing import Any, cast

from jupyter_server.auth.decorator import authorized
from jupyter_server.base.handlers import APIHandler
from tornado import web
from tornado.http1connection import HTTP1Connection

from ndif_jupyter.errors import NDIFError
from ndif_jupyter.protocol.admission import Refusal, too_large_message
from ndif_jupyter.protocol.container import CONTENT_TYPE
from ndif_jupyter.protocol.limits import cut

from .admissions import RETRY_SECONDS
from .jobs import FINISHED, StoreUnavailable

RESOURCE = "ndif"
TOKEN_HOLDER = "token"
LONGEST_WAIT = 30.0
CHUNK = 4 * 1024 * 1024
DISCARD_AT_MOST = 4 * 1024**3
"""A body declared larger than this is refused before it is read, and its connection closed; a smaller one over
the limit is read and let go, so that the client can read the 413 that explains it."""


class NDIFHandler(APIHandler):
    """Jupyter's authentication (401 without it) and authorization on the resource "ndif" for every endpoint."""

    auth_resource = RESOURCE

    async def prepare(self) -> None:  # type: ignore[override]  # as APIHandler.prepare, which narrows JupyterHandler's
        try:
            await super().prepare()
        except web.HTTPError as error:
            if error.status_code == 403 and not self.current_user:
                raise self._unauthenticated() from None
            raise
        if not self.current_user:
            raise self._unauthenticated()

    def _unauthenticated(self) -> web.HTTPError:
        self.set_header("WWW-Authenticate", 'token realm="jupyter"')
        return web.HTTPError(
            401, "Jupyter authentication is needed: send the server's token (header `Authorization: token <token>`)."
        )

    retry_after: int | None = None

    def write_error(self, status_code: int, **kwargs: Any) -> None:
        """Jupyter's JSON error body, with `Retry-After` on a 429 (headers set before the error are cleared)."""
        if status_code == 429 and self.retry_after is not None:
            self.set_header("Retry-After", str(self.retry_after))
        super().write_error(status_code, **kwargs)

    @property
    def identity(self) -> str:
        """Who sends the request, for owning jobs and for the limits per user. Jupyter makes up a new anonymous
        user for every request that presents the server's token; that token identifies one holder, so all of its
        requests are one identity."""
        if self.token_authenticated:
            return TOKEN_HOLDER
        return self.current_user.username

    @property
    def ndif(self) -> Any:
        return self.settings["ndif"]

    def write_json(self, document: Any, status: int = 200) -> None:
        self.set_status(status)
        self.set_header("Content-Type", "application/json")
        self.finish(json.dumps(document))

    def job_or_404(self, job_id: str):
        job = self.ndif.store.get(job_id)
        if job is None:
            raise web.HTTPError(404, f"there is no job {job_id} on this server")
        return job

    async def in_thread(self, function, *args):
        return await asyncio.get_running_loop().run_in_executor(None, function, *args)


class ModelsHandler(NDIFHandler):
    @authorized
    async def get(self) -> None:
        """The served models: class, size, loaded or not, and module tree; and this server's limits."""
        backend = self.ndif.runner
        try:
            models = [await self.in_thread(backend.describe, name) for name in backend.models]
        except NDIFError as error:
            raise web.HTTPError(500, f"a served model cannot be read: {error}") from None
        self.write_json({"backend": self.ndif.backend, "models": models, "limits": self.ndif.limits_document()})


@web.stream_request_body
class JobsHandler(NDIFHandler):
    """GET lists jobs; POST takes a request body as it streams in, never holding more than the server's limit."""

    body: bytearray
    declared_too_large: bool

    async def prepare(self) -> None:  # type: ignore[override]  # as NDIFHandler.prepare
        await super().prepare()
        self.body = bytearray()
        self.declared_too_large = False
        if self.request.method != "POST":
            return
        limit = self.ndif.limits.max_request_bytes
        try:
            declared = int(self.request.headers.get("Content-Length", "0"))
        except ValueError:
            raise web.HTTPError(400, "Content-Length is not a number") from None
        if declared > DISCARD_AT_MOST:
            raise web.HTTPError(413, too_large_message(declared, self.ndif.limits))
        self.declared_too_large = declared > limit
        connection = cast(HTTP1Connection, self.request.connection)
        connection.set_max_body_size(max(declared, limit + 1))

    def data_received(self, chunk: bytes) -> None:
        """Keep the body while it is within the limit; past it, let the rest go by unkept (answered 413 at its end)."""
        if self.declared_too_large:
            return
        self.body += chunk
        if len(self.body) > self.ndif.limits.max_request_bytes:
            self.declared_too_large = True
            self.body = bytearray()

    @authorized
    async def get(self) -> None:
        """Every job this server knows, oldest first."""
        self.write_json({"jobs": [job.document() for job in self.ndif.store.all()]})

    @authorized
    async def post(self) -> None:
        """Check a request and queue it; answers with the job at once (202), or a short 4xx naming the problem."""
        ndif = self.ndif
        user = self.identity
        try:
            if self.declared_too_large:
                raise Refusal(413, too_large_message(None, ndif.limits))
            self._check_queues(user)
            backend = ndif.runner
            admission = await ndif.admissions.admit(user, self.body, self._served, ndif.limits, backend.models)
            self.body = bytearray()
            self._check_queues(user)
        except Refusal as refusal:
            if refusal.status == 429:
                self.retry_after = RETRY_SECONDS
            raise web.HTTPError(refusal.status, refusal.message) from None
        graph = admission.graph
        steps = graph.options["max_new_tokens"] if graph.kind == "generate" else 1
        try:
            job = ndif.store.new(admission.model.name, graph.kind, steps, user, admission.cost.document())
        except StoreUnavailable as error:
            raise web.HTTPError(503, cut(str(error), 600)) from None
        backend.submit(job, graph)
        self.set_header("Location", self.request.path.rstrip("/") + "/" + job.id)
        self.write_json(job.document(), status=202)

    def _served(self, requested: str):
        backend = self.ndif.runner
        name = backend.served_name(requested)
        return None if name is None else backend.model(name)

    def _check_queues(self, user: str) -> None:
        """Refuse (429) a user with too many unfinished jobs, or a server with too many waiting."""
        ndif = self.ndif
        unfinished = [job for job in ndif.store.all() if job.status not in FINISHED]
        mine = sum(job.owner == user for job in unfinished)
        if mine >= ndif.max_queued_per_user:
            raise Refusal(
                429,
                f"you have {mine} jobs waiting or running, this server's limit per user; wait for some to finish "
                "(or cancel them) and send this again",
            )
        waiting = sum(job.status == "queued" for job in unfinished)
        if waiting >= ndif.max_queued_jobs * len(ndif.runner.models):
            raise Refusal(429, f"{waiting} jobs are waiting on this server, its limit; try again in a while")


class JobHandler(NDIFHandler):
    @authorized
    async def get(self, job_id: str) -> None:
        """A job's status and timings. `?wait=S` answers when the job changes, or after S seconds (at most 30);
        with `&until=finished`, when it finishes."""
        job = self.job_or_404(job_id)
        try:
            wait = min(float(self.get_query_argument("wait", "0")), LONGEST_WAIT)
        except ValueError:
            raise web.HTTPError(400, "wait is a number of seconds") from None
        until = self.get_query_argument("until", "change")
        if until not in ("change", "finished"):
            raise web.HTTPError(400, "until is `change` or `finished`")
        if wait > 0 and job.status not in FINISHED:
            await self.ndif.store.wait_for_change(job, wait, until_finished=until == "finished")
        self.write_json(job.document())

    @authorized
    async def delete(self, job_id: str) -> None:
        """Cancel a queued or running job (202); remove a finished one and its result (204)."""
        job = self.job_or_404(job_id)
        if job.status in FINISHED:
            try:
                self.ndif.store.remove(job.id)
            except StoreUnavailable as error:
                raise web.HTTPError(503, cut(str(error), 600)) from None
            self.set_status(204)
            self.finish()
            return
        self.ndif.runner.cancel(job)
        self.write_json(job.document(), status=202)


class JobResultHandler(NDIFHandler):
    @authorized
    async def get(self, job_id: str) -> None:
        """The result of a done job: the binary container of `ndif_jupyter.protocol` (saved values, output ids)."""
        job = self.job_or_404(job_id)
        if job.status != "done":
            raise web.HTTPError(409, f"job {job_id} is {job.status}; a result exists only once it is done")
        path = self.ndif.store.result_path(job.id)
        if not path.is_file():
            raise web.HTTPError(410, f"the result of job {job_id} is no longer on this server")
        self.set_header("Content-Type", CONTENT_TYPE)
        self.set_header("Content-Length", str(path.stat().st_size))
        with open(path, "rb") as handle:
            while chunk := handle.read(CHUNK):
                self.write(chunk)
                await self.flush()
        self.finish()


def handlers() -> list[tuple[str, type]]:
    job = r"(?P<job_id>[0-9a-f]{32})"
    return [
        (r"/ndif/api/models/?", ModelsHandler),
        (r"/ndif/api/jobs/?", JobsHandler),
        (rf"/ndif/api/jobs/{job}/?", JobHandler),
        (rf"/ndif/api/jobs/{job}/result/?", JobResultHandler),
    ]

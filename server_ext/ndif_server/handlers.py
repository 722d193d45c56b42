"""The REST API under `{base_url}ndif/api/`: models, jobs, a job's status and result, and cancelling a job."""

from __future__ import annotations

import asyncio
import json
from typing import Any

from jupyter_server.auth.decorator import authorized
from jupyter_server.base.handlers import APIHandler
from tornado import web

from ndif_jupyter.errors import NDIFError, ProtocolError
from ndif_jupyter.protocol.container import CONTENT_TYPE
from ndif_jupyter.protocol.request import decode_request
from ndif_jupyter.protocol.validation import validate_graph

from .jobs import FINISHED

RESOURCE = "ndif"
LONGEST_WAIT = 30.0
CHUNK = 4 * 1024 * 1024


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


class JobsHandler(NDIFHandler):
    @authorized
    async def get(self) -> None:
        """Every job this server knows, oldest first."""
        self.write_json({"jobs": [job.document() for job in self.ndif.store.all()]})

    @authorized
    async def post(self) -> None:
        """Validate a request and queue it; answers with the job at once (202), or 400 naming the problem."""
        try:
            requested, graph = await self.in_thread(decode_request, self.request.body)
        except ProtocolError as error:
            raise web.HTTPError(400, f"the request is not valid: {error}") from None
        backend = self.ndif.runner
        name = backend.served_name(requested)
        if name is None:
            raise web.HTTPError(
                400, f"the model {requested!r} is not served here; this server serves: {', '.join(backend.models)}"
            )
        try:
            meta_model = (await self.in_thread(backend.model, name)).meta_model
        except NDIFError as error:
            raise web.HTTPError(500, f"the served model {name!r} cannot be read: {error}") from None
        try:
            await self.in_thread(validate_graph, graph, meta_model, self.ndif.limits)
        except ProtocolError as error:
            raise web.HTTPError(400, f"the request is not valid: {error}") from None
        steps = graph.options["max_new_tokens"] if graph.kind == "generate" else 1
        job = self.ndif.store.new(name, graph.kind, steps, self.current_user.username)
        backend.submit(job, graph)
        self.set_header("Location", self.request.path.rstrip("/") + "/" + job.id)
        self.write_json(job.document(), status=202)


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
            self.ndif.store.remove(job.id)
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

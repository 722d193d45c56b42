"""`device_map="server"`: send a graph to the Jupyter server extension, wait with a progress line, fetch the result.

The server extension tells the kernels it starts where it is (`NDIF_SERVER_URL`, including the server's base URL)
and how to authenticate (`NDIF_SERVER_TOKEN`); set both by hand to use a server from elsewhere.
"""

from __future__ import annotations

import json
import os
import sys
import time
import urllib.error
import urllib.request
from typing import Any

from .errors import ExecutionError, NDIFError, RunCancelled, TraceError
from .ir.graph import Graph
from .ir.result import ExecutionResult
from .ir.source import Source
from .protocol.container import CONTENT_TYPE
from .protocol.request import encode_request
from .protocol.result import decode_result

SERVER_URL_ENV = "NDIF_SERVER_URL"
SERVER_TOKEN_ENV = "NDIF_SERVER_TOKEN"
_FINISHED = ("done", "error", "cancelled")
_LONG_POLL_SECONDS = 2


class ServerClient:
    """Talks to one server extension's REST API (`.../ndif/api/`)."""

    def __init__(self, url: str, token: str = "", request_timeout: float = 60.0, quiet_seconds: float | None = 0.5):
        """`quiet_seconds`: show the progress line once a job has taken this long (None: never)."""
        self.url = url if url.endswith("/") else url + "/"
        self.token = token
        self.request_timeout = request_timeout
        self.quiet_seconds = quiet_seconds

    @classmethod
    def from_environment(cls, **options: Any) -> ServerClient:
        """The server this kernel was told about (`NDIF_SERVER_URL`, `NDIF_SERVER_TOKEN`)."""
        url = os.environ.get(SERVER_URL_ENV)
        if not url:
            raise NDIFError(missing_server_message())
        return cls(url, os.environ.get(SERVER_TOKEN_ENV, ""), **options)

    def run(self, graph: Graph, model: str) -> ExecutionResult:
        """Run `graph` on the server's model `model`; the result is what the same run in the kernel gives."""
        job = self._json("POST", "jobs", encode_request(graph, model), CONTENT_TYPE)
        line = _ProgressLine(job["id"], self.quiet_seconds)
        try:
            if self.quiet_seconds and job["status"] not in _FINISHED:
                job = self._json("GET", f"jobs/{job['id']}?wait={self.quiet_seconds}&until=finished")
            while job["status"] not in _FINISHED:
                line.show(job)
                job = self._json("GET", f"jobs/{job['id']}?wait={_LONG_POLL_SECONDS}")
        except KeyboardInterrupt:
            self._request("DELETE", f"jobs/{job['id']}")
            line.finish("cancelled")
            raise
        if job["status"] == "cancelled":
            line.finish("cancelled")
            raise RunCancelled(f"job {job['id']} on the ndif server was cancelled before it finished")
        if job["status"] == "error":
            line.finish("failed")
            raise _job_error(job["error"] or {})
        data = self._request("GET", f"jobs/{job['id']}/result")
        line.finish("done", f": {job['steps']} forward pass{'es' * (job['steps'] != 1)}, {len(data) / 1e6:.1f} MB")
        return decode_result(data)

    def models(self) -> dict[str, Any]:
        """The served models, their module trees and the server's limits."""
        return self._json("GET", "models")

    def jobs(self) -> list[dict[str, Any]]:
        """Every job the server keeps, oldest first, with status and timings."""
        return self._json("GET", "jobs")["jobs"]

    def result(self, job_id: str) -> ExecutionResult:
        """The result of a done job, also one run before this kernel restarted."""
        return decode_result(self._request("GET", f"jobs/{job_id}/result"))

    # ----- HTTP -----
    def _json(self, method: str, path: str, body: bytes | None = None, content_type: str | None = None) -> Any:
        return json.loads(self._request(method, path, body, content_type))

    def _request(self, method: str, path: str, body: bytes | None = None, content_type: str | None = None) -> bytearray:
        request = urllib.request.Request(self.url + path, data=body, method=method)
        if self.token:
            request.add_header("Authorization", f"token {self.token}")
        if content_type:
            request.add_header("Content-Type", content_type)
        try:
            with urllib.request.urlopen(request, timeout=self.request_timeout + _LONG_POLL_SECONDS) as response:
                return _read_body(response)
        except urllib.error.HTTPError as error:
            raise NDIFError(_http_error_message(self.url, error)) from None
        except (urllib.error.URLError, TimeoutError, ConnectionError) as error:
            reason = getattr(error, "reason", error)
            raise NDIFError(
                f"The ndif server at {self.url} cannot be reached ({reason}). Is the Jupyter server running? "
                f"{SERVER_URL_ENV} says where it is."
            ) from None


def _read_body(response: Any) -> bytearray:
    """The whole body in one writable buffer, so that decoded tensors can be views of it instead of copies."""
    length = response.headers.get("Content-Length")
    if length is None:
        return bytearray(response.read())
    body = bytearray(int(length))
    view = memoryview(body)
    received = 0
    while received < len(body):
        count = response.readinto(view[received:])
        if not count:
            raise NDIFError(f"The ndif server's answer ended after {received} of {len(body)} bytes.")
        received += count
    return body


def missing_server_message() -> str:
    return (
        "device_map='server' runs the graph in the Jupyter server extension, and this kernel does not know of one: "
        f"{SERVER_URL_ENV} is not set. Start Jupyter with ndif-jupyter installed (its server extension tells the "
        f"kernels it starts where it is), or set {SERVER_URL_ENV} and {SERVER_TOKEN_ENV}; or use device_map='cpu'."
    )


def _http_error_message(url: str, error: urllib.error.HTTPError) -> str:
    try:
        message = json.loads(error.read() or b"{}").get("message") or error.reason
    except ValueError:
        message = error.reason
    if error.code == 401:
        return f"The ndif server at {url} needs authentication: {SERVER_TOKEN_ENV} is missing or wrong ({message})."
    if error.code == 403:
        return f"The ndif server at {url} does not allow this user to run graphs ({message})."
    if error.code == 400:
        return f"The ndif server refused the graph: {message}"
    return f"The ndif server at {url} answered {error.code}: {message}"


def _job_error(error: dict[str, Any]) -> NDIFError:
    source = error.get("source")
    where = Source(source["file"], source["line"], source.get("text", "")) if source else None
    message = error.get("message") or "the job failed"
    kind = error.get("type")
    if kind == "ExecutionError":
        return ExecutionError(message, where, error.get("hint"))
    if kind == "TraceError":
        return TraceError(message, where, error.get("hint"))
    return NDIFError(f"The job failed on the ndif server: {kind}: {message}")


class _ProgressLine:
    """One line on stderr, rewritten as a job moves, shown once the job has taken `quiet_seconds`."""

    def __init__(self, job_id: str, quiet_seconds: float | None):
        self.job_id = job_id[:8]
        self.quiet_seconds = quiet_seconds
        self.started = time.monotonic()
        self.shown = False

    def show(self, job: dict[str, Any]) -> None:
        elapsed = time.monotonic() - self.started
        if self.quiet_seconds is None or elapsed < self.quiet_seconds:
            return
        detail = job["phase"]
        if job["status"] == "running" and job["phase"] == "running" and job["steps"] > 1:
            detail = f"step {job['step']}/{job['steps']}"
        self._write(f"\rndif server: job {self.job_id} {job['status']} ({detail}), {elapsed:.1f} s")

    def finish(self, outcome: str, detail: str = "") -> None:
        if self.shown:
            elapsed = time.monotonic() - self.started
            self._write(f"\rndif server: job {self.job_id} {outcome} in {elapsed:.1f} s{detail}", end="\n")

    def _write(self, text: str, end: str = "") -> None:
        self.shown = True
        sys.stderr.write(text.ljust(79) + end)
        sys.stderr.flush()

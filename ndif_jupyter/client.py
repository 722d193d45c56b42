"""`device_map="server"`: send a graph to the Jupyter server extension, wait with a progress line, fetch the result.

The server extension tells the kernels it starts where it is (`NDIF_SERVER_URL`, including the server's base URL)
and how to authenticate (`NDIF_SERVER_TOKEN`); set both by hand to use a server from elsewhere.

While a job runs, a lost connection (the server restarting, a proxy in front of it saying it is down) is retried
with growing pauses for up to `reconnect_seconds` (120 s by default), said on the progress line; the job itself
is never sent twice.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import secrets
import time
import urllib.error
import urllib.request
from typing import Any

from .api_address import API_PATH, api_address
from .errors import ExecutionError, NDIFError, RunCancelled, TraceError
from .ir.result import RunResult
from .ir.session import Request
from .ir.source import Source
from .progress import ProgressLine
from .protocol.container import CONTENT_TYPE
from .protocol.origin import Origin
from .protocol.request import encode_request
from .protocol.result import decode_result

SERVER_URL_ENV = "NDIF_SERVER_URL"
SERVER_TOKEN_ENV = "NDIF_SERVER_TOKEN"
CLIENT_HEADER = "X-NDIF-Client"
CLIENT_ID = secrets.token_hex(8)
"""This kernel's id among its user's notebooks: a server takes a user's jobs in turn across their notebooks."""
_FINISHED = ("done", "error", "cancelled")
_LONG_POLL_SECONDS = 2
_FIRST_RETRY_PAUSE = 0.5
_LONGEST_RETRY_PAUSE = 8.0
_NOT_ANSWERING_STATUSES = (502, 503, 504)
# Raised after a request was sent, while its answer was awaited or read: the server may have acted on it.
_LOST_CONNECTION = (ConnectionError, TimeoutError, http.client.RemoteDisconnected, http.client.IncompleteRead)


class ServerUnavailable(NDIFError):
    """The ndif server gave no answer: it cannot be reached, the connection broke, or a proxy in front of it says it
    is down (502, 503, 504). `after_sending`: the request was sent whole, so the server may have acted on it."""

    def __init__(self, message: str, after_sending: bool = False):
        super().__init__(message)
        self.after_sending = after_sending


class ServerRefused(NDIFError):
    """The ndif server answered with the error status `status` (and, on a 429, `Retry-After` seconds)."""

    def __init__(self, message: str, status: int, retry_after: float | None = None):
        super().__init__(message)
        self.status = status
        self.retry_after = retry_after


BRIEFLY_BUSY_SECONDS = 1.0
"""A 429 that asks to wait at most this long (the server is busy checking other requests) is sent again by `submit`."""
BUSY_GIVE_UP_SECONDS = 60.0


class ServerClient:
    """Talks to one server extension's REST API (`.../ndif/api/`).

    Waiting for a job rides out a lost connection for up to `reconnect_seconds`: the server restarting, or a proxy
    saying it is down, is retried with pauses from 0.5 s doubling to 8 s. A job the restarted server no longer knows
    is an error; a server gone for longer is an error naming the job, whose result `result(job_id)` fetches later.
    """

    def __init__(
        self,
        url: str,
        token: str = "",
        request_timeout: float = 60.0,
        quiet_seconds: float | None = 0.5,
        reconnect_seconds: float = 120.0,
    ):
        """`url`: the API's URL, or the Jupyter server's it runs in (`api_address`; a `?token=` in it is the token
        when `token` is empty). `quiet_seconds`: show the progress line once a job has taken this long (None:
        never). `reconnect_seconds`: how long a lost server is waited for while a job runs."""
        self.url, token_in_url = api_address(url)
        self.token = token or token_in_url
        self.request_timeout = request_timeout
        self.quiet_seconds = quiet_seconds
        self.reconnect_seconds = reconnect_seconds

    @classmethod
    def from_environment(cls, **options: Any) -> ServerClient:
        """The server this kernel was told about (`NDIF_SERVER_URL`, `NDIF_SERVER_TOKEN`)."""
        url = os.environ.get(SERVER_URL_ENV)
        if not url:
            raise NDIFError(missing_server_message())
        return cls(url, os.environ.get(SERVER_TOKEN_ENV, ""), **options)

    def run(self, request: Request, model: str, origin: Origin | None = None) -> RunResult:
        """Run `request` (a block's graph, or a session's) on the server's model `model` in one job; the result is
        what the same run in the kernel gives. `origin`: the notebook and cell it is sent from, shown with the job."""
        job = self.submit(request, model, origin)
        line = _ProgressLine(job["id"], self.quiet_seconds)
        try:
            if self.quiet_seconds and job["status"] not in _FINISHED:
                job = self._poll(job["id"], line, self.quiet_seconds, "&until=finished")
            while job["status"] not in _FINISHED:
                line.show(job)
                job = self._poll(job["id"], line, _LONG_POLL_SECONDS)
        except KeyboardInterrupt:
            with contextlib.suppress(NDIFError):
                self._request("DELETE", f"jobs/{job['id']}")
            line.finish("cancelled")
            raise
        except NDIFError:
            line.finish("failed")
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

    def job(self, job_id: str) -> dict[str, Any]:
        """One job's status, timings and place in the queue."""
        return self._json("GET", f"jobs/{job_id}")

    def result(self, job_id: str) -> RunResult:
        """The result of a done job, also one run before this kernel restarted."""
        return decode_result(self._request("GET", f"jobs/{job_id}/result"))

    # ----- jobs -----
    def submit(self, request: Request, model: str, origin: Origin | None = None) -> dict[str, Any]:
        """Queue `request` on the server's model `model` without waiting for it: the job as the server answers (its
        `id`, `status`, `queue_position`). POSTed once: a request that may have arrived is never sent again."""
        body = encode_request(request, model, origin)
        try:
            return self._post_while_briefly_busy(body)
        except ServerUnavailable as error:
            if not error.after_sending:
                raise
            raise NDIFError(
                f"{error} The job may have been made all the same: `ServerClient.jobs()` lists the server's jobs."
            ) from None

    def _post_while_briefly_busy(self, body: bytes) -> dict[str, Any]:
        """POST a job, again after a short, growing pause while the server answers that it is briefly busy (a 429
        made no job), for up to BUSY_GIVE_UP_SECONDS; any other answer as it comes."""
        pause, given_up_at = 0.02, time.monotonic() + BUSY_GIVE_UP_SECONDS
        while True:
            try:
                return self._json("POST", "jobs", body, CONTENT_TYPE)
            except ServerRefused as refused:
                briefly = refused.status == 429 and (refused.retry_after or 0) <= BRIEFLY_BUSY_SECONDS
                if not briefly or time.monotonic() + pause > given_up_at:
                    raise
            time.sleep(pause * (0.5 + secrets.randbelow(1000) / 1000))
            pause = min(pause * 2, BRIEFLY_BUSY_SECONDS)

    def _poll(self, job_id: str, line: _ProgressLine, wait: float, until: str = "") -> dict[str, Any]:
        """The job, answered once it changes (or after `wait` seconds); a server that does not answer is asked again
        with growing pauses for up to `reconnect_seconds`."""
        path = f"jobs/{job_id}?wait={wait}{until}"
        lost_since: float | None = None
        pause = _FIRST_RETRY_PAUSE
        while True:
            try:
                if lost_since is None:
                    return self._json("GET", path)
                remaining = self.reconnect_seconds - (time.monotonic() - lost_since)
                return self._json("GET", path, timeout=min(self.request_timeout, max(remaining, 1.0)) + wait)
            except ServerUnavailable:
                now = time.monotonic()
                lost_since = now if lost_since is None else lost_since
                lost_for = now - lost_since
                if lost_for >= self.reconnect_seconds:
                    raise NDIFError(self._lost_message(job_id)) from None
                line.retrying(lost_for, self.reconnect_seconds)
                time.sleep(min(pause, self.reconnect_seconds - lost_for))
                pause = min(pause * 2, _LONGEST_RETRY_PAUSE)
            except ServerRefused as error:
                if error.status != 404:
                    raise
                raise NDIFError(
                    f"Job {job_id} no longer exists on the ndif server at {self.url}: the server restarted without "
                    "its job records, or the job was deleted. Run the block again."
                ) from None

    def _lost_message(self, job_id: str) -> str:
        return (
            f"Lost the ndif server at {self.url} for {self.reconnect_seconds:g} s while waiting for job {job_id}. "
            f"The job may still finish there: `ServerClient.result({job_id!r})` fetches its result later; "
            "or run the block again."
        )

    # ----- HTTP -----
    def _json(self, method: str, path: str, *body_and_type: Any, **options: Any) -> Any:
        """The answer of `_request` as JSON."""
        return json.loads(self._request(method, path, *body_and_type, **options))

    def _request(
        self,
        method: str,
        path: str,
        body: bytes | None = None,
        content_type: str | None = None,
        timeout: float | None = None,
    ) -> bytearray:
        """The answer's body; ServerUnavailable when there is none, ServerRefused for an error status."""
        request = urllib.request.Request(self.url + path, data=body, method=method)
        if self.token:
            request.add_header("Authorization", f"token {self.token}")
        request.add_header(CLIENT_HEADER, CLIENT_ID)
        if content_type:
            request.add_header("Content-Type", content_type)
        try:
            with urllib.request.urlopen(
                request, timeout=timeout or self.request_timeout + _LONG_POLL_SECONDS
            ) as answer:
                return _read_body(answer)
        except urllib.error.HTTPError as error:
            message = _http_error_message(self.url, path, error)
            if error.code in _NOT_ANSWERING_STATUSES:
                raise ServerUnavailable(message, after_sending=error.code == 504) from None
            raise ServerRefused(message, error.code, _retry_after(error)) from None
        except urllib.error.URLError as error:
            raise ServerUnavailable(_unreachable_message(self.url, error.reason)) from None
        except _LOST_CONNECTION as error:
            raise ServerUnavailable(
                f"The ndif server at {self.url} stopped answering ({error!r}) after the request was sent.",
                after_sending=True,
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
            raise ServerUnavailable(
                f"The ndif server's answer ended after {received} of {len(body)} bytes.", after_sending=True
            )
        received += count
    return body


def missing_server_message() -> str:
    return (
        "device_map='server' runs the graph in the Jupyter server extension, and this kernel does not know of one: "
        f"{SERVER_URL_ENV} is not set. Start Jupyter with ndif-jupyter installed (its server extension tells the "
        f"kernels it starts where it is), or set {SERVER_URL_ENV} and {SERVER_TOKEN_ENV}; or use device_map='cpu'."
    )


def _unreachable_message(url: str, reason: Any) -> str:
    return (
        f"The ndif server at {url} cannot be reached ({reason}). Is the Jupyter server running? "
        f"{SERVER_URL_ENV} says where it is."
    )


def _retry_after(error: urllib.error.HTTPError) -> float | None:
    try:
        return float(error.headers.get("Retry-After", ""))
    except (TypeError, ValueError):
        return None


def _http_error_message(url: str, path: str, error: urllib.error.HTTPError) -> str:
    try:
        message = json.loads(error.read() or b"{}").get("message") or error.reason
    except ValueError:
        message = error.reason
    if error.code in (401, 403):
        said = str(message).strip().rstrip(".")
        if error.code == 401:
            return f"The ndif server at {url} needs authentication: {SERVER_TOKEN_ENV} is missing or wrong ({said})."
        return f"The ndif server at {url} does not allow this user to run graphs ({said})."
    if error.code == 404 and path.split("?")[0] in ("models", "jobs"):
        return (
            f"There is no ndif API at {url} (the server answered 404). {SERVER_URL_ENV} is the Jupyter server's URL "
            f"(the API is then its `{API_PATH}`) or the API's own; check that it names the Jupyter server where "
            "ndif-jupyter is installed, and that its extension is enabled there (`jupyter server extension list`)."
        )
    if error.code == 400:
        return f"The ndif server refused the graph: {message}"
    if error.code == 413:
        return f"The request is too large for the ndif server at {url}: {message}"
    if error.code == 429:
        retry_after = (error.headers.get("Retry-After") or "").strip()
        later = f"; try again in {retry_after} s" if retry_after.isdigit() else "; try again later"
        return f"The ndif server at {url} is busy: {message}{later}."
    if error.code == 503:
        return f"The ndif server at {url} cannot take requests now: {message}"
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
    """The progress line of one job, rewritten as the job moves, shown once the job has taken `quiet_seconds`."""

    def __init__(self, job_id: str, quiet_seconds: float | None):
        self.job_id = job_id[:8]
        self.quiet_seconds = quiet_seconds
        self.started = time.monotonic()
        self.line = ProgressLine()

    def retrying(self, lost_for: float, limit: float) -> None:
        if self.quiet_seconds is not None:
            text = f"ndif server: job {self.job_id} connection lost, retrying ({lost_for:.0f} s of {limit:g} s)"
            self.line.update(text, force=True)

    def show(self, job: dict[str, Any]) -> None:
        elapsed = time.monotonic() - self.started
        if self.quiet_seconds is None or elapsed < self.quiet_seconds:
            return
        detail = job["phase"]
        if job["status"] == "queued" and job.get("queue_position"):
            detail = f"place {job['queue_position']} in the queue"
        if job["status"] == "running" and job["phase"] == "running" and job["steps"] > 1:
            detail = f"step {job['step']}/{job['steps']}"
        self.line.update(f"ndif server: job {self.job_id} {job['status']} ({detail}), {elapsed:.1f} s", force=True)

    def finish(self, outcome: str, detail: str = "") -> None:
        if self.line.shown:
            elapsed = time.monotonic() - self.started
            self.line.finish(f"ndif server: job {self.job_id} {outcome} in {elapsed:.1f} s{detail}")

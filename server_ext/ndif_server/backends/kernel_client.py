"""One kernel on a Jupyter Kernel Gateway: its REST API and its websocket channels, with a timeout on every wait."""

from __future__ import annotations

import asyncio
import contextlib
import json
import ssl
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from jupyter_server.services.kernels.connection.base import (
    deserialize_binary_message,
    serialize_binary_message,
)
from tornado.httpclient import AsyncHTTPClient, HTTPClientError, HTTPRequest
from tornado.websocket import WebSocketClientConnection, websocket_connect

from ndif_jupyter.errors import NDIFError

MAX_MESSAGE_BYTES = 1 << 31
PROBE_SECONDS = 2.0


class GatewayError(NDIFError):
    """The kernel gateway cannot be reached, refuses us, does not answer in time, or lost the kernel."""


class KernelDied(GatewayError):
    """The kernel died, restarted or closed its channels while we waited on it."""


@dataclass
class _Pending:
    """One execute request: done when both its reply and the idle status for it have arrived."""

    on_comm: Callable[[dict, list], None] | None
    reply: dict | None = None
    idle: bool = False
    done: asyncio.Future = field(default_factory=lambda: asyncio.get_running_loop().create_future())

    def check(self) -> None:
        if self.reply is not None and self.idle and not self.done.done():
            self.done.set_result(self.reply)


class KernelClient:
    """A kernel started on the gateway at `url` (authenticated with `token`), driven over its websocket."""

    def __init__(self, url: str, token: str, kernel_name: str, request_timeout: float, ca_certs: str = ""):
        """`ca_certs`: a CA bundle to check the gateway's TLS certificate with (the system's when empty)."""
        self.url = url if url.endswith("/") else url + "/"
        self.token = token
        self.ca_certs = ca_certs or None
        self.kernel_name = kernel_name
        self.request_timeout = request_timeout
        self.kernel_id: str | None = None
        self.failure: str | None = None
        self._connection: WebSocketClientConnection | None = None
        self._reader: asyncio.Task | None = None
        self._pending: dict[str, _Pending] = {}
        self._session = uuid.uuid4().hex
        self._deleting: set[asyncio.Task] = set()

    @property
    def alive(self) -> bool:
        return self.kernel_id is not None and self.failure is None

    async def start(self) -> None:
        """Start a kernel on the gateway and connect to its channels."""
        answer = await self._rest("POST", "api/kernels", {"name": self.kernel_name})
        self.kernel_id = answer["id"]
        url = self.url.replace("http", "ws", 1) + f"api/kernels/{self.kernel_id}/channels?session_id={self._session}"
        try:
            self._connection = await asyncio.wait_for(
                websocket_connect(
                    HTTPRequest(url, headers=self._headers(), ca_certs=self.ca_certs),
                    max_message_size=MAX_MESSAGE_BYTES,
                ),
                self.request_timeout,
            )
        except (OSError, HTTPClientError, asyncio.TimeoutError) as error:
            raise GatewayError(f"cannot connect to the channels of the gateway kernel: {_reason(error)}") from None
        self._reader = asyncio.ensure_future(self._read())

    async def execute(self, code: str, timeout: float, on_comm: Callable[[dict, list], None] | None = None) -> dict:
        """Run `code`; returns the execute reply's content once the kernel is idle again. Comm messages the code
        sends go to `on_comm(data, buffers)` as they arrive.

        While waiting, the gateway is asked every `PROBE_SECONDS` how the kernel is: a gateway restarts a kernel
        that died without telling the channels, so a kernel that is not busy while our request is unanswered
        (twice in a row) has lost it.
        """
        self._require_alive()
        msg_id = uuid.uuid4().hex
        pending = _Pending(on_comm)
        self._pending[msg_id] = pending
        self._send(
            self._message(
                "execute_request",
                {
                    "code": code,
                    "silent": False,
                    "store_history": False,
                    "user_expressions": {},
                    "allow_stdin": False,
                    "stop_on_error": True,
                },
                msg_id=msg_id,
            )
        )
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        not_busy = 0
        try:
            while True:
                remaining = deadline - loop.time()
                if remaining <= 0:
                    raise GatewayError(f"the gateway kernel did not finish within {timeout:.0f} s")
                try:
                    return await asyncio.wait_for(asyncio.shield(pending.done), min(PROBE_SECONDS, remaining))
                except asyncio.TimeoutError:
                    pass
                state = await self._state()
                not_busy = not_busy + 1 if state != "busy" and not pending.done.done() else 0
                if not_busy >= 2:
                    self._fail(f"the gateway kernel restarted or stopped (it is {state}) while running the job")
                    raise KernelDied(self.failure)
        finally:
            self._pending.pop(msg_id, None)

    async def _state(self) -> str:
        try:
            model = await self._rest("GET", f"api/kernels/{self.kernel_id}")
        except GatewayError as error:
            if "404" in str(error):
                return "gone"
            raise
        return model.get("execution_state", "unknown")

    def open_comm(self, target: str) -> str:
        comm_id = uuid.uuid4().hex
        self._send(self._message("comm_open", {"comm_id": comm_id, "target_name": target, "data": {}}))
        return comm_id

    def send_comm(self, comm_id: str, data: dict, buffers: list | None = None) -> None:
        self._send(self._message("comm_msg", {"comm_id": comm_id, "data": data}), buffers or [])

    async def interrupt(self) -> None:
        await self._rest("POST", f"api/kernels/{self.kernel_id}/interrupt", {})

    def shutdown(self) -> None:
        """Close the channels and ask the gateway to stop the kernel, without waiting (it may be gone already, or
        slow to stop while it restarts)."""
        self._fail("the kernel was shut down")
        if self._connection is not None:
            self._connection.close()
        if self._reader is not None:
            self._reader.cancel()
        if self.kernel_id is not None:
            task = asyncio.ensure_future(self._delete_quietly())
            self._deleting.add(task)  # the loop keeps only a weak reference to a task
            task.add_done_callback(self._deleting.discard)

    async def stopped(self) -> None:
        """Return once the gateway was asked to stop the kernel (after `shutdown`)."""
        if self._deleting:
            await asyncio.gather(*self._deleting, return_exceptions=True)

    async def _delete_quietly(self) -> None:
        with contextlib.suppress(GatewayError):
            await self._rest("DELETE", f"api/kernels/{self.kernel_id}")

    # ----- channels -----
    async def _read(self) -> None:
        connection = self._connection
        assert connection is not None, "the reader starts once the channels are open"
        while True:
            raw = await connection.read_message()
            if raw is None:
                self._fail("the gateway closed the kernel's channels")
                return
            message = deserialize_binary_message(raw) if isinstance(raw, bytes) else json.loads(raw)
            self._route(message)

    def _route(self, message: dict) -> None:
        kind = message.get("msg_type") or message["header"]["msg_type"]
        content = message.get("content", {})
        if kind == "status" and content.get("execution_state") in ("restarting", "dead", "autorestarting"):
            self._fail(f"the gateway kernel died ({content['execution_state']})")
            return
        pending = self._pending.get(message.get("parent_header", {}).get("msg_id"))
        if pending is None:
            return
        if kind == "execute_reply":
            pending.reply = content
        elif kind == "status" and content.get("execution_state") == "idle":
            pending.idle = True
        elif kind == "comm_msg" and pending.on_comm is not None:
            pending.on_comm(content.get("data", {}), message.get("buffers", []))
        pending.check()

    def _fail(self, reason: str) -> None:
        if self.failure is None:
            self.failure = reason
        for pending in self._pending.values():
            if not pending.done.done():
                pending.done.set_exception(KernelDied(reason))

    def _require_alive(self) -> WebSocketClientConnection:
        if self.failure is not None:
            raise KernelDied(self.failure)
        if self._connection is None:
            raise GatewayError("the gateway kernel is not started")
        return self._connection

    def _message(self, kind: str, content: dict, msg_id: str | None = None) -> dict:
        return {
            "header": {
                "msg_id": msg_id or uuid.uuid4().hex,
                "username": "ndif",
                "session": self._session,
                "msg_type": kind,
                "version": "5.3",
                "date": "",
            },
            "parent_header": {},
            "metadata": {},
            "content": content,
            "channel": "shell",
        }

    def _send(self, message: dict, buffers: list | None = None) -> None:
        connection = self._require_alive()
        if buffers:
            message["buffers"] = buffers
            connection.write_message(serialize_binary_message(message), binary=True)
        else:
            connection.write_message(json.dumps(message))

    # ----- REST -----
    def _headers(self) -> dict[str, str]:
        return {"Authorization": f"token {self.token}"} if self.token else {}

    async def _rest(self, method: str, path: str, body: dict | None = None) -> Any:
        request = HTTPRequest(
            self.url + path,
            method=method,
            headers=self._headers(),
            body=json.dumps(body) if method in ("POST", "PUT") else None,
            request_timeout=self.request_timeout,
            connect_timeout=self.request_timeout,
            ca_certs=self.ca_certs,
        )
        try:
            response = await AsyncHTTPClient().fetch(request)
        except HTTPClientError as error:
            if error.code in (401, 403):
                raise GatewayError(
                    f"the kernel gateway at {self.url} refused our token (HTTP {error.code}); "
                    "check the gateway_auth_token setting against the gateway's token (KG_AUTH_TOKEN for a Kernel "
                    "Gateway, EG_AUTH_TOKEN for Enterprise Gateway)"
                ) from None
            if error.code == 599:
                raise GatewayError(f"the kernel gateway at {self.url} did not answer in time ({error})") from None
            raise GatewayError(f"the kernel gateway at {self.url} answered {method} {path} with {error}") from None
        except ssl.SSLCertVerificationError as error:
            raise GatewayError(
                f"the kernel gateway at {self.url} has a TLS certificate this server does not trust ({error}); "
                "give the CA bundle that signed it as the gateway_ca_certs setting"
            ) from None
        except OSError as error:
            raise GatewayError(f"the kernel gateway at {self.url} cannot be reached: {error}") from None
        return json.loads(response.body) if response.body else None


def _reason(error: BaseException) -> str:
    return str(error) or type(error).__name__

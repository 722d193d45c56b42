"""A real `jupyter server` process for tests, and kernels started through its REST API, driven over its websocket."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import socket
import ssl
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from tornado.httpclient import HTTPRequest
from tornado.websocket import websocket_connect

STARTUP_SECONDS = 60
STOP_SECONDS = 5


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class JupyterServerProcess:
    """`python -m jupyter server` on loopback with a token and the given configuration (JSON, as a config file)."""

    def __init__(self, config: dict[str, Any], base_url: str = "/", token: str | None = None):
        self.config = config
        self.base_url = base_url
        self.token = token or uuid.uuid4().hex
        self.port = free_port()
        self.folder = Path(tempfile.mkdtemp(prefix="jupyter-server-"))
        self.log_path = self.folder / "server.log"
        self.process: subprocess.Popen | None = None
        self.ssl_context: ssl.SSLContext | None = None

    @property
    def url(self) -> str:
        scheme = "https" if self.ssl_context is not None else "http"
        return f"{scheme}://127.0.0.1:{self.port}{self.base_url}"

    def __enter__(self) -> JupyterServerProcess:
        (self.folder / "jupyter_server_config.json").write_text(json.dumps(self.config))
        env = dict(os.environ, JUPYTER_CONFIG_DIR=str(self.folder))
        env.pop("NDIF_SERVER_URL", None)
        env.pop("NDIF_SERVER_TOKEN", None)
        return self._launch(self._command(), env, "api/status")

    def _command(self) -> list[str]:
        return [
            sys.executable,
            "-m",
            "jupyter",
            "server",
            "--no-browser",
            "--allow-root",
            "--ip=127.0.0.1",
            f"--port={self.port}",
            f"--IdentityProvider.token={self.token}",
            f"--ServerApp.base_url={self.base_url}",
            f"--ServerApp.root_dir={self.folder}",
        ]

    def _launch(self, command: list[str], env: dict[str, str], probe: str):
        """Start `command` and wait until `probe` answers."""
        self._launched = (command, env, probe)
        self.log = open(self.log_path, "w")  # noqa: SIM115 (open while the process runs, closed on exit)
        self.process = subprocess.Popen(command, env=env, stdout=self.log, stderr=subprocess.STDOUT, cwd=self.folder)
        deadline = time.monotonic() + STARTUP_SECONDS
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"{command[2]} exited:\n{self.log_path.read_text()}")
            try:
                self.get(probe)
                return self
            except OSError:
                time.sleep(0.2)
        raise RuntimeError(f"{command[2]} did not answer in {STARTUP_SECONDS} s:\n{self.log_path.read_text()}")

    def __exit__(self, *exc: Any) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.process.kill()
        self.log.close()

    def stop(self, grace_seconds: float = STOP_SECONDS) -> None:
        """End the server as an administrator would: SIGTERM, then SIGKILL if it still runs after `grace_seconds`."""
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=grace_seconds)
            except subprocess.TimeoutExpired:
                self.kill()

    def kill(self) -> None:
        """End the server at once (SIGKILL), as a crash would."""
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait()

    def restart(self, grace_seconds: float = STOP_SECONDS) -> JupyterServerProcess:
        """Stop the server and start it again on the same port, with the same configuration folder and token; returns
        once it answers. The earlier run's log is kept next to the new one."""
        self.stop(grace_seconds)
        self.log.close()
        runs = len(list(self.folder.glob("server.*.log")))
        shutil.copyfile(self.log_path, self.folder / f"server.{runs + 1}.log")
        return self._launch(*self._launched)

    def resident_bytes(self) -> int:
        """The server process's resident memory now (VmRSS), in bytes. Linux only."""
        return self._memory_status("VmRSS")

    def peak_resident_bytes(self) -> int:
        """The most resident memory the server process has had (VmHWM), in bytes. Linux only."""
        return self._memory_status("VmHWM")

    def _memory_status(self, key: str) -> int:
        if self.process is None or self.process.poll() is not None:
            raise RuntimeError("the server process is not running")
        for line in Path(f"/proc/{self.process.pid}/status").read_text().splitlines():
            name, _, value = line.partition(":")
            if name == key:
                return int(value.split()[0]) * 1024  # the kernel counts in kB
        raise RuntimeError(f"/proc/{self.process.pid}/status has no {key}")

    def request(self, method: str, path: str, body: bytes | None = None) -> bytes:
        request = urllib.request.Request(self.url + path, data=body, method=method)
        request.add_header("Authorization", f"token {self.token}")
        with urllib.request.urlopen(request, timeout=60, context=self.ssl_context) as response:
            return response.read()

    def get(self, path: str) -> Any:
        return json.loads(self.request("GET", path))

    def start_kernel(self) -> RemoteKernel:
        kernel = json.loads(self.request("POST", "api/kernels", json.dumps({"name": "python3"}).encode()))
        return RemoteKernel(self, kernel["id"])


@dataclass
class Execution:
    """What one execute request produced."""

    status: str
    stdout: str = ""
    stderr: str = ""
    results: list[dict] = field(default_factory=list)
    displays: list[dict] = field(default_factory=list)
    updates: list[dict] = field(default_factory=list)
    error: dict | None = None

    @property
    def displayed_text(self) -> str:
        """The text/plain of every display and of every update of one (a progress line is one display, updated)."""
        return "\n".join(data.get("text/plain", "") for data in [*self.displays, *self.updates])


class KernelHost(Protocol):
    """Where kernels live: a Jupyter server's URL and a token for its REST API and websockets."""

    @property
    def url(self) -> str: ...

    @property
    def token(self) -> str: ...

    def request(self, method: str, path: str, body: bytes | None = None) -> bytes: ...


class RemoteKernel:
    """A kernel of a Jupyter server (or kernel gateway), run through its websocket channels."""

    def __init__(self, server: KernelHost, kernel_id: str):
        self.server = server
        self.id = kernel_id
        self.session = uuid.uuid4().hex

    def execute(self, code: str, timeout: float = 300) -> Execution:
        return asyncio.run(asyncio.wait_for(self._execute(code), timeout))

    def restart(self) -> None:
        self.server.request("POST", f"api/kernels/{self.id}/restart", b"{}")

    async def _execute(self, code: str) -> Execution:
        url = self.server.url.replace("http://", "ws://") + f"api/kernels/{self.id}/channels?session_id={self.session}"
        request = HTTPRequest(url, headers={"Authorization": f"token {self.server.token}"})
        connection = await websocket_connect(request, max_message_size=1 << 30)
        try:
            msg_id = uuid.uuid4().hex
            connection.write_message(
                json.dumps(
                    {
                        "header": {
                            "msg_id": msg_id,
                            "username": "test",
                            "session": self.session,
                            "msg_type": "execute_request",
                            "version": "5.3",
                            "date": "",
                        },
                        "parent_header": {},
                        "metadata": {},
                        "buffers": [],
                        "channel": "shell",
                        "content": {
                            "code": code,
                            "silent": False,
                            "store_history": True,
                            "user_expressions": {},
                            "allow_stdin": False,
                            "stop_on_error": True,
                        },
                    }
                )
            )
            outcome = Execution(status="")
            idle = False
            while not (outcome.status and idle):
                raw = await connection.read_message()
                if raw is None:
                    raise ConnectionError("the kernel's websocket closed")
                if isinstance(raw, bytes):
                    continue
                message = json.loads(raw)
                if message.get("parent_header", {}).get("msg_id") != msg_id:
                    continue
                kind, content = message["msg_type"], message["content"]
                if kind == "execute_reply":
                    outcome.status = content["status"]
                elif kind == "status" and content["execution_state"] == "idle":
                    idle = True
                elif kind == "stream":
                    setattr(outcome, content["name"], getattr(outcome, content["name"]) + content["text"])
                elif kind == "execute_result":
                    outcome.results.append(content["data"])
                elif kind == "display_data":
                    outcome.displays.append(content["data"])
                elif kind == "update_display_data":
                    outcome.updates.append(content["data"])
                elif kind == "error":
                    outcome.error = content
            return outcome
        finally:
            connection.close()


class KernelGatewayProcess(JupyterServerProcess):
    """`python -m kernel_gateway` on loopback with a token: the GPU host's side of the gateway backend; with `tls`
    (a certificate and its key), on HTTPS."""

    def __init__(self, token: str | None = None, tls: TLSFiles | None = None):
        super().__init__({}, token=token)
        self.tls = tls
        if tls is not None:
            self.ssl_context = ssl.create_default_context(cafile=str(tls.ca))

    def __enter__(self) -> KernelGatewayProcess:
        env = dict(os.environ, KG_AUTH_TOKEN=self.token)  # not on the command line, which every local user can read
        env.pop("NDIF_SERVER_URL", None)
        env.pop("NDIF_SERVER_TOKEN", None)
        command = [
            sys.executable,
            "-m",
            "kernel_gateway",
            "--KernelGatewayApp.ip=127.0.0.1",
            f"--KernelGatewayApp.port={self.port}",
            "--JupyterWebsocketPersonality.list_kernels=True",
        ]
        if self.tls is not None:
            command += [f"--KernelGatewayApp.certfile={self.tls.cert}", f"--KernelGatewayApp.keyfile={self.tls.key}"]
        return self._launch(command, env, "api")

    def kernel(self, kernel_id: str) -> RemoteKernel:
        return RemoteKernel(self, kernel_id)


@dataclass(frozen=True)
class TLSFiles:
    """A certificate authority, and a server certificate it signed for 127.0.0.1 with its key (PEM files)."""

    ca: Path
    cert: Path
    key: Path


def make_tls_files(folder: Path) -> TLSFiles:
    """A new CA and a certificate for 127.0.0.1 signed by it, made with openssl in `folder`."""
    files = TLSFiles(folder / "ca.pem", folder / "server.pem", folder / "server.key")
    ca_key, request = folder / "ca.key", folder / "server.csr"
    extensions = folder / "server.ext"
    extensions.write_text("subjectAltName = IP:127.0.0.1\nbasicConstraints = CA:FALSE\n")

    def openssl(*arguments: str) -> None:
        subprocess.run(["openssl", *arguments], check=True, capture_output=True)

    openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", "/CN=test lab CA",
            "-keyout", str(ca_key), "-out", str(files.ca))  # fmt: skip
    openssl("req", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=127.0.0.1",
            "-keyout", str(files.key), "-out", str(request))  # fmt: skip
    openssl("x509", "-req", "-in", str(request), "-CA", str(files.ca), "-CAkey", str(ca_key), "-CAcreateserial",
            "-days", "2", "-extfile", str(extensions), "-out", str(files.cert))  # fmt: skip
    return files


class JupyterLabProcess(JupyterServerProcess):
    """`python -m jupyter lab` on loopback with a token, with its settings and workspaces in its own folder."""

    def _command(self) -> list[str]:
        lab = super()._command()
        lab[lab.index("server")] = "lab"
        return [
            *lab,
            f"--LabApp.user_settings_dir={self.folder / 'settings'}",
            f"--LabApp.workspaces_dir={self.folder / 'workspaces'}",
            "--LabApp.news_url=",
            "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate",
        ]


class FileModeBoundServerProcess(JupyterServerProcess):
    """`jupyter server` bound by file modes even when the tests run as root: it runs without CAP_DAC_OVERRIDE, so that
    a folder made read-only is read-only to it too."""

    def _command(self) -> list[str]:
        command = super()._command()
        if os.geteuid() != 0:
            return command
        if shutil.which("setpriv") is None:
            raise RuntimeError("running as root, the server can only be bound by file modes through setpriv")
        return ["setpriv", "--inh-caps=-dac_override", "--bounding-set=-dac_override", *command]

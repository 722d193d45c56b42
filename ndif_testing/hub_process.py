"""A real JupyterHub on loopback for tests: the hub, its proxy, users' servers spawned as their own unix users, and
kernels in those servers reached through the proxy."""

from __future__ import annotations

import contextlib
import json
import os
import pwd
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
import uuid
from pathlib import Path
from typing import Any

from .jupyter_process import RemoteKernel, free_port

STARTUP_SECONDS = 120
HARNESS = "test-harness"


def missing_hub_parts(proxy: Path) -> list[str]:
    """What the hub tests need and this machine lacks: root (users' servers run as unix users), the proxy."""
    missing = []
    if os.geteuid() != 0:
        missing.append("root (the hub spawns each user's server as that unix user)")
    if shutil.which("useradd") is None:
        missing.append("useradd")
    if not proxy.exists():
        missing.append(f"configurable-http-proxy ({proxy}; npm ci --prefix tests/hub)")
    return missing


def ensure_unix_users(names: list[str]) -> None:
    """Unix users with homes, made when missing: LocalProcessSpawner runs a hub user's server as the same name."""
    for name in names:
        try:
            pwd.getpwnam(name)
        except KeyError:
            subprocess.run(["useradd", "--create-home", "--shell", "/bin/sh", name], check=True)


def make_interpreter_reachable() -> list[Path]:
    """Let every local user traverse the folders above this Python and its virtual environment (o+x, no listing),
    as on a hub where Python is installed for all users; returns the folders changed."""
    changed = []
    for target in (Path(sys.executable).resolve(), Path(sys.prefix).resolve()):
        for folder in target.parents:
            mode = folder.stat().st_mode
            if not mode & 0o001:
                folder.chmod(mode | 0o001)
                changed.append(folder)
    return changed


def shared_folder(prefix: str) -> Path:
    """A folder every local user can read (tests' own temporary folders are private to the user running them)."""
    folder = Path(tempfile.mkdtemp(prefix=prefix))
    folder.chmod(0o755)
    return folder


class UserServer:
    """A hub user's single-user server, through the hub's proxy at `/user/<name>/`."""

    def __init__(self, url: str, token: str):
        self.url = url
        self.token = token

    def request(self, method: str, path: str, body: bytes | None = None) -> bytes:
        return _request(self.url + path, self.token, method, body)

    def get(self, path: str) -> Any:
        return json.loads(self.request("GET", path))

    def start_kernel(self) -> RemoteKernel:
        kernel = json.loads(self.request("POST", "api/kernels", json.dumps({"name": "python3"}).encode()))
        return RemoteKernel(self, kernel["id"])


class JupyterHubProcess:
    """`jupyterhub` on loopback: the dummy authenticator, users' servers spawned by LocalProcessSpawner, and
    `hub_config` (Python, e.g. a `configure_hub` call) after the harness's own settings. Its folder (config, database,
    cookie secret) is private to root, as on a real hub. A service `test-harness` with admin scopes drives the API."""

    def __init__(self, hub_config: str, users: list[str], admins: list[str], proxy: Path):
        self.hub_config = hub_config
        self.users = users
        self.admins = admins
        self.proxy = proxy
        self.port = free_port()
        self.hub_port = free_port()
        self.proxy_api_port = free_port()
        self.harness_token = uuid.uuid4().hex
        self.folder = Path(tempfile.mkdtemp(prefix="jupyterhub-"))
        self.folder.chmod(0o700)
        self.log_path = self.folder / "hub.log"
        self.process: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/"

    def config_text(self) -> str:
        singleuser = Path(sys.executable).parent / "jupyterhub-singleuser"
        harness = {
            "name": HARNESS,
            "api_token": self.harness_token,
        }
        role = {
            "name": HARNESS,
            "scopes": [
                *("admin:users", "admin:servers", "access:servers", "tokens"),
                *("list:users", "read:users", "list:services", "read:services"),
            ],
            "services": [HARNESS],
        }
        return "\n".join(
            [
                f"c.JupyterHub.bind_url = {self.url!r}",
                f"c.JupyterHub.hub_port = {self.hub_port}",
                f"c.ConfigurableHTTPProxy.command = [{str(self.proxy)!r}]",
                f"c.ConfigurableHTTPProxy.api_url = 'http://127.0.0.1:{self.proxy_api_port}'",
                f"c.JupyterHub.db_url = 'sqlite:///{self.folder}/hub.sqlite'",
                f"c.JupyterHub.cookie_secret_file = '{self.folder}/cookie_secret'",
                "c.JupyterHub.authenticator_class = 'dummy'",
                f"c.Authenticator.allowed_users = set({self.users!r})",
                f"c.Authenticator.admin_users = set({self.admins!r})",
                "c.JupyterHub.spawner_class = 'localprocess'",
                f"c.Spawner.cmd = [{str(singleuser)!r}]",
                "c.Spawner.start_timeout = 120",
                "c.Spawner.http_timeout = 120",
                "c.Spawner.env_keep = ['PATH', 'VIRTUAL_ENV', 'LANG', 'LC_ALL', 'HF_HUB_OFFLINE']",
                f"c.JupyterHub.services = [{harness!r}]",
                f"c.JupyterHub.load_roles = [{role!r}]",
                self.hub_config,
            ]
        )

    def __enter__(self) -> JupyterHubProcess:
        config = self.folder / "jupyterhub_config.py"
        config.write_text(self.config_text())
        config.chmod(0o600)
        env = dict(os.environ)
        for name in ("NDIF_SERVER_URL", "NDIF_SERVER_TOKEN", "JUPYTERHUB_API_TOKEN"):
            env.pop(name, None)
        env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
        self.log = open(self.log_path, "w")  # open while the hub runs, closed on exit
        self.process = subprocess.Popen(
            [sys.executable, "-m", "jupyterhub", "-f", str(config)],
            env=env,
            cwd=self.folder,
            stdout=self.log,
            stderr=subprocess.STDOUT,
        )
        deadline = time.monotonic() + STARTUP_SECONDS
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"jupyterhub exited:\n{self.log_text()}")
            try:
                self.api("GET", "services")
                return self
            except (OSError, urllib.error.HTTPError):
                time.sleep(0.5)
        raise RuntimeError(f"jupyterhub did not answer in {STARTUP_SECONDS} s:\n{self.log_text()}")

    def __exit__(self, *exc: Any) -> None:
        """Stop the hub (which stops its proxy, services and users' servers); whatever of them outlives it, killed."""
        if self.process is not None and self.process.poll() is None:
            started = descendants(self.process.pid)
            self.process.terminate()
            try:
                self.process.wait(30)
            except subprocess.TimeoutExpired:
                started |= descendants(self.process.pid)
                self.process.kill()
                self.process.wait()
            for pid in started:
                with contextlib.suppress(OSError):
                    os.kill(pid, signal.SIGKILL)
        self.log.close()

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace")

    def api(self, method: str, path: str, document: Any = None, token: str | None = None) -> Any:
        """The hub's REST API (`/hub/api/<path>`), as the harness service unless `token` is given."""
        body = None if document is None else json.dumps(document).encode()
        answer = _request(f"{self.url}hub/api/{path}", token or self.harness_token, method, body)
        return json.loads(answer) if answer else None

    def start_server(self, user: str) -> UserServer:
        """`user`'s server, spawned unless it runs, once the hub says it is ready."""
        if not self.api("GET", f"users/{user}")["servers"].get(""):
            self.api("POST", f"users/{user}/server")
        deadline = time.monotonic() + STARTUP_SECONDS
        while time.monotonic() < deadline:
            server = self.api("GET", f"users/{user}")["servers"].get("")
            if server and server.get("ready"):
                return UserServer(f"{self.url}user/{user}/", self.harness_token)
            time.sleep(0.5)
        raise RuntimeError(f"{user}'s server did not start in {STARTUP_SECONDS} s:\n{self.log_text()}")

    def token_for(self, user: str, scopes: list[str]) -> str:
        """A new token of `user` with `scopes` (those the user holds)."""
        answer = self.api("POST", f"users/{user}/tokens", {"scopes": scopes, "expires_in": 3600, "note": "test"})
        return answer["token"]

    def service_api(self, name: str = "ndif") -> str:
        return f"{self.url}services/{name}/api/"


def descendants(pid: int) -> set[int]:
    """Every process started by `pid`, and by those, as they run now."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                parent = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(parent, []).append(int(entry.name))
    found: set[int] = set()
    waiting = [pid]
    while waiting:
        for child in children.get(waiting.pop(), []):
            if child not in found:
                found.add(child)
                waiting.append(child)
    return found


def _request(url: str, token: str | None, method: str, body: bytes | None = None) -> bytes:
    return _answer(url, token, method, body)[1]


def _answer(url: str, token: str | None, method: str, body: bytes | None = None) -> tuple[int, bytes]:
    """The status and body of a request (as `token`, with a JSON `body`); HTTPError for an error status."""
    request = urllib.request.Request(url, data=body, method=method)
    if token:
        request.add_header("Authorization", f"token {token}")
    if body is not None:
        request.add_header("Content-Type", "application/json")
    with urllib.request.urlopen(request, timeout=120) as answer:
        return answer.status, answer.read()


def http_status(url: str, token: str | None = None, method: str = "GET") -> tuple[int, dict]:
    """The status and JSON body of a request that may be refused."""
    try:
        status, body = _answer(url, token, method)
        return status, json.loads(body or b"{}")
    except urllib.error.HTTPError as error:
        body = error.read()
        try:
            return error.code, json.loads(body)
        except ValueError:
            return error.code, {"body": body.decode(errors="replace")[:500]}

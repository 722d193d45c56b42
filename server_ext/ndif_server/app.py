"""NDIFServer: the `ndif` extension app, its configuration, and what it tells the kernels it starts."""

from __future__ import annotations

import asyncio
import dataclasses
import os
from pathlib import Path
from typing import Any

from jupyter_core.paths import jupyter_data_dir
from jupyter_server.extension.application import ExtensionApp
from tornado.ioloop import IOLoop
from traitlets import (
    Dict,
    Enum,
    Float,
    Integer,
    List,
    TraitError,
    Unicode,
    Union,
    default,
)

from ndif_jupyter.client import SERVER_TOKEN_ENV, SERVER_URL_ENV
from ndif_jupyter.loading.checkpoints import DEFAULT_MODEL
from ndif_jupyter.protocol.limits import Limits

from .admissions import Admissions
from .backends.base import Backend
from .backends.gateway import GatewayBackend, GatewaySettings
from .backends.local import LocalBackend
from .handlers import handlers
from .jobs import JobStore

_WILDCARD_HOSTS = ("", "0.0.0.0", "::", "*")


class NDIFServer(ExtensionApp):
    """Runs intervention graphs sent by kernels on models this server keeps loaded, for all of a user's notebooks."""

    name = "ndif"
    load_other_extensions = True

    backend = Enum(
        ["local", "gateway"],
        default_value="local",
        config=True,
        help="Where jobs run: 'local' (this server process) or 'gateway' (kernels on a Kernel Gateway).",
    )
    gateway_url = Unicode("", config=True, help="The Jupyter Kernel Gateway of the GPU host (backend 'gateway').")
    gateway_auth_token = Unicode("", config=True, help="The gateway's auth token; it never leaves this server.")
    gateway_kernel_name = Unicode("python3", config=True, help="The kernel spec the gateway starts for a model.")
    gateway_request_timeout = Float(30.0, config=True, help="Seconds to wait for one gateway REST call.")
    gateway_warm_timeout = Float(900.0, config=True, help="Seconds to wait for a gateway kernel to load its model.")
    gateway_job_timeout = Float(3600.0, config=True, help="Seconds to wait for one job on the gateway.")
    models = List(
        Unicode(), config=True, help="The models served: names from the checkpoint cache or hub, or checkpoint folders."
    )
    response_path = Unicode(config=True, help="The folder where job records and results are kept.")
    device_map = Union(
        [Unicode(), Dict()],
        default_value=None,
        allow_none=True,
        config=True,
        help="Where served weights load ('cpu', 'cuda', 'auto', ...); default: the GPU if any.",
    )
    max_new_tokens = Integer(512, config=True, help="The most tokens one job may generate.")
    max_result_bytes = Integer(2 * 1024**3, config=True, help="The largest result one job may produce.")
    max_nodes = Integer(20_000, config=True, help="The most nodes one graph may have.")
    max_batch_size = Integer(64, config=True, help="The most prompts one job may run together.")
    max_prompt_tokens = Integer(8192, config=True, help="The longest prompt, in tokens.")
    keep_jobs = Integer(1000, config=True, help="How many finished jobs (and their results) are kept on disk.")
    max_request_bytes = Integer(
        256 * 1024**2, config=True, help="The largest request body; a larger one is refused (413) unread."
    )
    max_memory_bytes = Integer(
        8 * 1024**3,
        config=True,
        help="The most memory one job's graph values (constants, intermediates, saved copies) may hold at once, "
        "computed before it runs and checked while it runs.",
    )
    max_job_seconds = Float(600.0, config=True, help="The longest one job may run; it then ends with an error.")
    max_queued_jobs = Integer(200, config=True, help="The most jobs waiting for one model; more are refused (429).")
    max_queued_per_user = Integer(
        32, config=True, help="The most jobs one user may have waiting or running; more are refused (429)."
    )
    admission_threads = Integer(2, config=True, help="Threads that check requests before they are queued.")
    max_admitting = Integer(
        8, config=True, help="The most requests being checked at once (2 per user); more are refused (429)."
    )

    @default("models")
    def _default_models(self) -> list[str]:
        return [DEFAULT_MODEL]

    @default("response_path")
    def _default_response_path(self) -> str:
        return os.path.join(jupyter_data_dir(), "ndif", "responses")

    @property
    def limits(self) -> Limits:
        return Limits(
            max_nodes=self.max_nodes,
            max_new_tokens=self.max_new_tokens,
            max_batch_size=self.max_batch_size,
            max_prompt_tokens=self.max_prompt_tokens,
            max_result_bytes=self.max_result_bytes,
            max_request_bytes=self.max_request_bytes,
            max_memory_bytes=self.max_memory_bytes,
            max_job_seconds=self.max_job_seconds,
        )

    def limits_document(self) -> dict[str, Any]:
        document: dict[str, Any] = dataclasses.asdict(self.limits)
        document.update(max_queued_jobs=self.max_queued_jobs, max_queued_per_user=self.max_queued_per_user)
        return document

    def initialize_settings(self) -> None:
        self.store = JobStore(Path(self.response_path).expanduser(), keep=self.keep_jobs, log=self.log)
        self.runner = self._make_backend()
        self.admissions = Admissions(self.admission_threads, self.max_admitting)
        self.settings["ndif"] = self
        self._export_location()
        IOLoop.current().add_callback(self._on_loop_start)
        self.log.info(
            "ndif: serving %s with the %s backend; results in %s",
            ", ".join(self.models),
            self.backend,
            self.response_path,
        )

    def _make_backend(self) -> Backend:
        if self.backend == "local":
            return LocalBackend(self.models, self.store, self.device_map, self.limits, self.log)
        if not self.gateway_url:
            raise TraitError("NDIFServer.backend = 'gateway' needs NDIFServer.gateway_url, the Kernel Gateway's URL")
        settings = GatewaySettings(
            self.gateway_url,
            self.gateway_auth_token,
            self.gateway_kernel_name,
            self.gateway_request_timeout,
            self.gateway_warm_timeout,
            self.gateway_job_timeout,
        )
        return GatewayBackend(self.models, self.store, settings, self.device_map, self.limits, self.log)

    def _on_loop_start(self) -> None:
        if getattr(self, "_stopped", False):
            return
        self.store.bind_loop(asyncio.get_running_loop())
        self._export_location()  # the port is known for sure once the server listens

    def initialize_handlers(self) -> None:
        self.handlers.extend(handlers())

    async def stop_extension(self) -> None:
        self._stopped = True
        self.runner.shutdown()
        self.admissions.shutdown()
        for name in (SERVER_URL_ENV, SERVER_TOKEN_ENV):
            os.environ.pop(name, None)

    def _export_location(self) -> None:
        """Tell kernels this server starts where the API is and how to authenticate (they inherit the environment)."""
        app = self.serverapp
        if app is None or app.sock:
            return
        host = "127.0.0.1" if app.ip in _WILDCARD_HOSTS else app.ip
        host = f"[{host}]" if ":" in host else host
        scheme = "https" if app.certfile else "http"
        os.environ[SERVER_URL_ENV] = f"{scheme}://{host}:{app.port}{app.base_url}ndif/api/"
        token = getattr(app.identity_provider, "token", "") or ""
        if token:
            os.environ[SERVER_TOKEN_ENV] = token
        else:
            os.environ.pop(SERVER_TOKEN_ENV, None)

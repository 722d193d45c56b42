"""NDIFServer: the `ndif` extension app, its configuration, and what it tells the kernels it starts."""

from __future__ import annotations

import asyncio
import os
from typing import Any

from jupyter_server.extension.application import ExtensionApp
from tornado.ioloop import IOLoop
from traitlets import Unicode, default

from ndif_jupyter.client import SERVER_TOKEN_ENV, SERVER_URL_ENV

from .core import NDIFCore
from .handlers import handlers
from .identity import server_user
from .settings import NDIFSettings

_WILDCARD_HOSTS = ("", "0.0.0.0", "::", "*")
HUB_TOKEN_ENV = "JUPYTERHUB_API_TOKEN"


class NDIFServer(ExtensionApp, NDIFSettings):
    """Runs intervention graphs sent by kernels on models this server keeps loaded, for all of a user's notebooks;
    or, in a hub user's server (`service_url`), passes its API on to the hub's NDIF service."""

    name = "ndif"
    load_other_extensions = True

    service_url = Unicode(
        config=True,
        help="The hub's NDIF service API to pass this server's `ndif/api/` on to, instead of serving models here. "
        f"Default: ${SERVER_URL_ENV} in a JupyterHub user's server (set by `ndif_server.hub.configure_hub`).",
    )
    service_token = Unicode(
        config=True, help=f"The token for `service_url`; default: ${SERVER_TOKEN_ENV}, else ${HUB_TOKEN_ENV}."
    )
    service_ca_certs = Unicode("", config=True, help="A CA bundle (PEM file) to check `service_url`'s certificate.")

    @default("service_url")
    def _default_service_url(self) -> str:
        in_hub = bool(os.environ.get("JUPYTERHUB_SERVICE_PREFIX"))
        return os.environ.get(SERVER_URL_ENV, "") if in_hub else ""

    @default("service_token")
    def _default_service_token(self) -> str:
        return os.environ.get(SERVER_TOKEN_ENV) or os.environ.get(HUB_TOKEN_ENV, "")

    @property
    def forwarding(self) -> bool:
        return bool(self.service_url)

    def initialize_settings(self) -> None:
        self.settings["ndif"] = self
        self.caller = server_user()
        if self.forwarding:
            self.service_url = self.service_url if self.service_url.endswith("/") else self.service_url + "/"
            self.core = None
            self.log.info("ndif: passing ndif/api/ on to the hub's NDIF service at %s", self.service_url)
            return
        self.core = NDIFCore(self, self.log)
        self._export_location()
        IOLoop.current().add_callback(self._on_loop_start)
        self.log.info(
            "ndif: serving %s with the %s backend; results in %s",
            ", ".join(self.models),
            self.backend,
            self.response_path,
        )

    def _on_loop_start(self) -> None:
        if getattr(self, "_stopped", False) or self.core is None:
            return
        self.core.bind_loop(asyncio.get_running_loop())
        self._export_location()  # the port is known for sure once the server listens

    def initialize_handlers(self) -> None:
        self.handlers.extend(handlers(forwarding=self.forwarding))

    async def stop_extension(self) -> None:
        self._stopped = True
        if self.core is None:
            return
        await self.core.shutdown()
        for name in (SERVER_URL_ENV, SERVER_TOKEN_ENV):
            os.environ.pop(name, None)

    def _export_location(self) -> None:
        """Tell kernels this server starts where the API is and how to authenticate (they inherit the environment)."""
        app: Any = self.serverapp
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

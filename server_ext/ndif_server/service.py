"""The NDIF service of a JupyterHub: the job store, the backend and the REST API, run once for the whole hub.

JupyterHub starts it (`python -m ndif_server.service`, registered by `ndif_server.hub.configure_hub`) with its settings
in `$NDIF_SERVICE_SETTINGS` (JSON), and tells it where to listen and how to check tokens (`$JUPYTERHUB_*`). Every
request is authenticated by JupyterHub: a token (`Authorization: token ...`, what kernels send) or, for a browser, an
OAuth login; both need the scope `access:services!service=<name>`. The caller is the hub user the token belongs to.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import secrets
import signal
from typing import Any
from urllib.parse import urlparse

from jupyterhub.services.auth import HubOAuthCallbackHandler, HubOAuthenticated, UserNotAllowed
from tornado import web

from .api import routes
from .core import NDIFCore
from .identity import hub_caller
from .settings import NDIFSettings, setting_names

SETTINGS_ENV = "NDIF_SERVICE_SETTINGS"
IP_ENV = "NDIF_SERVICE_IP"
"""Where the service listens, when not at the host of its URL (`$JUPYTERHUB_SERVICE_URL`)."""
log = logging.getLogger("ndif_service")


class HubServiceHandler(HubOAuthenticated, web.RequestHandler):
    """Authenticates every request with JupyterHub before its method runs: 401 without credentials (a browser is
    sent to log in), 403 without the service's scope; the caller is the hub user (or service) of the credentials."""

    hub_user: dict[str, Any] | None = None

    async def prepare(self) -> None:
        model = await self.hub_auth.get_user(self, sync=False)
        if not model:
            if self.request.method == "GET" and "text/html" in self.request.headers.get("Accept", ""):
                self.redirect(self.get_login_url())
                return
            self.set_header("WWW-Authenticate", 'token realm="jupyterhub"')
            raise web.HTTPError(401, "JupyterHub authentication is needed: send `Authorization: token <token>`")
        try:
            self.hub_user = self.check_hub_user(model)
        except UserNotAllowed:
            scopes = ", ".join(sorted(self.hub_auth.access_scopes))
            raise web.HTTPError(
                403, f"{model.get('name')} may not use this service: it needs the scope {scopes}"
            ) from None
        if self.request.method not in ("GET", "HEAD", "OPTIONS") and not self.hub_auth.get_token(self, in_cookie=False):
            self.check_xsrf_cookie()  # a browser's cookie: the hub's XSRF rule
        self.core = self.settings["ndif_core"]
        self.caller = hub_caller(model)

    def get_current_user(self) -> dict[str, Any] | None:
        return self.hub_user

    def write_error(self, status_code: int, **kwargs: Any) -> None:
        """A JSON body `{"message": ...}`: the message of the HTTPError raised."""
        error = kwargs.get("exc_info", (None, None, None))[1]
        message = getattr(error, "log_message", None) if isinstance(error, web.HTTPError) else None
        self.set_header("Content-Type", "application/json")
        self.finish(json.dumps({"message": message or self._reason, "reason": self._reason}))


class IndexHandler(HubServiceHandler):
    async def get(self) -> None:
        """Where the API is and who the caller is."""
        self.set_header("Content-Type", "application/json")
        self.finish(json.dumps({"api": self.request.path.rstrip("/") + "/api/", "user": self.caller.document()}))


def read_settings(document: str) -> NDIFSettings:
    """The service's settings from their JSON; a name NDIFSettings does not have is an error that names it."""
    values = json.loads(document or "{}")
    unknown = sorted(set(values) - set(setting_names()))
    if unknown:
        raise ValueError(f"unknown NDIF settings {unknown}; the settings are {setting_names()}")
    return NDIFSettings(**values)


def make_app(core: NDIFCore, prefix: str, callback_path: str) -> web.Application:
    return web.Application(
        [
            *routes(prefix + "api/", HubServiceHandler),
            (callback_path, HubOAuthCallbackHandler),
            (prefix + "?", IndexHandler),
        ],
        ndif_core=core,
        cookie_secret=secrets.token_bytes(32),
    )


async def serve() -> None:
    settings = read_settings(os.environ.pop(SETTINGS_ENV, ""))  # not passed on to anything this process starts
    core = NDIFCore(settings, log)
    core.bind_loop(asyncio.get_running_loop())
    prefix = os.environ.get("JUPYTERHUB_SERVICE_PREFIX", "/services/ndif/")
    callback = urlparse(os.environ.get("JUPYTERHUB_OAUTH_CALLBACK_URL", prefix + "oauth_callback")).path
    address = urlparse(os.environ.get("JUPYTERHUB_SERVICE_URL", "http://127.0.0.1:10101"))
    host = os.environ.get(IP_ENV) or address.hostname or "127.0.0.1"
    server = make_app(core, prefix, callback).listen(address.port or 80, host)
    log.info(
        "ndif service: serving %s with the %s backend at %s%s; results in %s",
        ", ".join(settings.models),
        settings.backend,
        address.geturl().rstrip("/"),
        prefix,
        settings.response_path,
    )
    stopping = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stopping.set)
    await stopping.wait()
    log.info("ndif service: stopping")
    server.stop()
    await core.shutdown()


def main() -> None:
    logging.basicConfig(level=logging.INFO, format="[%(levelname)1.1s %(asctime)s %(name)s] %(message)s")
    asyncio.run(serve())


if __name__ == "__main__":
    main()

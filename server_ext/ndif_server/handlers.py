"""The REST API in the Jupyter server extension, under `{base_url}ndif/api/`: Jupyter authenticates and authorizes
every request (on the resource "ndif"), and every request it lets in is the server's one user."""

from __future__ import annotations

from jupyter_server.auth.decorator import HTTP_METHOD_TO_AUTH_ACTION
from jupyter_server.base.handlers import APIHandler
from jupyter_server.utils import ensure_async
from tornado import web

from .api import routes
from .forwarding import ForwardingHandler

RESOURCE = "ndif"
PREFIX = "/ndif/api/"


class ExtensionHandler(APIHandler):
    """Jupyter's authentication (401 without it) and authorization on the resource "ndif" for every endpoint; the
    caller is the server's one user (`NDIFServer.caller`), whichever of its token or login was presented."""

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
        action = HTTP_METHOD_TO_AUTH_ACTION.get(self.request.method or "GET", "read")
        if not await ensure_async(self.authorizer.is_authorized(self, self.current_user, action, RESOURCE)):
            raise web.HTTPError(403, f"this user may not {action} on the resource {RESOURCE}")
        app = self.settings["ndif"]
        self.core = app.core
        self.caller = app.caller

    def _unauthenticated(self) -> web.HTTPError:
        self.set_header("WWW-Authenticate", 'token realm="jupyter"')
        return web.HTTPError(
            401, "Jupyter authentication is needed: send the server's token (header `Authorization: token <token>`)."
        )


class ExtensionForwardingHandler(ForwardingHandler, ExtensionHandler):
    """The API of a hub user's server, forwarded to the hub's NDIF service, so that the sidebar shows its models
    and the user's jobs."""


def handlers(forwarding: bool = False) -> list[tuple[str, type]]:
    if forwarding:
        return [(rf"{PREFIX}(?P<path>.*)", ExtensionForwardingHandler)]
    return routes(PREFIX, ExtensionHandler)

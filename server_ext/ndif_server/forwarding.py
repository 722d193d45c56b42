"""ForwardingHandler: a hub user's server passes its `ndif/api/` requests on to the hub's NDIF service, with the
token JupyterHub gave that server (the user's own), so that the sidebar shows the service's models and their jobs."""

from __future__ import annotations

from tornado import web
from tornado.httpclient import AsyncHTTPClient, HTTPClientError, HTTPRequest
from tornado.httputil import HTTPHeaders, parse_response_start_line

from ndif_jupyter.client import CLIENT_HEADER

PASSED_ON = ("Content-Type", "Retry-After", "Location", "WWW-Authenticate")
FORWARDED_BODY_BYTES = 64 * 1024**2
"""The largest body a user's server passes on to the service; kernels send their jobs to the service directly."""


class ForwardingHandler(web.RequestHandler):
    """Every method of the API, passed on to `settings["ndif"].service_url` and its answer streamed back. Mixed
    over a base handler that authenticates the request (and sets nothing else)."""

    async def get(self, path: str) -> None:
        await self._forward(path)

    async def delete(self, path: str) -> None:
        await self._forward(path)

    async def post(self, path: str) -> None:
        await self._forward(path)

    async def _forward(self, path: str) -> None:
        app = self.settings["ndif"]
        if len(self.request.body) > FORWARDED_BODY_BYTES:
            raise web.HTTPError(413, f"send jobs to {app.service_url} directly (NDIF_SERVER_URL)")
        query = f"?{self.request.query}" if self.request.query else ""
        headers = {"Authorization": f"token {app.service_token}"}
        for name in ("Content-Type", CLIENT_HEADER):
            if name in self.request.headers:
                headers[name] = self.request.headers[name]
        started = False

        def on_header(line: str) -> None:
            nonlocal started
            if line.startswith("HTTP/"):
                self.set_status(parse_response_start_line(line.strip()).code)
                started = True
                return
            parsed = HTTPHeaders.parse(line) if line.strip() else {}
            for name in PASSED_ON:
                if name in parsed:
                    self.set_header(name, parsed[name])

        def on_chunk(chunk: bytes) -> None:
            self.write(chunk)

        request = HTTPRequest(
            app.service_url + path + query,
            method=self.request.method or "GET",
            headers=headers,
            body=self.request.body if self.request.method == "POST" else None,
            header_callback=on_header,
            streaming_callback=on_chunk,
            request_timeout=120.0,
            ca_certs=app.service_ca_certs or None,
        )
        try:
            await AsyncHTTPClient().fetch(request, raise_error=False)
        except (OSError, HTTPClientError) as error:
            if not started:
                raise web.HTTPError(502, f"the hub's NDIF service cannot be reached ({error})") from None
            raise
        self.finish()

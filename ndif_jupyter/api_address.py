"""Where the ndif REST API is, from the address a user gives: the API's own, or the Jupyter server's it runs in."""

from __future__ import annotations

import urllib.parse

API_PATH = "ndif/api/"
"""The API's place under a Jupyter server's base URL."""

_JUPYTER_PAGES = frozenset({"lab", "tree", "notebooks", "doc", "edit", "view", "terminals", "files", "voila"})
"""The first part of the path of a Jupyter server's pages: what follows the server's base URL."""


def api_address(address: str) -> tuple[str, str]:
    """The API's URL (ending in `/`) and the token in `address`'s query (`?token=...`, else "").

    `address` is the API's URL (its path ends in `api` or `api/`: the server extension's `.../ndif/api/`, a hub
    service's `/services/<name>/api/`), or the URL of the Jupyter server it runs in, as Jupyter prints it or as a
    browser shows one of its pages (`http://host:8888/lab?token=...`, `.../user/alice/tree/work`): the API is then
    `ndif/api/` under the server's base URL.
    """
    parts = urllib.parse.urlsplit(address.strip())
    token = urllib.parse.parse_qs(parts.query).get("token", [""])[0]
    segments = [segment for segment in parts.path.split("/") if segment]
    if segments and segments[-1] == "api":
        path = "/" + "/".join(segments) + "/"
    else:
        first = (
            2 if segments[:1] == ["user"] else 0
        )  # a hub user's server: /user/<name>/ is its base, whatever the name
        pages = (index for index in range(first, len(segments)) if segments[index] in _JUPYTER_PAGES)
        page = next(pages, len(segments))
        base = "/".join(segments[:page])
        path = "/" + (base + "/" if base else "") + API_PATH
    return urllib.parse.urlunsplit((parts.scheme, parts.netloc, path, "", "")), token

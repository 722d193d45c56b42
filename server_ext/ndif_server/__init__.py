"""ndif_server: the Jupyter server extension that runs intervention graphs for all of a user's notebooks.

Kernels send graphs (the wire format of `ndif_jupyter.protocol`) to `{base_url}ndif/api/`; the server validates
them, runs them on models it keeps loaded, and keeps each result on disk until it is fetched.
"""

from __future__ import annotations


def _jupyter_server_extension_points() -> list[dict]:
    from .app import NDIFServer

    return [{"module": "ndif_server", "app": NDIFServer}]

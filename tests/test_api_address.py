"""`NDIF_SERVER_URL` may be the API's URL or the Jupyter server's, as Jupyter prints it or a browser shows it."""

from __future__ import annotations

import pytest

from ndif_jupyter.api_address import api_address
from ndif_jupyter.client import ServerClient


@pytest.mark.parametrize(
    ("given", "api", "token"),
    [
        ("http://127.0.0.1:8888/ndif/api/", "http://127.0.0.1:8888/ndif/api/", ""),
        ("http://127.0.0.1:8888/ndif/api", "http://127.0.0.1:8888/ndif/api/", ""),
        ("http://127.0.0.1:8888/", "http://127.0.0.1:8888/ndif/api/", ""),
        ("http://127.0.0.1:8888", "http://127.0.0.1:8888/ndif/api/", ""),
        ("http://127.0.0.1:8888/lab?token=abc123", "http://127.0.0.1:8888/ndif/api/", "abc123"),
        ("http://localhost:8888/tree?token=t0k", "http://localhost:8888/ndif/api/", "t0k"),
        ("http://host/prefix/lab/tree/work/a.ipynb", "http://host/prefix/ndif/api/", ""),
        ("https://hub.example/user/alice/lab/tree/x.ipynb", "https://hub.example/user/alice/ndif/api/", ""),
        ("https://hub.example/user/lab/", "https://hub.example/user/lab/ndif/api/", ""),
        ("https://hub.example/services/ndif/api/", "https://hub.example/services/ndif/api/", ""),
        ("  http://127.0.0.1:8888/?token=x  ", "http://127.0.0.1:8888/ndif/api/", "x"),
    ],
)
def test_the_api_is_found_from_the_address_given(given, api, token):
    assert api_address(given) == (api, token)


def test_a_token_given_wins_over_one_in_the_url():
    client = ServerClient("http://127.0.0.1:8888/lab?token=from-url", "given")
    assert (client.url, client.token) == ("http://127.0.0.1:8888/ndif/api/", "given")
    assert ServerClient("http://127.0.0.1:8888/lab?token=from-url").token == "from-url"

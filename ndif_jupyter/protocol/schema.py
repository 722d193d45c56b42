"""The JSON Schemas of the request and result documents (the `*.schema.json` files here), and checking against them."""

from __future__ import annotations

import json
from functools import cache
from pathlib import Path
from typing import Any

from ..errors import ProtocolError

FORMAT_VERSION = 1
SCHEMA_DIR = Path(__file__).parent


def schema(kind: str) -> dict[str, Any]:
    """The JSON Schema of a "request" or a "result" document."""
    return json.loads((SCHEMA_DIR / f"{kind}.schema.json").read_text())


@cache
def _validator(kind: str):
    from jsonschema import Draft202012Validator

    return Draft202012Validator(schema(kind))


def check_document(document: dict[str, Any], kind: str) -> None:
    """Raise ProtocolError naming the first place where `document` does not follow its schema."""
    version = document.get("version")
    if isinstance(version, int) and not isinstance(version, bool) and version != FORMAT_VERSION:
        raise ProtocolError(f"format version {version} is not supported: this side speaks version {FORMAT_VERSION}")
    from jsonschema.exceptions import best_match

    error = best_match(_validator(kind).iter_errors(document))
    if error is not None:
        where = "/".join(str(part) for part in error.absolute_path) or "the document"
        raise ProtocolError(f"the {kind} does not follow the format at {where}: {error.message}")

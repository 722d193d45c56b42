"""The JSON Schemas of the request and result documents (the `*.schema.json` files here), and checking against them."""

from __future__ import annotations

import json
from functools import cache
from pathlib import Path
from typing import Any

import fastjsonschema

from ..errors import ProtocolError
from .limits import cut

FORMAT_VERSION = 1
SCHEMA_DIR = Path(__file__).parent


def schema(kind: str) -> dict[str, Any]:
    """The JSON Schema of a "request" or a "result" document."""
    return json.loads((SCHEMA_DIR / f"{kind}.schema.json").read_text())


@cache
def _validator(kind: str):
    """The schema compiled to a checking function (tens of microseconds a node, where an interpreter takes a
    millisecond)."""
    return fastjsonschema.compile(schema(kind))


def check_document(document: dict[str, Any], kind: str) -> None:
    """Raise ProtocolError naming the first place where `document` does not follow its schema.

    Call it on documents whose depth is bounded (`bounds.check_bounds`): the check recurses into nested values.
    """
    version = document.get("version")
    if isinstance(version, int) and not isinstance(version, bool) and version != FORMAT_VERSION:
        raise ProtocolError(f"format version {version} is not supported: this side speaks version {FORMAT_VERSION}")
    try:
        _validator(kind)(document)
    except fastjsonschema.JsonSchemaValueException as error:
        where = "/".join(str(part) for part in error.path[1:]) or "the document"
        rule = error.message.removeprefix(error.name or "").strip()
        raise ProtocolError(f"the {kind} does not follow the format at {cut(where)}: {cut(rule, 160)}") from None

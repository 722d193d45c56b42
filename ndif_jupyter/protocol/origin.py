"""Where a request was sent from: the path of the sender's notebook and the id of the cell that sent it.

Display only: a server keeps it on the job and lists it to whoever may see the job, so that its sender can tell
their jobs apart and go back to the cell; it never decides who may do what. Its bounds are those of the request
schema (`origin`), which a server checks like every other field.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache
from typing import Any

import fastjsonschema

from .schema import schema

FIELDS = ("notebook", "cell")


@dataclass(frozen=True)
class Origin:
    """The notebook's path as its kernel knows it, and the cell's id; either may be empty."""

    notebook: str = ""
    cell: str = ""

    @classmethod
    def sendable(cls, notebook: str, cell: str) -> Origin | None:
        """What a kernel knows, each field left out when the schema would refuse it; None when nothing is left."""
        kept = {name: value for name, value in zip(FIELDS, (notebook, cell), strict=True) if _fits(name, value)}
        return cls(**kept) if kept else None

    @classmethod
    def from_document(cls, document: dict[str, Any]) -> Origin | None:
        """The `origin` of a request document that follows the schema, or None when it has none."""
        found = document.get("origin")
        if not found:
            return None
        return cls(found.get("notebook", ""), found.get("cell", ""))

    def document(self) -> dict[str, str]:
        """The fields that are set, as the request document holds them."""
        return {name: value for name, value in zip(FIELDS, (self.notebook, self.cell), strict=True) if value}


@cache
def _field_check(name: str):
    return fastjsonschema.compile(schema("request")["properties"]["origin"]["properties"][name])


def _fits(name: str, value: str) -> bool:
    if not value:
        return False
    try:
        _field_check(name)(value)
    except fastjsonschema.JsonSchemaValueException:
        return False
    return True

"""JSON read with bounds: no unbounded recursion, no document deeper, larger or with longer strings than allowed."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from ..errors import ProtocolError
from .limits import MAX_DEPTH, MAX_STRING


def load_json(
    raw: bytes | bytearray | str,
    what: str,
    max_items: int,
    max_string: int = MAX_STRING,
    first: Callable[[Any], None] | None = None,
) -> Any:
    """Parse `raw` (called `what` in errors) and check its bounds; ProtocolError when it is not JSON or too big.

    `first`, when given, sees the parsed value before the walk that checks its bounds: a place for checks that
    cost nothing (counts a document declares), so that a request refused by them costs only its parsing.
    """
    try:
        value = json.loads(raw)
    except RecursionError:
        raise ProtocolError(f"{what} is nested more than {MAX_DEPTH} levels deep") from None
    except ValueError as error:
        raise ProtocolError(f"{what} is not JSON: {str(error)[:120]}") from None
    if first is not None:
        first(value)
    check_bounds(value, what, max_items, max_string)
    return value


def check_bounds(value: Any, what: str, max_items: int, max_string: int = MAX_STRING) -> None:
    """Walk `value` without recursion: at most MAX_DEPTH levels, `max_items` values, strings of `max_string`."""
    stack: list[tuple[Any, int]] = [(value, 0)]
    items = 0
    while stack:
        current, depth = stack.pop()
        items += 1
        if items > max_items:
            raise ProtocolError(f"{what} holds more than {max_items} values, over this server's limit")
        if isinstance(current, str):
            if len(current) > max_string:
                raise ProtocolError(
                    f"{what} holds a string of {len(current)} characters; the longest allowed is {max_string}"
                )
        elif isinstance(current, (list, dict)):
            if depth >= MAX_DEPTH:
                raise ProtocolError(f"{what} is nested more than {MAX_DEPTH} levels deep")
            if isinstance(current, dict):
                for key in current:
                    if len(key) > MAX_STRING:
                        raise ProtocolError(f"{what} has a key of {len(key)} characters; the longest is {MAX_STRING}")
                stack.extend((child, depth + 1) for child in current.values())
            else:
                stack.extend((child, depth + 1) for child in current)

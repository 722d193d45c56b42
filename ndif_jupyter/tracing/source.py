"""Finds the user's line that is recording a node, skipping frames of this package and of torch."""

from __future__ import annotations

import linecache
import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from types import FrameType

import torch

from ..errors import Source

_PACKAGE_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
_TORCH_DIR = os.path.dirname(os.path.abspath(torch.__file__))
_SKIPPED = (_PACKAGE_DIR + os.sep, _TORCH_DIR + os.sep)


_replayed: ContextVar[Source | None] = ContextVar("replayed_source", default=None)


@contextmanager
def recorded_at(source: Source | None) -> Iterator[None]:
    """While inside, nodes are recorded at `source` (a line recorded earlier, replayed now) instead of the caller's."""
    token = _replayed.set(source)
    try:
        yield
    finally:
        _replayed.reset(token)


def user_source() -> Source | None:
    """The innermost frame outside this package and torch, as a Source (or the line being replayed)."""
    replayed = _replayed.get()
    if replayed is not None:
        return replayed
    frame: FrameType | None = sys._getframe(1)
    while frame is not None:
        filename = frame.f_code.co_filename
        if not filename.startswith(_SKIPPED):
            lineno = frame.f_lineno
            return Source(filename, lineno, linecache.getline(filename, lineno, frame.f_globals).rstrip("\n"))
        frame = frame.f_back
    return None

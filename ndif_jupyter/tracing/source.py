"""Finds the user's line that is recording a node, skipping frames of this package and of torch."""

from __future__ import annotations

import linecache
import os
import sys
from types import FrameType

import torch

from ..errors import Source

_PACKAGE_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
_TORCH_DIR = os.path.dirname(os.path.abspath(torch.__file__))
_SKIPPED = (_PACKAGE_DIR + os.sep, _TORCH_DIR + os.sep)


def user_source() -> Source | None:
    """The innermost frame outside this package and torch, as a Source."""
    frame: FrameType | None = sys._getframe(1)
    while frame is not None:
        filename = frame.f_code.co_filename
        if not filename.startswith(_SKIPPED):
            lineno = frame.f_lineno
            return Source(filename, lineno, linecache.getline(filename, lineno, frame.f_globals).rstrip("\n"))
        frame = frame.f_back
    return None

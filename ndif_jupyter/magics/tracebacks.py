"""A failed `%%ndif` cell reads like a failed plain cell: its traceback starts at the cell's line, no frames of ours."""

from __future__ import annotations

import os
from types import TracebackType
from typing import Any

from .running import running_ndif_cell

_PACKAGE_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__))) + os.sep


def cell_traceback(error: BaseException, filename: str) -> TracebackType | None:
    """The part of `error`'s traceback from the cell body on, without this package's frames at its end.

    An error raised after the body ran (while the graph runs) has no frame in the body; when it names the line
    that recorded the failing node, a frame at that line of the cell is made for it.
    """
    entries = []
    tb = error.__traceback__
    while tb is not None:
        entries.append(tb)
        tb = tb.tb_next
    start = next((i for i, entry in enumerate(entries) if entry.tb_frame.f_code.co_filename == filename), None)
    kept = entries[start:] if start is not None else []
    while kept and kept[-1].tb_frame.f_code.co_filename.startswith(_PACKAGE_DIR):
        kept.pop()
    frames = [(entry.tb_frame, entry.tb_lasti, entry.tb_lineno) for entry in kept]
    source = getattr(error, "source", None)
    if not frames and source is not None and source.filename == filename:
        made = _frame_at(filename, source.lineno)
        frames.append((made.tb_frame, made.tb_lasti, made.tb_lineno))
    chain = None
    for frame, lasti, lineno in reversed(frames):
        chain = TracebackType(chain, frame, lasti, lineno)
    return chain


def report_in_cell(shell: Any, error: BaseException, filename: str) -> bool:
    """Show `error` as the running `%%ndif` cell's error and mark the cell failed; False when no such cell runs.

    The cell fails as if the error had been raised by its own code: the kernel replies with the error's name and
    message, and "Run All" stops. Outside a `%%ndif` cell (the magic called from code), the caller raises instead.
    """
    running = running_ndif_cell(shell)
    if running is None:
        return False
    traceback = cell_traceback(error, filename)
    error.__traceback__ = traceback
    shell.showtraceback((type(error), error, traceback), tb_offset=0)
    running.error_in_exec = error
    return True


def report_syntax_error(shell: Any, error: SyntaxError) -> bool:
    """Show a syntax error of a `%%ndif` body at its cell line and mark the cell failed; False outside such a cell.

    Call it while handling the error: IPython's syntax error display reads the exception being handled.
    """
    running = running_ndif_cell(shell)
    if running is None:
        return False
    error.__traceback__ = None
    shell.showsyntaxerror()
    running.error_in_exec = error
    return True


def _frame_at(filename: str, lineno: int) -> TracebackType:
    """A traceback entry whose frame runs line `lineno` of `filename` (compiled code that raises there)."""
    code = compile("\n" * (lineno - 1) + "raise __ndif_marker__", filename, "exec")
    try:
        exec(code, {"__ndif_marker__": _Marker(), "__name__": "__ndif_cell__"})
    except _Marker as marker:
        made = marker.__traceback__.tb_next if marker.__traceback__ is not None else None
        if made is not None:
            return made
    raise RuntimeError(f"no traceback entry could be made for {filename}, line {lineno}")


class _Marker(Exception):
    """Raised by the code of `_frame_at` to make a frame at a chosen line."""

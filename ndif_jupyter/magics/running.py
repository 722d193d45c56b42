"""What IPython says about the cell being run: its result object, whether it is a `%%ndif` cell, its first line."""

from __future__ import annotations

from typing import Any


def running_result(shell: Any) -> Any:
    """IPython's ExecutionResult of the cell being run (None outside `run_cell`)."""
    return getattr(shell.displayhook, "exec_result", None)


def running_ndif_cell(shell: Any) -> Any:
    """The running cell's ExecutionResult when that cell is a `%%ndif` cell, else None."""
    running = running_result(shell)
    return running if _raw_cell(running).lstrip().startswith("%%ndif") else None


def cell_header(shell: Any) -> str:
    """The running cell's first line as the user wrote it (before IPython expanded `$names` in it)."""
    first = _raw_cell(running_result(shell)).lstrip().split("\n", 1)[0]
    return first if first.startswith("%%ndif") else "%%ndif"


def cell_number(shell: Any) -> int:
    """The number of the cell being run (IPython 9 counts the next cell already while one runs)."""
    number = getattr(running_result(shell), "execution_count", None)
    return number if number is not None else shell.execution_count


def _raw_cell(running: Any) -> str:
    return getattr(getattr(running, "info", None), "raw_cell", None) or ""

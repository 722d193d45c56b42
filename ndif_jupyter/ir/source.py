"""Source: the user's line that recorded a graph node, as it travels with the node."""

from __future__ import annotations

import sys
from dataclasses import dataclass


@dataclass(frozen=True)
class Source:
    """The user's line that recorded a node: file name, line number and the line's text."""

    filename: str
    lineno: int
    line: str

    def describe(self) -> str:
        cell = _notebook_cell_label(self.filename)
        text = f"  {cell}, line {self.lineno}" if cell else f'  File "{self.filename}", line {self.lineno}'
        if self.line:
            text += f"\n    {self.line.strip()}"
        return text


def _notebook_cell_label(filename: str) -> str | None:
    """ "Cell In[5]" when `filename` is the code of an IPython cell, as IPython's own tracebacks name it.

    IPython is only looked up, never imported: where it is not running, there are no cells.
    """
    ipython = sys.modules.get("IPython")
    shell = ipython.get_ipython() if ipython is not None else None
    compiler = getattr(shell, "compile", None)
    format_code_name = getattr(compiler, "format_code_name", None)
    name = format_code_name(filename) if format_code_name is not None else None
    return " ".join(name) if name else None

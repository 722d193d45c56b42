"""Progress lines for long work (weight loading, a server's job) ending in a short outcome, and finding the kernel.

In a Jupyter kernel the line is one display output updated in place, so a saved notebook keeps only its last text;
on a terminal it is one line of stdout rewritten with carriage returns; elsewhere (stdout a pipe or a file) nothing.
"""

from __future__ import annotations

import sys
import time
from typing import Any

MIN_INTERVAL = 0.2
"""Seconds between two updates of the line: a loop of a thousand steps sends a few messages, not a thousand."""


def kernel_shell() -> Any:
    """The shell of the Jupyter kernel this process runs, or None outside one (plain Python, a terminal IPython, a
    server). IPython is looked up, never imported: a process without it loaded runs no kernel, and importing it to
    ask would cost start-up time and load notebook code into a server."""
    ipython = sys.modules.get("IPython")
    shell = ipython.get_ipython() if ipython is not None else None
    return shell if getattr(shell, "kernel", None) is not None else None


class ProgressLine:
    """One line of progress: `update` rewrites it (at most every MIN_INTERVAL s), `finish` writes its last text."""

    def __init__(self) -> None:
        self._handle: Any = None
        self._written = False
        self._last = 0.0
        self._in_kernel = kernel_shell() is not None
        self._on_terminal = not self._in_kernel and getattr(sys.stdout, "isatty", lambda: False)()

    @property
    def shown(self) -> bool:
        return self._written or self._handle is not None

    def update(self, text: str, force: bool = False) -> None:
        now = time.monotonic()
        if not force and self.shown and now - self._last < MIN_INTERVAL:
            return
        self._last = now
        self._write(text, final=False)

    def finish(self, text: str) -> None:
        self._write(text, final=True)

    def _write(self, text: str, final: bool) -> None:
        if self._in_kernel:
            from IPython.display import display

            bundle = {"text/plain": text}
            if self._handle is None:
                self._handle = display(bundle, raw=True, display_id=True)
            else:
                self._handle.update(bundle, raw=True)
            return
        if not self._on_terminal:
            return
        self._written = True
        sys.stdout.write("\r" + text.ljust(79) + ("\n" if final else ""))
        sys.stdout.flush()

"""ModuleValues: `.output`, `.input` and `.inputs` of a module or of one of its inner operations, read as proxies and
set, forwarded to the model's open block; `display_path`, a path as the user writes it."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .traced_model import TracedModel

EVENTS = ("output", "input", "inputs")
"""The values of a module that a block reads and sets."""


class ModuleValues:
    """The values of a module (or of an inner operation) at the open block's invoke and step: `.output`, `.input`
    and `.inputs`, read as proxies and set, forwarded to the open block."""

    __slots__ = ()
    _traced: TracedModel
    _path: str

    @property
    def output(self):
        """The output at the current invoke and generation step."""
        __tracebackhide__ = True
        return self._open_tracer(".output").module_get(self._path, "output")

    @output.setter
    def output(self, value: Any) -> None:
        __tracebackhide__ = True
        self._open_tracer(".output").module_set(self._path, "output", value)

    @property
    def input(self):
        """The first input (the first positional argument, else the first keyword argument)."""
        __tracebackhide__ = True
        return self._open_tracer(".input").module_get(self._path, "input")

    @input.setter
    def input(self, value: Any) -> None:
        __tracebackhide__ = True
        self._open_tracer(".input").module_set(self._path, "input", value)

    @property
    def inputs(self):
        """The inputs as `(args, kwargs)`."""
        __tracebackhide__ = True
        return self._open_tracer(".inputs").module_get(self._path, "inputs")

    @inputs.setter
    def inputs(self, value: Any) -> None:
        __tracebackhide__ = True
        self._open_tracer(".inputs").module_set(self._path, "inputs", value)

    def __setattr__(self, name: str, value: Any) -> None:
        __tracebackhide__ = True
        if name in EVENTS:
            object.__setattr__(self, name, value)
            return
        raise AttributeError(
            f"`{self._display()}.{name} = ...` cannot be recorded: only `.output`, `.input` and `.inputs` can be set."
        )

    def _open_tracer(self, what: str):
        """The model's open block; outside one, the error names `what` was used (`model.x.output`)."""
        __tracebackhide__ = True
        tracer = self._traced.open_block
        if tracer is None:
            return self._traced.require_open(f"{self._display()}{what}")
        return tracer

    def _display(self) -> str:
        return display_path(self._path)


def display_path(path: str) -> str:
    """`model.transformer.h[11]` for the dotted path `transformer.h.11`."""
    text = "model"
    for part in path.split(".") if path else []:
        text += f"[{part}]" if part.isdigit() else f".{part}"
    return text

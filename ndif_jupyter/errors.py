"""Errors raised to the user, each naming what went wrong, where, and what to do next."""

from __future__ import annotations

from .ir.source import Source


class NDIFError(Exception):
    """Base class of every error this package raises on purpose."""


class TraceError(NDIFError):
    """Something in a `with model.trace()/generate()` block cannot work; raised at the user's line, before it runs."""

    def __init__(self, message: str, source: Source | None = None, hint: str | None = None):
        self.message = message
        self.source = source
        self.hint = hint
        super().__init__(_compose(message, source, hint))


class ExecutionError(NDIFError):
    """A recorded operation failed while the graph ran on the real model."""

    def __init__(self, message: str, source: Source | None = None, hint: str | None = None):
        self.message = message
        self.source = source
        self.hint = hint
        super().__init__(_compose(message, source, hint))


class NotInBatch(ExecutionError):
    """A job of a batch reached a value its rows do not own (one the whole batch shares); it must run alone."""


class RunCancelled(NDIFError):
    """A run was stopped on request before it finished."""


class RunTimedOut(NDIFError):
    """A run went past the time a server allows one job."""


class ProtocolError(NDIFError):
    """A request or result does not follow the wire format (docs/protocol.md), or asks for what is not allowed."""


class ValueNotReadyError(NDIFError):
    """`.value` was read before the graph that computes it has run."""


def first_line(error: BaseException) -> str:
    """The first line of an exception's message, or its type's name when it has none."""
    lines = str(error).strip().splitlines()
    return lines[0] if lines else type(error).__name__


def _compose(message: str, source: Source | None, hint: str | None) -> str:
    parts = [message]
    if source is not None:
        parts.append("Recorded at:\n" + source.describe())
    if hint:
        parts.append(hint)
    return "\n".join(parts)

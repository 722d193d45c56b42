"""What one request may ask of a server, and the fixed bounds every decoder keeps whatever a server allows."""

from __future__ import annotations

from dataclasses import dataclass

MAX_DEPTH = 48
"""The deepest nesting of JSON arrays and objects a document may have (a graph needs about ten)."""

MAX_STRING = 16_384
"""The longest string, in characters, a document may hold (operation names, paths, source lines)."""

MAX_TENSORS = 100_000
"""The most tensors one container may carry."""

MAX_DIMENSIONS = 16
"""The most dimensions a tensor may have."""

QUOTE = 200
"""How many characters of a string sent by a user an error message quotes."""


@dataclass(frozen=True)
class Limits:
    """A server's limits on one request: its size, its graph, its inputs, its memory, its result and its time."""

    max_nodes: int = 20_000
    max_new_tokens: int = 512
    max_batch_size: int = 64
    max_prompt_tokens: int = 8192
    max_result_bytes: int = 2 * 1024**3
    max_request_bytes: int = 256 * 1024**2
    max_memory_bytes: int = 8 * 1024**3
    max_job_seconds: float = 600.0

    @property
    def max_document_items(self) -> int:
        """The most JSON values a request's document may hold: generous for `max_nodes` real nodes."""
        return 64 * self.max_nodes + 16 * self.max_batch_size * self.max_prompt_tokens + 10_000


def quote(text: object, limit: int = QUOTE) -> str:
    """`text` as a message quotes it: `repr` of a string, cut to `limit` characters with the length said."""
    return cut(repr(text) if isinstance(text, str) else str(text), limit)


def cut(text: str, limit: int = QUOTE) -> str:
    """`text` cut to `limit` characters, saying how long it was, with characters that do not print (line breaks,
    direction marks, lone surrogates) escaped, so that the result can always be shown and encoded."""
    shown = text if len(text) <= limit else f"{text[:limit]}… ({len(text)} characters)"
    return shown if shown.isprintable() else shown.encode("unicode_escape").decode("ascii")

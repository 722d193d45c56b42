"""The first words of a request's first prompt, decoded with its model's tokenizer: how a job is told apart in lists."""

from __future__ import annotations

from typing import Any

from ndif_jupyter.ir.session import Request, Session

PREVIEW_CHARS = 60
"""The longest preview, in characters (an ellipsis marks one that was cut)."""

PREVIEW_TOKENS = 32
"""The most tokens decoded for it: enough for PREVIEW_CHARS, however long the prompt."""


def prompt_preview(request: Request, tokenizer: Any) -> str:
    """The first prompt of the request's first block, its special tokens left out and its white space made single
    spaces, cut to PREVIEW_CHARS."""
    graph = request.graphs[0] if isinstance(request, Session) else request
    first = graph.invokes[0].rows[0] if graph.invokes and graph.invokes[0].rows else []
    text = " ".join(tokenizer.decode(first[:PREVIEW_TOKENS], skip_special_tokens=True).split())
    if len(first) > PREVIEW_TOKENS:
        text = text.rstrip("\ufffd")  # a character whose bytes the last decoded token only began
    if len(text) <= PREVIEW_CHARS and len(first) <= PREVIEW_TOKENS:
        return text
    return text[: PREVIEW_CHARS - 1].rstrip() + "…"

"""Token strings for the browser's axes: each position's own text, padding marked, indices where ids are unknown."""

from __future__ import annotations

from typing import Any

PAD_TEXT = "<pad>"


def token_texts(tokenizer: Any, ids: list[int] | None, padding: int, count: int, start: int = 0) -> list[str]:
    """The text of each of `count` positions from `start`; the first `padding` positions of `ids` are left padding.

    Without ids (plain tensors) or without a tokenizer, positions are shown by their index.
    """
    if ids is None or tokenizer is None:
        return [str(index) for index in range(start, start + count)]
    texts = []
    for position in range(start, start + count):
        if position < padding:
            texts.append(PAD_TEXT)
        else:
            texts.append(tokenizer.decode([ids[position]]))
    return texts

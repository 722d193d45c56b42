"""One batch from several invokes: left-padded inputs, and each invoke's own rows and tokens inside batched values.

An invoke sees its values as if its prompts ran alone: its rows, and the last `length` positions of every
sequence dimension (padding is on the left). Where a batched value's shape differs from the shape the invoke
expects (recorded while tracing), the difference is cut away: rows on dimension 0, leading positions elsewhere.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from ..ir.graph import Graph
from ..ir.nested import leaves, map_leaves, zip_map_leaves


@dataclass(frozen=True)
class Span:
    """Where one invoke lives in the batch: its first row, its number of rows, and whether it is the whole batch."""

    start: int
    rows: int
    whole: bool


def build_inputs(graph: Graph, device: torch.device) -> tuple[torch.Tensor, torch.Tensor, list[Span]]:
    """Left-padded input ids, their attention mask, and each invoke's span."""
    length = max(invoke.length for invoke in graph.invokes)
    pad = graph.pad_token_id
    ids: list[list[int]] = []
    mask: list[list[int]] = []
    spans = []
    copies = graph.row_copies  # Hugging Face repeats each row this many times, side by side, before the first pass
    for invoke in graph.invokes:
        spans.append(Span(len(ids) * copies, len(invoke.rows) * copies, len(graph.invokes) == 1))
        for tokens in invoke.rows:
            padding = length - len(tokens)
            ids.append([pad] * padding + list(tokens))
            mask.append([0] * padding + [1] * len(tokens))
    input_ids = torch.tensor(ids, dtype=torch.long)
    attention_mask = torch.tensor(mask, dtype=torch.long)
    return input_ids.to(device), attention_mask.to(device), spans


def position_ids_from(attention_mask: torch.Tensor) -> torch.Tensor:
    """Positions counted from each row's first real token, so that left padding shifts nothing."""
    return (attention_mask.long().cumsum(-1) - 1).clamp(min=0)


def region(actual: torch.Size, expected: list[int], span: Span) -> tuple | None:
    """The index that cuts an invoke's part out of a batched tensor; None where the whole tensor is the invoke's."""
    if span.whole:
        return None
    if len(actual) != len(expected):
        raise ValueError(f"expected a tensor of {len(expected)} dimensions, the model gave {list(actual)}")
    index: list[slice] = []
    cut = False
    for dim, (have, want) in enumerate(zip(actual, expected)):
        if dim == 0 and have != want:
            if have < span.start + span.rows:
                raise ValueError(f"cannot find the invoke's rows in a value of shape {list(actual)}")
            index.append(slice(span.start, span.start + span.rows))
            cut = True
        elif have == want:
            index.append(slice(None))
        elif have > want:
            index.append(slice(have - want, None))
            cut = True
        else:
            raise ValueError(f"the model gave shape {list(actual)} where tracing expected {expected}")
    return tuple(index) if cut else None


def shared_leaf(value: Any, shapes: list, span: Span) -> bool:
    """Whether a batched value holds a tensor the invoke would get whole (no rows of its own to cut), so that
    another invoke's rows or a value they all share would be within its reach."""
    if span.whole:
        return False
    expected = iter(shapes)
    for leaf in leaves(value):
        want = next(expected, None)
        if isinstance(leaf, torch.Tensor) and want is not None and len(leaf.shape) == len(want):
            try:
                if region(leaf.shape, want, span) is None:
                    return True
            except ValueError:
                return False
    return False


def replaces_shared_part(current: Any, new: Any) -> bool:
    """Whether writing `new` over `current` would replace a part of the value that is not a tensor (a cache object,
    a flag): such parts have no rows, so every invoke of the batch would see the change."""
    replaced = False

    def visit(leaf: Any, value: Any) -> Any:
        nonlocal replaced
        if not isinstance(leaf, torch.Tensor) and value is not leaf:
            same_constant = isinstance(value, (bool, int, float, str, type(None))) and type(value) is type(leaf)
            if not (same_constant and value == leaf):
                replaced = True
        return leaf

    zip_map_leaves(visit, current, new)
    return replaced


def narrow(value: Any, shapes: list, span: Span) -> Any:
    """The invoke's part of a batched value (views, so in-place edits reach the model)."""
    if span.whole:
        return value
    expected = iter(shapes)

    def cut(leaf: Any) -> Any:
        want = next(expected, None)
        if isinstance(leaf, torch.Tensor) and want is not None:
            index = region(leaf.shape, want, span)
            return leaf if index is None else leaf[index]
        return leaf

    return map_leaves(cut, value)


def shape_mismatch(value: Any, shapes: list) -> str | None:
    """How a module value differs from the shapes a request declares for its leaves, or None when it matches."""
    found = leaves(value)
    if len(found) != len(shapes):
        return f"the module's value has {len(found)} parts where the request declares {len(shapes)}"
    for leaf, want in zip(found, shapes):
        if isinstance(leaf, torch.Tensor) and (want is None or list(leaf.shape) != want):
            return f"the model gave shape {list(leaf.shape)} where the request declares {want}"
    return None


def replace(current: Any, new: Any, shapes: list, span: Span) -> Any:
    """`current` with the invoke's part replaced by `new` (cast to the current dtype and device, broadcast to shape)."""
    expected = iter(shapes)

    def put(leaf: Any, value: Any) -> Any:
        want = next(expected, None)
        if not isinstance(leaf, torch.Tensor) or want is None:
            return value
        index = region(leaf.shape, want, span)
        if isinstance(value, torch.Tensor):
            value = value.to(device=leaf.device, dtype=leaf.dtype)
        if index is None:
            if not isinstance(value, torch.Tensor):
                return torch.full_like(leaf, value)
            return value if value.shape == leaf.shape else value.expand(leaf.shape).clone()
        updated = leaf.clone()
        updated[index] = value
        return updated

    return zip_map_leaves(put, current, new)

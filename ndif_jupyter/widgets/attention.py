"""Attention sources: saved attention weights [rows, heads, queries, keys] grouped by module, one tensor per step."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch

from .catalog import SavedEntry


@dataclass
class AttentionSource:
    """The attention weights one module gave at each step where they were saved."""

    label: str
    steps: dict[int, torch.Tensor] = field(default_factory=dict)
    invoke: int | None = None

    @property
    def heads(self) -> int:
        return next(iter(self.steps.values())).shape[1]

    @property
    def rows(self) -> int:
        return next(iter(self.steps.values())).shape[0]


def find_attention(entries: list[SavedEntry]) -> list[AttentionSource]:
    """Every saved tensor shaped like attention weights: 4 dimensions, probabilities over the keys (last dimension),
    with at most as many queries as keys. Values of one module at several steps form one source."""
    sources: dict[tuple, AttentionSource] = {}
    for entry in entries:
        value = entry.value
        if value.ndim == 3:
            value = value.unsqueeze(0)
        if value.ndim != 4 or not value.is_floating_point() or value.shape[2] > value.shape[3]:
            continue
        if not _rows_sum_to_one(value):
            continue
        if entry.origin.module is not None:
            key: tuple = (entry.origin.module, entry.origin.event, entry.origin.selection, entry.origin.invoke)
            label = f"{entry.origin.module}.{entry.origin.event}{entry.origin.selection}"
        else:
            key = (entry.name,)
            label = entry.name
        source = sources.setdefault(key, AttentionSource(label, invoke=entry.origin.invoke))
        source.steps[entry.origin.step or 0] = value
    return list(sources.values())


def bounded_patterns(weights: torch.Tensor, start: int, limit: int) -> tuple[torch.Tensor, int, int]:
    """A window of one row's attention patterns [heads, queries, keys] that fits in `limit` values in all.

    The window begins at absolute token `start` on both axes (the queries' window is the same positions; a step that
    saw one query keeps it); returns the patterns, and the first query and key positions they show.
    """
    heads, queries, keys = weights.shape
    side = max(1, math.isqrt(max(1, limit // heads)))
    if queries == 1:
        key_count = min(keys, limit // heads)
        key_start = min(max(0, start), keys - key_count)
        return weights[:, :, key_start : key_start + key_count], 0, key_start
    count = min(side, keys)
    key_start = min(max(0, start), keys - count)
    offset = keys - queries
    query_start = max(0, key_start - offset)
    query_count = min(count, queries - query_start)
    window = weights[:, query_start : query_start + query_count, key_start : key_start + count]
    return window, query_start, key_start


def _rows_sum_to_one(value: torch.Tensor) -> bool:
    sums = value.float().sum(-1)
    return bool(torch.allclose(sums, torch.ones_like(sums), atol=1e-3)) and bool((value >= 0).all())

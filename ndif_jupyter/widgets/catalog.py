"""Catalog: a run's saved values with where each came from (module, step, invoke), and the token ids behind them."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import torch

from ..ir.nested import labelled_leaves
from ..tracing.proxy import Proxy
from ..tracing.record import InvokeTokens, Origin, RunRecord
from .tokens import token_texts

if TYPE_CHECKING:
    from ..model import Model


@dataclass
class SavedEntry:
    """One saved tensor by name, and where it came from (an empty `Origin` for a value computed some other way)."""

    name: str
    value: torch.Tensor
    origin: Origin = field(default_factory=Origin)


@dataclass
class Catalog:
    """What the activation browser shows: the saved entries, the invokes' tokens, and the model to decode and project.

    `device_map` is where the run happened (None for the kernel's default, "server" for the server extension); the
    logit lens runs its small graph there too, so it needs no weights in the kernel after a server run.
    """

    entries: list[SavedEntry]
    invokes: list[InvokeTokens]
    model: Model | None = None
    device_map: Any = None
    title: str = ""
    texts: list[tuple[str, str]] = field(default_factory=list)

    @classmethod
    def of_run(
        cls, record: RunRecord, entries: list[SavedEntry], title: str, texts: list[tuple[str, str]] | None = None
    ) -> Catalog:
        """The catalog of a block's run: its invokes' tokens, its model, and where it ran."""
        return cls(entries, record.invokes, record.model, record.device_map, title, texts or [])

    def position_texts(self, invoke: int | None, row: int, step: int, total: int, count: int, start: int) -> list[str]:
        """The text of `count` positions from `start` among the `total` a forward pass at `step` saw for one row.

        A value of unknown invoke (a plain tensor) belongs to the only invoke when there is one; otherwise, and where
        the ids are unknown, positions are shown by their index.
        """
        if invoke is None and len(self.invokes) == 1:
            invoke = 0
        ids = self._token_ids(invoke, row, step, total) if invoke is not None else None
        padding = self._padding(invoke, row, step, total) if invoke is not None else 0
        tokenizer = self.model.tokenizer if self.model is not None else None
        return token_texts(tokenizer, ids, padding, count, start)

    def _token_ids(self, invoke: int, row: int, step: int, count: int) -> list[int] | None:
        """The ids of the `count` positions a forward pass at `step` saw for one row, or None when they are unknown."""
        if invoke >= len(self.invokes) or row >= len(self.invokes[invoke].rows):
            return None
        tokens = self.invokes[invoke]
        pad_id = self.model.loaded.pad_token_id if self.model is not None else 0
        seen = tokens.sequence(row, pad_id)[: tokens.length + step]
        if count > len(seen):
            return None
        return seen[len(seen) - count :]

    def _padding(self, invoke: int, row: int, step: int, count: int) -> int:
        """How many of those `count` positions are left padding."""
        if invoke >= len(self.invokes) or row >= len(self.invokes[invoke].rows):
            return 0
        tokens = self.invokes[invoke]
        before = tokens.length + step - count
        return max(0, tokens.pad_count(row) - before)


def entries_from_record(record: RunRecord, named: dict[str, Any]) -> list[SavedEntry]:
    """One entry per saved tensor among the values the user named, with the origin the run records for it.

    `named` maps each name to the value the body assigned (proxies, or lists, tuples and dicts of them).
    """
    entries: list[SavedEntry] = []
    for name, value in named.items():
        for label, proxy in labelled_leaves(name, value):
            if isinstance(proxy, Proxy):
                entry = entry_for(record, label, proxy.node_id)
                if entry is not None:
                    entries.append(entry)
    return entries


def entries_from_saved(record: RunRecord) -> list[SavedEntry]:
    """One entry per saved tensor of a run, in the order they were saved, named by module event or line."""
    entries = [entry_for(record, record.label(node_id), node_id) for node_id in record.saved_ids]
    return [entry for entry in entries if entry is not None]


def entries_from_values(values: Any, name: str = "value") -> list[SavedEntry]:
    """Entries for plain tensors (a tensor, or a dict, list or tuple of them), which have no recorded origin."""
    return [SavedEntry(label, leaf) for label, leaf in labelled_leaves(name, values) if isinstance(leaf, torch.Tensor)]


def entry_for(record: RunRecord, label: str, node_id: int) -> SavedEntry | None:
    """The entry of one saved node, or None when its value is not a tensor (or was not computed)."""
    value = record.values.get(node_id)
    if not isinstance(value, torch.Tensor):
        return None
    return SavedEntry(label, value, record.origin(node_id))


__all__ = ["Catalog", "InvokeTokens", "SavedEntry", "entries_from_record", "entries_from_saved", "entries_from_values"]

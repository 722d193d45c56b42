"""Catalog: the saved values of a run with where each came from (module, step, invoke), and the token ids behind them."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import torch

from ..structures import labelled_leaves
from ..tracing.graph import Ref
from .tokens import token_texts

if TYPE_CHECKING:
    from ..model import Model
    from ..tracing.tracer import Tracer

_GETTERS = {"module.output": "output", "module.input": "input", "module.inputs": "inputs"}


@dataclass
class SavedEntry:
    """One saved tensor and its origin.

    `module` and `event` name the module value it was read from (None for a value computed some other way);
    `selection` is "" when the tensor is that value itself, else the indexing applied to it (for example "[1]" for the
    attention weights of an attention module's output tuple), or "..." when other operations were applied.
    """

    name: str
    value: torch.Tensor
    module: str | None = None
    event: str | None = None
    invoke: int | None = None
    step: int | None = None
    selection: str = ""


@dataclass
class InvokeTokens:
    """The token ids of one invoke: its rows left-padded to its own length, then each row's generated ids."""

    rows: list[list[int]]
    generated: list[list[int]] = field(default_factory=list)

    @property
    def length(self) -> int:
        return max(len(row) for row in self.rows)

    def sequence(self, row: int, pad_id: int) -> list[int]:
        """Row `row` as the model saw it over the whole run: left padding, prompt, generated tokens."""
        prompt = self.rows[row]
        generated = self.generated[row] if row < len(self.generated) else []
        return [pad_id] * (self.length - len(prompt)) + list(prompt) + list(generated)

    def pad_count(self, row: int) -> int:
        return self.length - len(self.rows[row])


@dataclass
class Catalog:
    """What the activation browser shows: the saved entries, the invokes' tokens, and the model to decode and project.

    `device_map` is where the run happened (None for the kernel's default, "server" for the server extension); the
    logit lens runs its small graph there too, so it needs no weights in the kernel after a server run.
    """

    entries: list[SavedEntry]
    invokes: list[InvokeTokens]
    model: "Model | None" = None
    device_map: Any = None
    title: str = ""
    texts: list[tuple[str, str]] = field(default_factory=list)

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
        pad_id = self.model._pad_token_id if self.model is not None else 0
        seen = tokens.sequence(row, pad_id)[: tokens.length + step]
        if count > len(seen):
            return None
        return seen[len(seen) - count:]

    def _padding(self, invoke: int, row: int, step: int, count: int) -> int:
        """How many of those `count` positions are left padding."""
        if invoke >= len(self.invokes) or row >= len(self.invokes[invoke].rows):
            return 0
        tokens = self.invokes[invoke]
        before = tokens.length + step - count
        return max(0, tokens.pad_count(row) - before)


def entries_from_block(block: "Tracer", named: dict[str, Any]) -> list[SavedEntry]:
    """One entry per saved tensor among the values the user named, with the origin the graph records for it.

    `named` maps each name to the value the body assigned (proxies, or lists, tuples and dicts of them).
    """
    from ..tracing.proxy import Proxy

    entries: list[SavedEntry] = []
    for name, value in named.items():
        for label, proxy in labelled_leaves(name, value):
            if not isinstance(proxy, Proxy):
                continue
            saved = block.result.saved.get(proxy._node_id) if block.result is not None else None
            if not isinstance(saved, torch.Tensor):
                continue
            entries.append(_entry_for(block, label, proxy._node_id, saved))
    return entries


def entries_from_values(values: Any, name: str = "value") -> list[SavedEntry]:
    """Entries for plain tensors (a tensor, or a dict, list or tuple of them), which have no recorded origin."""
    return [SavedEntry(label, leaf) for label, leaf in labelled_leaves(name, values) if isinstance(leaf, torch.Tensor)]


def invokes_from_block(block: "Tracer") -> list[InvokeTokens]:
    """Each invoke's prompt rows and, after a generation, each row's new token ids."""
    invokes = []
    for invoker in block.invokes:
        generated: list[list[int]] = []
        if block.kind == "generate" and block._output is not None:
            own = invoker.output
            generated = [own[index, invoker.length:].tolist() for index in range(len(invoker.rows))]
        invokes.append(InvokeTokens([list(row) for row in invoker.rows], generated))
    return invokes


def _entry_for(block: "Tracer", label: str, node_id: int, value: torch.Tensor) -> SavedEntry:
    """Walk back from a saved node through single-input operations to the module value it came from."""
    selections: list[str] = []
    node = block.nodes[node_id]
    while node.op not in _GETTERS:
        source = node.args[0] if node.args else None
        if not isinstance(source, Ref):
            return SavedEntry(label, value)
        if node.op == "getitem" and isinstance(node.args[1], int):
            selections.append(f"[{node.args[1]}]")
        else:
            selections.append("...")
        node = block.nodes[source.id]
    path, invoke, step = node.args[:3]
    selection = "..." if "..." in selections else "".join(reversed(selections))
    return SavedEntry(label, value, path, _GETTERS[node.op], invoke, step, selection)

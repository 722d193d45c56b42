"""RunRecord: what a block that has run hands out: its saved values, where each came from, and its invokes' tokens.

The cell result of `%%ndif` and the activation browser read a run only through this record.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch

from ..ir.graph import GraphKind, Node, Ref
from .module_values import display_path

_GETTERS = {"module.output": "output", "module.input": "input", "module.inputs": "inputs"}


@dataclass(frozen=True)
class Origin:
    """Where a saved value came from.

    `module` and `event` name the module value it was read from (None for a value computed some other way);
    `selection` is "" when the value is that module value itself, else the indexing applied to it (for example "[1]"
    for the attention weights of an attention module's output tuple), or "..." when other operations were applied.
    """

    module: str | None = None
    event: str | None = None
    invoke: int | None = None
    step: int | None = None
    selection: str = ""


@dataclass
class InvokeTokens:
    """The token ids of one invoke: its rows without padding, then each row's generated ids."""

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
class RunRecord:
    """A block after its run.

    `model` is the model object the block was opened on; `device_map` where it ran (None for the kernel's default,
    "server" for the server extension); `values` the saved values by node id; `saved_ids` the saved nodes in the order
    they were saved; `output_ids` the generated ids, [rows, prompt + new] left-padded across invokes (None for a trace).
    """

    kind: GraphKind
    model: Any
    model_name: str
    device_map: Any
    nodes: list[Node]
    invokes: list[InvokeTokens]
    values: dict[int, Any]
    saved_ids: list[int]
    output_ids: torch.Tensor | None

    def origin(self, node_id: int) -> Origin:
        """Walk back from a node through single-input operations to the module value it came from."""
        selections: list[str] = []
        node = self.nodes[node_id]
        while node.op not in _GETTERS:
            source = node.args[0] if node.args else None
            if not isinstance(source, Ref):
                return Origin()
            if node.op == "getitem" and isinstance(node.args[1], int):
                selections.append(f"[{node.args[1]}]")
            else:
                selections.append("...")
            node = self.nodes[source.id]
        path, invoke, step = node.args[:3]
        selection = "..." if "..." in selections else "".join(reversed(selections))
        return Origin(path, _GETTERS[node.op], invoke, step, selection)

    def label(self, node_id: int) -> str:
        """A name for a saved value that the user did not name: its module event and step, or its line."""
        node = self.nodes[node_id]
        if node.op.startswith("module.") and node.args:
            path, _, step = node.args[:3]
            return f"{display_path(path)}.{node.op.split('.', 1)[1]} step {step}"
        line = f"line {node.source.lineno} " if node.source is not None else ""
        return f"{line}value {node.id}"

    @property
    def prompt_length(self) -> int:
        """The longest prompt of the batch: where the generated ids start in `output_ids`."""
        return max(invoke.length for invoke in self.invokes)

"""Persistent edits replayed: every block of a model records its edit sets again for each invoke at every forward
pass, before the block's own interventions, so they travel in each block's graph (a server keeps nothing per user)."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch

from ..errors import TraceError
from ..ir.graph import Node, Ref, node_condition, operation_kwargs
from ..ir.nested import iter_leaves, map_leaves
from ..operations import GETTER_PHASES
from .control import Condition
from .source import recorded_at

if TYPE_CHECKING:
    from .invoker import Invoker
    from .tracer import Tracer

_SETTER_KINDS = {"module.set_output": "output", "module.set_input": "input", "module.set_inputs": "inputs"}
_GETTER_KINDS = {op: op.removeprefix("module.") for op in GETTER_PHASES}


@dataclass(frozen=True)
class EditSet:
    """One named set of persistent edits: the nodes its `with model.edit(name):` block recorded."""

    name: str
    nodes: tuple[Node, ...]

    def lines(self) -> list[str]:
        """The lines that recorded it, each once, in order: the code, then where it is."""
        seen: dict[str, None] = {}
        for node in self.nodes:
            if node.source is not None:
                where = node.source.describe().splitlines()[0].strip()
                seen[f"{node.source.line.strip()}    # {where}"] = None
        return list(seen)

    def constants(self) -> list[torch.Tensor]:
        """The tensors its nodes hold, which every replay shares instead of copying."""
        return [leaf for node in self.nodes for leaf in iter_leaves(node.args) if isinstance(leaf, torch.Tensor)]


def replay_edits(tracer: Tracer, invoker: Invoker, edits: Iterable[EditSet], steps: range) -> None:
    """Record `edits` again in `tracer` for `invoker` at each of `steps`, at the lines that recorded them; a
    TraceError there names the edit that does not fit the block."""
    __tracebackhide__ = True
    outer_conditions = list(tracer.conditions)
    start = invoker.step
    try:
        for edit in edits:
            tracer.kept_constants.update(id(tensor) for tensor in edit.constants())
            try:
                for step in steps:
                    invoker.step = step
                    _replay(tracer, edit)
            except TraceError as error:
                raise TraceError(
                    f'The persistent edit "{edit.name}" does not fit this block: {error.message}',
                    error.source,
                    f'Change the edit so that it fits every block, remove it (`model.clear_edits("{edit.name}")`), '
                    "or open this block with `edits=False`.",
                ) from None
    finally:
        invoker.step = start
        tracer.conditions[:] = outer_conditions


def _replay(tracer: Tracer, edit: EditSet) -> None:
    __tracebackhide__ = True
    made: dict[int, Any] = {}

    def mapped(value: Any) -> Any:
        return map_leaves(lambda leaf: made[leaf.id] if isinstance(leaf, Ref) else leaf, value)

    for node in edit.nodes:
        condition = node_condition(node)
        tracer.conditions[:] = [made[condition]] if condition is not None else []
        with recorded_at(node.source):
            made[node.id] = _replay_node(tracer, node, mapped)


def _replay_node(tracer: Tracer, node: Node, mapped: Callable[[Any], Any]) -> Any:
    __tracebackhide__ = True
    op, args = node.op, node.args
    if op in _GETTER_KINDS:
        return tracer.module_get(args[0], _GETTER_KINDS[op])
    if op in _SETTER_KINDS:
        return tracer.module_set(args[0], _SETTER_KINDS[op], mapped(args[3]))
    if op == "module.skip":
        return tracer.module_skip(args[0], mapped(args[3]))
    if op == "module.weight":
        return tracer.module_weight(args[0], args[1])
    if op == "module.call":
        return tracer.module_call(args[0], mapped(args[1]), mapped(args[2]))
    if op == "cond":
        return Condition(tracer, mapped(args[0]))
    return tracer.record(op, mapped(args), mapped(operation_kwargs(node.kwargs)))

"""ModuleAccess: recording a module's `.output`, `.input` and `.inputs` (read and set) and calls of modules.

Each is checked against what the shape oracle says the module sees at the open invoke's step, at the user's line.
"""

from __future__ import annotations

from typing import Any

import torch

from ..errors import TraceError
from ..ir.nested import describe, leaf_shapes, leaves, zip_map_leaves
from ..ir.source import Source
from ..loading.shapes import ModuleRecord, StepRecord, to_meta
from .conversion import check_assignable, event_value, fresh, invoker_of, meta_of, ready_of, to_graph
from .invoker import Invoker
from .module_values import display_path
from .proxy import Proxy
from .recording import Recording
from .source import user_source

_GETTER_OPS = {"output": "module.output", "input": "module.input", "inputs": "module.inputs"}
_SETTER_OPS = {"output": "module.set_output", "input": "module.set_input", "inputs": "module.set_inputs"}


class ModuleAccess(Recording):
    """What an Envoy asks of the open block: module values as proxies, module writes and calls as nodes."""

    _step_records: dict[tuple[int, int, int], StepRecord]
    _touched: dict[tuple[int, int], set[str]]
    """Per (invoke, step), the modules whose values the block reads or writes there."""
    _skipped: dict[tuple[int, int], set[str]]
    """Per (invoke, step), the modules the block skips there."""

    def module_get(self, path: str, kind: str) -> Proxy:
        """Record reading a module's `.output`, `.input` or `.inputs` at the open invoke's step."""
        __tracebackhide__ = True
        source, invoker, value, event = self._event(path, kind)
        shapes = leaf_shapes(value)
        node = self._add(_GETTER_OPS[kind], (path, invoker.index, invoker.step), {"shapes": shapes}, source)
        return Proxy(self, node.id, fresh(value), (invoker.step, event), invoker)

    def module_set(self, path: str, kind: str, value: Any) -> None:
        """Record replacing a module's `.output`, `.input` or `.inputs` at the open invoke's step."""
        __tracebackhide__ = True
        source, invoker, expected, event = self._event(path, kind)
        where = f"{display_path(path)}.{kind}"
        try:
            zip_map_leaves(check_assignable, expected, meta_of(value, self))
        except (ValueError, TypeError) as error:
            raise TraceError(f"`{where}` cannot take this value: {error}.", source) from None
        if ready_of(value, self) > (invoker.step, event):
            raise TraceError(
                f"`{where}` is set from a value that the model computes only after {display_path(path)} has run.",
                source,
                "A module's output can only be changed with values computed before or at that module.",
            )
        shapes = leaf_shapes(expected)
        graph_value = to_graph(value, self, source)
        self._add(_SETTER_OPS[kind], (path, invoker.index, invoker.step, graph_value), {"shapes": shapes}, source)

    def module_skip(self, path: str, value: Any) -> None:
        """Record that a module does not run at the open invoke's step and gives `value` as its output."""
        __tracebackhide__ = True
        source, invoker, expected, _ = self._event(path, "output")
        record = self._module_record(invoker, path, source)
        where = f"{display_path(path)}.skip(...)"
        if not path:
            raise TraceError("The whole model cannot be skipped.", source, "Skip one of its modules, such as a layer.")
        given = meta_of(value, self)
        found, wanted = leaf_shapes(given), leaf_shapes(expected)
        if found != wanted or any(
            isinstance(a, torch.Tensor) != isinstance(b, torch.Tensor) for a, b in zip(leaves(given), leaves(expected))
        ):
            raise TraceError(
                f"`{where}` needs a value shaped as the module's output ({describe(expected)}), not {describe(given)}.",
                source,
                "A skipped layer usually passes its input on: `layer.skip(layer.input)`.",
            )
        if ready_of(value, self) > (invoker.step, record.pre_event):
            raise TraceError(
                f"`{where}` is given a value that the model computes only after {display_path(path)} would run.",
                source,
                "Give a value computed before the module, such as its input.",
            )
        inside = [other for other in self._touched.get((invoker.index, invoker.step), ()) if _within(other, path)]
        if inside:
            raise TraceError(
                f"`{where}`: the block already uses {display_path(inside[0])}, which does not run when "
                f"{display_path(path)} is skipped.",
                source,
                "Skip the module before reading its insides, or read the module's own input or output instead.",
            )
        self._skipped.setdefault((invoker.index, invoker.step), set()).add(path)
        graph_value = to_graph(value, self, source)
        self._add("module.skip", (path, invoker.index, invoker.step, graph_value), {"shapes": wanted}, source)

    def module_weight(self, path: str, name: str) -> Proxy:
        """Record reading a module's weight or buffer (`model.lm_head.weight`), as the model holds it."""
        __tracebackhide__ = True
        source = user_source()
        self._check_recording(source)
        tensor = getattr(self.traced.loaded.meta_module(path), name)
        node = self._add("module.weight", (path, name), {}, source)
        return Proxy(self, node.id, torch.empty_like(tensor, device="meta"), (-1, -1), None)

    def module_call(self, path: str, args: tuple, kwargs: dict) -> Proxy:
        """Record calling a module on traced values (`model.lm_head(hidden)`)."""
        __tracebackhide__ = True
        source = user_source()
        self._check_recording(source)
        module = self.traced.loaded.meta_module(path)
        try:
            meta = to_meta(self.traced.shapes.call(module, meta_of(args, self), meta_of(kwargs, self)))
        except Exception as error:
            raise TraceError(
                f"Calling `{display_path(path)}` on these values fails: {type(error).__name__}: {error}", source
            ) from None
        graph_args = (path, to_graph(tuple(args), self, source), to_graph(dict(kwargs), self, source))
        node = self._add("module.call", graph_args, {}, source)
        operands = (args, kwargs)
        return Proxy(self, node.id, meta, ready_of(operands, self), invoker_of(operands, self))

    def _event(self, path: str, kind: str) -> tuple[Source | None, Invoker, Any, int]:
        """For a module value at the open invoke: the user's line, the invoke, the value as traced, its event."""
        __tracebackhide__ = True
        source = user_source()
        invoker = self.require_invoke(source)
        record = self._module_record(invoker, path, source)
        event = record.pre_event if kind != "output" else record.post_event
        if self.condition_ready() > (invoker.step, event):
            latest = max(self.conditions, key=lambda condition: condition.ready_at)
            raise TraceError(
                f"`{display_path(path)}.{kind}` is used before the condition around it is known: the model computes "
                f"the condition (line {latest.source.lineno if latest.source else '?'}) only after "
                f"{display_path(path)} runs.",
                source,
                "Under a condition, use module values that come at or after the values the condition reads.",
            )
        place = (invoker.index, invoker.step)
        skipped = [other for other in self._skipped.get(place, ()) if _within(path, other)]
        if skipped:
            raise TraceError(
                f"`{display_path(path)}` does not run at this step: {display_path(skipped[0])} is skipped.",
                source,
                f"Read {display_path(skipped[0])}'s own input or output instead.",
            )
        self._touched.setdefault(place, set()).add(path)
        return source, invoker, event_value(record, kind), event

    def step_record(self, invoker: Invoker, step: int | None = None) -> StepRecord:
        """What every module sees for `invoker` at `step` (its current step by default), kept for the block."""
        key = (invoker.forward_rows, invoker.length, invoker.step if step is None else step)
        record = self._step_records.get(key)
        if record is None:
            record = self._step_records[key] = self.traced.shapes.step(*key, self.forward_options())
        return record

    def _module_record(self, invoker: Invoker, path: str, source: Source | None) -> ModuleRecord:
        __tracebackhide__ = True
        record = self.step_record(invoker).modules.get(path)
        if record is None or record.post_event < 0:
            raise TraceError(
                f"`{display_path(path)}` is not called during the model's forward pass, so it has no values.",
                source,
            )
        return record


def _within(inner: str, outer: str) -> bool:
    """Whether the module at `inner` is a submodule of the one at `outer` (not the module itself)."""
    return inner.startswith(outer + ".") if outer else bool(inner)

"""The one executor: runs an intervention graph on a real model with hooks, and returns the saved values.

Every place a graph runs (the kernel, the server extension, a gateway worker) calls `execute`. Hooks go only on
the modules the graph touches and are removed when the run ends, also when it fails. Nodes run in the order they
were recorded, each as soon as what it reads exists: a node bound to a module event (reading or setting a module's
input or output at a generation step) runs inside that module's hook.
"""

from __future__ import annotations

import heapq
import time
import traceback
from dataclasses import dataclass, field
from typing import Any, Callable

import torch

from ..errors import ExecutionError, NDIFError
from ..operations import OPERATIONS
from ..structures import first_input, map_leaves
from ..tracing.graph import METADATA_KWARGS, Graph, Node, Ref, node_refs
from .batching import Span, build_inputs, narrow, position_ids_from, replace


@dataclass
class ExecutionResult:
    """What a run gives back: saved values by node id (CPU tensors), the output ids of a generation, and timings."""

    saved: dict[int, Any]
    output_ids: torch.Tensor | None
    missing: dict[int, str] = field(default_factory=dict)
    forward_calls: int = 0
    seconds: float = 0.0


_GETTERS = {"module.output": "post", "module.input": "pre", "module.inputs": "pre"}
_SETTERS = {"module.set_output": "post", "module.set_input": "pre", "module.set_inputs": "pre"}


def execute(graph: Graph, model: torch.nn.Module, on_forward: Callable[[int], None] | None = None) -> ExecutionResult:
    """Run `graph` on `model` (a Hugging Face causal LM with its weights loaded) and collect the saved values.

    `on_forward(n)`, when given, is called before the model's n-th forward pass (1 for a trace, one per generated
    token): a place to report progress, or to stop the run by raising an NDIFError such as RunCancelled.
    """
    return _Run(graph, model, on_forward).run()


def saved_copy(value: Any) -> Any:
    """A detached CPU copy of a value, sharing no memory with the model's tensors."""

    def copy(leaf: Any) -> Any:
        if isinstance(leaf, torch.Tensor):
            leaf = leaf.detach()
            return leaf.clone() if leaf.device.type == "cpu" else leaf.to("cpu")
        return leaf

    return copy(value) if isinstance(value, torch.Tensor) else map_leaves(copy, value)


class _EventState:
    __slots__ = ("value", "changed")

    def __init__(self, value: Any):
        self.value = value
        self.changed = False


class _Run:
    def __init__(self, graph: Graph, model: torch.nn.Module, on_forward: Callable[[int], None] | None = None):
        self.graph = graph
        self.model = model
        self.on_forward = on_forward
        self.passes = 0
        self.nodes = graph.nodes
        self.device = model.get_input_embeddings().weight.device
        count = len(self.nodes)
        self.reads = [node_refs(node) for node in self.nodes]
        self.waiting = [len(reads) for reads in self.reads]
        self.readers: list[list[int]] = [[] for _ in range(count)]
        for node_id, reads in enumerate(self.reads):
            for read in reads:
                self.readers[read].append(node_id)
        self.unread = [len(readers) for readers in self.readers]
        self.done = [False] * count
        self.values: dict[int, Any] = {}
        self.saved: dict[int, Any] = {}
        self.events: dict[tuple[str, str, int], list[int]] = {}
        self.event_of: dict[int, tuple[str, str, int]] = {}
        for node in self.nodes:
            phase = _GETTERS.get(node.op) or _SETTERS.get(node.op)
            if phase is not None:
                path, _, step = node.args[:3]
                key = (path, phase, step)
                self.events.setdefault(key, []).append(node.id)
                self.event_of[node.id] = key
        self.spans: list[Span] = []
        self.constants = {node.id: self._place_constants(node) for node in self.nodes}
        self.heap: list[int] = []
        self.active: tuple[tuple[str, str, int], _EventState] | None = None
        self.fired: set[tuple[str, str, int]] = set()
        self.step = 0
        self.forward_calls = 0
        self.suspended = False

    # ----- the run -----
    def run(self) -> ExecutionResult:
        started = time.perf_counter()
        input_ids, attention_mask, self.spans = build_inputs(self.graph, self.device)
        handles = self._register_hooks()
        output_ids = None
        failure: NDIFError | None = None
        try:
            with torch.no_grad():
                for node in self.nodes:
                    if not self.reads[node.id] and node.id not in self.event_of:
                        self._push(node.id)
                self._drain()
                if self.graph.kind == "generate":
                    output_ids = self._generate(input_ids, attention_mask)
                else:
                    self._forward(input_ids, attention_mask)
        except NDIFError as error:
            failure = error
        except Exception as error:
            failure = ExecutionError(
                f"The model failed while running the graph: {type(error).__name__}: {error}{_where(error)}",
                hint="Check the values your block writes into the model (their shapes and dtypes).",
            )
        finally:
            for handle in handles:
                handle.remove()
            self.values.clear()
            self.heap.clear()
        if failure is not None:
            # Raised without its traceback or chained errors: their frames would keep the run's tensors alive.
            failure.__cause__ = failure.__context__ = None
            raise failure.with_traceback(None)
        missing = self._finish()
        return ExecutionResult(self.saved, output_ids, missing, self.forward_calls, time.perf_counter() - started)

    def _forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> None:
        kwargs = dict(self.graph.options)
        kwargs["attention_mask"] = attention_mask
        if "position_ids" in _forward_parameters(self.model):
            kwargs["position_ids"] = position_ids_from(attention_mask)
        self.forward_calls = 1
        self.model(input_ids=input_ids, **kwargs)

    def _generate(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        self.step = -1
        output = self.model.generate(
            input_ids=input_ids, attention_mask=attention_mask, pad_token_id=self.graph.pad_token_id, **self.graph.options
        )
        sequences = output if isinstance(output, torch.Tensor) else output.sequences
        return sequences.detach().to("cpu")

    def _register_hooks(self) -> list:
        handles = []
        if self.on_forward is not None:
            handles.append(self.model.register_forward_pre_hook(self._report_forward))
        if self.graph.kind == "generate":
            handles.append(self.model.register_forward_pre_hook(self._count_step))
        for path, phase in {(path, phase) for path, phase, _ in self.events}:
            module = _submodule(self.model, path)
            if phase == "pre":
                handles.append(module.register_forward_pre_hook(self._pre_hook(path), with_kwargs=True))
            else:
                handles.append(module.register_forward_hook(self._post_hook(path), with_kwargs=True))
        return handles

    def _report_forward(self, module, args):
        if not self.suspended:
            self.passes += 1
            self.on_forward(self.passes)

    def _count_step(self, module, args):
        if not self.suspended:
            self.step += 1
            self.forward_calls += 1

    def _pre_hook(self, path: str):
        def hook(module, args, kwargs):
            state = self._fire((path, "pre", self.step), (args, kwargs))
            return state.value if state is not None and state.changed else None

        return hook

    def _post_hook(self, path: str):
        def hook(module, args, kwargs, output):
            state = self._fire((path, "post", self.step), output)
            return state.value if state is not None and state.changed else None

        return hook

    def _fire(self, key: tuple[str, str, int], value: Any) -> _EventState | None:
        if self.suspended or key in self.fired or key not in self.events:
            return None
        self.fired.add(key)
        state = _EventState(value)
        self.active = (key, state)
        try:
            for node_id in self.events[key]:
                if self.waiting[node_id] == 0:
                    self._push(node_id)
            self._drain()
            for node_id in self.events[key]:
                if not self.done[node_id]:
                    node = self.nodes[node_id]
                    raise ExecutionError(
                        f"`{_display(node)}` could not run when {_event_text(key)} ran: a value it needs was not "
                        "computed yet.",
                        node.source,
                    )
        finally:
            self.active = None
        return state

    # ----- running nodes -----
    def _push(self, node_id: int) -> None:
        heapq.heappush(self.heap, node_id)

    def _drain(self) -> None:
        while self.heap:
            self._run_node(heapq.heappop(self.heap))

    def _run_node(self, node_id: int) -> None:
        node = self.nodes[node_id]
        try:
            if node.id in self.event_of:
                value = self._module_event(node)
            elif node.op == "module.call":
                value = self._call_module(node)
            else:
                args, kwargs = self.constants[node.id]
                value = OPERATIONS[node.op](*self._resolve(args), **self._resolve(kwargs))
        except NDIFError:
            raise
        except Exception as error:
            raise ExecutionError(f"`{_display(node)}` failed: {type(error).__name__}: {error}", node.source) from None
        self.values[node_id] = value
        self.done[node_id] = True
        for read in self.reads[node_id]:
            self.unread[read] -= 1
            if self.unread[read] == 0:
                self._release(read)
        if self.unread[node_id] == 0:
            self._release(node_id)
        active_key = self.active[0] if self.active is not None else None
        for reader in self.readers[node_id]:
            self.waiting[reader] -= 1
            if self.waiting[reader] == 0:
                event = self.event_of.get(reader)
                if event is None or event == active_key:
                    self._push(reader)

    def _release(self, node_id: int) -> None:
        value = self.values.pop(node_id, None)
        if self.nodes[node_id].saved:
            self.saved[node_id] = saved_copy(value)

    def _module_event(self, node: Node) -> Any:
        key = self.event_of[node.id]
        if self.active is None or self.active[0] != key:
            raise ExecutionError(f"`{_display(node)}` ran outside {_event_text(key)}.", node.source)
        state = self.active[1]
        span = self.spans[node.args[1]]
        if node.op == "module.output" and span.whole:
            return state.value
        shapes = node.kwargs["shapes"]
        if node.op == "module.output":
            return narrow(state.value, shapes, span)
        if node.op == "module.inputs":
            return narrow(state.value, shapes, span)
        if node.op == "module.input":
            return narrow(first_input(*state.value), shapes, span)
        new_value = self._resolve(self.constants[node.id][0][3])
        try:
            if node.op == "module.set_output":
                state.value = replace(state.value, new_value, shapes, span)
            elif node.op == "module.set_inputs":
                state.value = replace(state.value, tuple(new_value), shapes, span)
            else:
                state.value = _with_first_input(state.value, replace(first_input(*state.value), new_value, shapes, span))
        except ValueError as error:
            raise ExecutionError(f"`{_display(node)}` cannot be written: {error}", node.source) from None
        state.changed = True
        return None

    def _call_module(self, node: Node) -> Any:
        path, call_args, call_kwargs = self.constants[node.id][0]
        module = _submodule(self.model, path)
        device = next((p.device for p in module.parameters()), self.device)
        to_device = lambda leaf: leaf.to(device) if isinstance(leaf, torch.Tensor) else leaf  # noqa: E731
        args = map_leaves(to_device, self._resolve(call_args))
        kwargs = map_leaves(to_device, self._resolve(call_kwargs))
        self.suspended = True
        try:
            return module(*args, **kwargs)
        finally:
            self.suspended = False

    def _resolve(self, value: Any) -> Any:
        if isinstance(value, Ref):
            return self.values[value.id]
        if isinstance(value, tuple):
            return tuple(self._resolve(item) for item in value)
        if isinstance(value, list):
            return [self._resolve(item) for item in value]
        if isinstance(value, dict):
            return {key: self._resolve(item) for key, item in value.items()}
        if isinstance(value, slice):
            return slice(self._resolve(value.start), self._resolve(value.stop), self._resolve(value.step))
        return value

    def _place_constants(self, node: Node) -> tuple[tuple, dict]:
        def place(leaf: Any) -> Any:
            if isinstance(leaf, torch.Tensor) and leaf.device != self.device:
                return leaf.to(self.device)
            return leaf

        if node.op in _GETTERS:
            return node.args, node.kwargs
        values = [value for key, value in node.kwargs.items() if key not in METADATA_KWARGS]
        if not _has_tensor(node.args) and not _has_tensor(values):
            return node.args, node.kwargs
        return map_leaves(place, node.args), map_leaves(place, node.kwargs)

    # ----- after the run -----
    def _finish(self) -> dict[int, str]:
        missing: dict[int, str] = {}
        steps_run = self.forward_calls
        for node in self.nodes:
            if self.done[node.id]:
                continue
            event = self.event_of.get(node.id)
            if event is not None and event[2] >= steps_run and self.graph.kind == "generate":
                missing[node.id] = (
                    f"generation stopped after {steps_run} forward passes (every prompt reached its end-of-sequence "
                    f"token), so step {event[2]} never ran"
                )
                continue
            blocker = self._first_blocker(node.id)
            if blocker in missing:
                missing[node.id] = missing[blocker]
                continue
            blocking = self.nodes[blocker]
            key = self.event_of.get(blocker)
            what = f"{_event_text(key)} never happened" if key is not None else "it never ran"
            raise ExecutionError(f"`{_display(blocking)}` never ran: {what}.", blocking.source)
        return missing

    def _first_blocker(self, node_id: int) -> int:
        for read in self.reads[node_id]:
            if not self.done[read]:
                return self._first_blocker(read)
        return node_id


def _where(error: Exception) -> str:
    frames = traceback.extract_tb(error.__traceback__)
    if not frames:
        return ""
    last = frames[-1]
    return f" (raised at {last.filename}, line {last.lineno})"


def _with_first_input(inputs: tuple[tuple, dict], value: Any) -> tuple[tuple, dict]:
    args, kwargs = inputs
    if args:
        return (value, *args[1:]), kwargs
    first = next(iter(kwargs))
    return args, {**kwargs, first: value}


def _has_tensor(value: Any) -> bool:
    if isinstance(value, torch.Tensor):
        return True
    if isinstance(value, (tuple, list)):
        return any(_has_tensor(item) for item in value)
    if isinstance(value, dict):
        return any(_has_tensor(item) for item in value.values())
    return False


def _submodule(model: torch.nn.Module, path: str) -> torch.nn.Module:
    """`model.get_submodule(path)`, looked up in a table of the model's modules built once per model."""
    table = getattr(model, "_ndif_modules", None)
    if table is None:
        table = dict(model.named_modules())
        model._ndif_modules = table
    module = table.get(path)
    return module if module is not None else model.get_submodule(path)


def _forward_parameters(model: torch.nn.Module) -> frozenset[str]:
    import inspect

    cached = getattr(model, "_ndif_forward_parameters", None)
    if cached is None:
        cached = frozenset(inspect.signature(model.forward).parameters)
        model._ndif_forward_parameters = cached
    return cached


def _event_text(key: tuple[str, str, int]) -> str:
    path, phase, step = key
    where = f"model.{path}" if path else "model"
    return f"{where} ({'input' if phase == 'pre' else 'output'}, step {step})"


def _display(node: Node) -> str:
    if node.source is not None and node.source.line:
        return node.source.line.strip()
    return node.op


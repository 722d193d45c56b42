"""The one executor: runs an intervention graph on a real model with hooks, and returns the saved values.

Every place a graph runs (the kernel, the server extension, a gateway worker) calls `execute`, or `execute_batch`
for several jobs' graphs in one batched run. Hooks go only on the modules the graph touches and are removed when the
run ends, also when it fails. Nodes run in the order they were recorded, each as soon as what it reads exists: a
node bound to a module event (reading or setting a module's input or output at a generation step) runs inside that
module's hook.

In a batch, each job is a `Part` of the merged graph: a node that fails, a cancel, or the end of a job's generation
stops that part's nodes only; its rows keep running in the batch, unread.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Collection, Mapping, Sequence
from typing import Any, cast

import torch

from ..errors import ExecutionError, NDIFError, NotInBatch, RunCancelled
from ..indexing import INDEXING_OPS, embedding_problem, index_problem
from ..ir.graph import METADATA_KWARGS, Graph, Node, Ref, node_condition, operation_kwargs
from ..ir.nested import SAVEABLE, any_leaf, first_input, map_leaves, value_bytes
from ..ir.result import ExecutionResult
from ..ir.session import SESSION_VALUE
from ..loading.inner_ops import instrument, operation_path, split_path
from ..operations import GETTER_PHASES, GRADIENT_OPS, OPERATIONS, SETTER_PHASES
from .batching import (
    Span,
    build_inputs,
    narrow,
    position_ids_from,
    replace,
    replaces_shared_part,
    shape_mismatch,
    shared_leaf,
)
from .diagnostics import EventKey, display, event_text, raised_at, unfinished_nodes
from .generation import SAMPLING_OPTIONS, PartEnds, SeededSampling, eos_ids, seeded
from .gradients import (
    BACKWARD_EVENT,
    WeightGradient,
    gradient_events,
    hook_tensor,
    invoke_of,
    make_trainable,
    run_backward,
)
from .guard import RunGuard
from .merging import Part, merge, single_part, split
from .modules import forward_parameters, submodule
from .scheduler import Scheduler


def execute(
    graph: Graph,
    model: torch.nn.Module,
    on_forward: Callable[[int], None] | None = None,
    guard: RunGuard | None = None,
    imports: Mapping[tuple[int, int], Any] | None = None,
    keep: Collection[int] = (),
) -> ExecutionResult:
    """Run `graph` on `model` (a Hugging Face causal LM with its weights loaded) and collect the saved values.

    `on_forward(n)`, when given, is called before the model's n-th forward pass (1 for a trace, one per generated
    token): a place to report progress. `guard`, when given, is checked before every node and every forward pass
    (to cancel the run or end it at a deadline) and told the bytes the graph's values hold.

    In a session: `imports` are the values of earlier blocks' nodes by (block, node), which `session.value` nodes
    read; the values of the nodes in `keep` (which later blocks read) are kept, on the model's device, in the
    result's `kept`.
    """
    return _Run(graph, model, on_forward, guard, [single_part(graph)], imports=imports, keep=keep).run()


JobOutcome = ExecutionResult | NDIFError
"""What `execute_batch` gives each job: its result, or the error that ended it."""


def execute_batch(
    graphs: Sequence[Graph],
    model: torch.nn.Module,
    on_forward: Callable[[int], None] | None = None,
    guard: RunGuard | None = None,
    job_stopped: Callable[[int], bool] | None = None,
) -> list[JobOutcome]:
    """Run several jobs' graphs (sharing a `merging.batch_key`) as one batch; each job's own result or error, in order.

    Each job's values equal those of its graph run alone with `execute`: its rows are padded and positioned as its
    own, its interventions see and change only its rows, its generation stops at its own length, and seeded
    sampling draws from its own generator. A job whose node fails, or for which `job_stopped(index)` turns True
    (RunCancelled), ends alone. Errors of the whole run (the model failing, `guard` stopping it) are raised.
    """
    graph, parts = merge(graphs)
    run = _Run(graph, model, on_forward, guard, parts, job_stopped)
    result = run.run()
    merged_length = max(invoke.length for invoke in graph.invokes)
    outcomes: list[JobOutcome] = []
    for index, (part, own) in enumerate(zip(parts, graphs)):
        failure = run.failures.get(index)
        if failure is not None:
            outcomes.append(failure)
            continue
        steps = run.part_steps(index)
        own_length = max(invoke.length for invoke in own.invokes)
        outcomes.append(split(result, part, steps, merged_length, own_length))
    return outcomes


def saved_copy(value: Any) -> Any:
    """A detached CPU copy of a value, sharing no memory with the model's tensors (a leaf that cannot be saved, such
    as a key-value cache, as None)."""

    def copy(leaf: Any) -> Any:
        if isinstance(leaf, torch.Tensor):
            leaf = leaf.detach()
            return leaf.clone() if leaf.device.type == "cpu" else leaf.to("cpu")
        return leaf if isinstance(leaf, SAVEABLE) else None

    return copy(value) if isinstance(value, torch.Tensor) else map_leaves(copy, value)


class _EventState:
    __slots__ = ("changed", "value")

    def __init__(self, value: Any):
        self.value = value
        self.changed = False


class _Run:
    def __init__(
        self,
        graph: Graph,
        model: torch.nn.Module,
        on_forward: Callable[[int], None] | None,
        guard: RunGuard | None,
        parts: list[Part],
        part_stopped: Callable[[int], bool] | None = None,
        imports: Mapping[tuple[int, int], Any] | None = None,
        keep: Collection[int] = (),
    ):
        self.graph = graph
        self.parts = parts
        self.contained = len(parts) > 1
        self.part_stopped = part_stopped
        self.part_of = [0] * len(graph.nodes)
        for index, part in enumerate(parts):
            self.part_of[part.first_node : part.first_node + part.nodes] = [index] * part.nodes
        self.failures: dict[int, NDIFError] = {}
        self.ended_at: dict[int, int] = {}
        self.part_ends: PartEnds | None = None
        self.model = model
        self.on_forward = on_forward
        self.guard = guard or RunGuard()
        self.passes = 0
        self.nodes = graph.nodes
        self.device = cast(Any, model).get_input_embeddings().weight.device
        self.scheduler = Scheduler(self.nodes)
        self.values: dict[int, Any] = {}
        self.saved: dict[int, Any] = {}
        self.keep = frozenset(keep)
        self.kept: dict[int, Any] = {}
        self.events: dict[EventKey, list[int]] = {}
        self.event_of: dict[int, EventKey] = {}
        self.skipped_paths: set[str] = set()
        self.unmet: dict[int, int] = {}
        """The nodes that did not run because a condition was false, each with that condition's `cond` node."""
        self.stop_early = False
        for node in self.nodes:
            phase = GETTER_PHASES.get(node.op) or SETTER_PHASES.get(node.op)
            if phase is not None:
                path, _, step = node.args[:3]
                key = (path, phase, step)
                self.events.setdefault(key, []).append(node.id)
                self.event_of[node.id] = key
                if node.op == "module.skip":  # a skip that cannot spare the module is a write of its output
                    self.events.setdefault((path, "post", step), [])
                    self.skipped_paths.add(path)
            elif node.op == "stop":
                self.stop_early = graph.kind == "trace"
        gradient_event_of, self.hooked, self.whole_tensor_events = gradient_events(self.nodes)
        for node_id, key in gradient_event_of.items():
            self.events.setdefault(key, []).append(node_id)
            self.event_of[node_id] = key
        self.backward = BACKWARD_EVENT in self.events
        self.skipping: dict[tuple[str, int], Any] = {}
        self.skip_after: dict[EventKey, list[tuple[Node, Any, Span]]] = {}
        self.spans: list[Span] = []
        self.placed: dict[int, torch.Tensor] = {}
        self.constants = {node.id: self._place_constants(node) for node in self.nodes}
        self.imports = {key: map_leaves(self._on_device, value) for key, value in (imports or {}).items()}
        self.active: tuple[EventKey, _EventState] | None = None
        self.fired: set[EventKey] = set()
        self.step = 0
        self.forward_calls = 0
        self.suspended = False
        self.held = sum(value_bytes(tensor) for tensor in self.placed.values())

    # ----- the run -----
    def run(self) -> ExecutionResult:
        started = time.perf_counter()
        self.guard.start()
        self.guard.hold(self.held)
        input_ids, attention_mask, self.spans = build_inputs(self.graph, self.device)
        handles = self._register_hooks()
        output_ids = None
        failure: NDIFError | None = None
        try:
            with torch.enable_grad() if self.backward else torch.no_grad():
                for node in self.nodes:
                    if not self.scheduler.reads[node.id] and node.id not in self.event_of:
                        self.scheduler.push(node.id)
                self._drain()
                if self.graph.kind == "generate":
                    output_ids = self._generate(input_ids, attention_mask)
                else:
                    self._forward(input_ids, attention_mask)
                if self.backward:
                    self._fire(BACKWARD_EVENT, None)
        except (_NothingLeft, _EveryNodeRan):
            pass
        except NDIFError as error:
            failure = error
        except Exception as error:
            failure = ExecutionError(
                f"The model failed while running the graph: {type(error).__name__}: {error}{raised_at(error)}",
                hint="Check the values your block writes into the model (their shapes and dtypes).",
            )
        finally:
            for handle in reversed(handles):  # forwards replaced on one module come back in the reverse order
                handle.remove()
            self.values.clear()
            self.scheduler.clear()
        if failure is not None:
            # Raised without its traceback or chained errors: their frames would keep the run's tensors alive.
            failure.__cause__ = failure.__context__ = None
            raise failure.with_traceback(None)
        missing = {
            node_id: f"its condition (`{display(self.nodes[cond])}`) was false"
            for node_id, cond in self.unmet.items()
            if self.nodes[node_id].saved or node_id in self.keep
        }
        for index, part in enumerate(self.parts):
            if index in self.failures:
                continue
            nodes = self.nodes[part.first_node : part.first_node + part.nodes]
            try:
                missing.update(
                    unfinished_nodes(nodes, self.scheduler, self.event_of, self.graph.kind, self.part_steps(index))
                )
            except NDIFError as error:
                if not self.contained:
                    raise
                self._fail_part(index, error)
        seconds = time.perf_counter() - started
        return ExecutionResult(self.saved, output_ids, missing, self.forward_calls, seconds, self.kept)

    def part_steps(self, index: int) -> int:
        """The forward passes part `index` saw: until its generation ended, or all of the run's."""
        return self.ended_at.get(index, self.forward_calls)

    def _active(self, index: int) -> bool:
        return index not in self.failures and index not in self.ended_at

    def _fail_part(self, index: int, error: NDIFError) -> None:
        """End part `index` with `error`: its nodes stop running and its values are let go; the others go on."""
        error.__cause__ = error.__context__ = None
        self.failures[index] = error.with_traceback(None)
        part = self.parts[index]
        for node_id in range(part.first_node, part.first_node + part.nodes):
            self.held -= value_bytes(self.values.pop(node_id, None))
            self.saved.pop(node_id, None)
        if all(not self._active(other) for other in range(len(self.parts))) and self.graph.kind == "trace":
            raise _NothingLeft

    def _forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> None:
        kwargs = dict(self.graph.options)
        kwargs["attention_mask"] = attention_mask
        if "position_ids" in forward_parameters(self.model):
            kwargs["position_ids"] = position_ids_from(attention_mask)
        self.forward_calls = 1
        self.model(input_ids=input_ids, **kwargs)

    def _generate(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        self.step = -1
        model = cast(Any, self.model)
        options = {key: value for key, value in self.graph.options.items() if key != "seed"}
        extra: dict[str, Any] = {}
        if seeded(options, self.parts):
            copies = self.graph.row_copies
            extra["logits_processor"] = [SeededSampling(model.generation_config, options, self.parts, copies)]
            options = {key: value for key, value in options.items() if key not in SAMPLING_OPTIONS}
            # The processor leaves one finite score per row, which greedy decoding and sampling both pick; several
            # sequences per prompt need Hugging Face's sampling path.
            options["do_sample"] = copies > 1
        if self.contained:
            eos = eos_ids(model.generation_config, options)
            self.part_ends = PartEnds(self.parts, input_ids.shape[1], eos, lambda index: index in self.failures)
            extra["stopping_criteria"] = [self.part_ends]
        output = model.generate(
            input_ids=input_ids,
            attention_mask=attention_mask,
            pad_token_id=self.graph.pad_token_id,
            **options,
            **extra,
        )
        sequences = output if isinstance(output, torch.Tensor) else output.sequences
        return sequences.detach().to("cpu")

    def _register_hooks(self) -> list:
        handles: list[Any] = [self.model.register_forward_pre_hook(self._check_forward)]
        if self.on_forward is not None:
            handles.append(self.model.register_forward_pre_hook(self._report_forward))
        if self.graph.kind == "generate":
            handles.append(self.model.register_forward_pre_hook(self._count_step))
        for node_id, key in self.whole_tensor_events.items():
            node = self.nodes[node_id]
            if node.op == "module.weight":
                weight = getattr(submodule(self.model, node.args[0]), node.args[1])
                handles.append(WeightGradient(weight, self._gradient_hook(key)))
        hooked = {(path, phase) for path, phase, _ in self.events if phase in ("pre", "post")}
        for owner in {inner[0] for path, _ in hooked if (inner := split_path(path)) is not None}:
            handles.append(_Undo(instrument(submodule(self.model, owner), self._inner_operation(owner))))
        for path in self.skipped_paths:  # after the inner operations, so that a skip stands in for their forward
            handles.append(_SkippableForward(submodule(self.model, path), path, self))
        for path, phase in hooked:
            if split_path(path) is not None:
                continue
            module = submodule(self.model, path)
            if phase == "pre":
                handles.append(module.register_forward_pre_hook(self._pre_hook(path), with_kwargs=True))
            else:
                handles.append(module.register_forward_hook(self._post_hook(path), with_kwargs=True))
        return handles

    def _check_forward(self, module, args):
        if self.suspended:
            return
        self.guard.check()
        if self.contained:
            for index in range(len(self.parts)):
                if self._active(index) and self.part_stopped is not None and self.part_stopped(index):
                    self._fail_part(index, RunCancelled("the job was cancelled"))

    def _report_forward(self, module, args):
        if not self.suspended and self.on_forward is not None:
            self.passes += 1
            self.on_forward(self.passes)

    def _count_step(self, module, args):
        if not self.suspended:
            self.step += 1
            if self.part_ends is not None:
                for index in self.part_ends.finished_parts():
                    if self._active(index):
                        self.ended_at[index] = self.forward_calls
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

    def _inner_operation(self, owner: str) -> Callable[..., Any]:
        """Runs one inner operation of the module at `owner`, firing its input and output events around it."""

        def dispatch(name: str, callee: Any, *args: Any, **kwargs: Any) -> Any:
            path = operation_path(owner, name)
            state = self._fire((path, "pre", self.step), (args, kwargs))
            if state is not None and state.changed:
                args, kwargs = state.value
            output = callee(*args, **kwargs)
            state = self._fire((path, "post", self.step), output)
            return state.value if state is not None and state.changed else output

        return dispatch

    def _fire(self, key: EventKey, value: Any) -> _EventState | None:
        if self.suspended or key in self.fired or key not in self.events:
            return None
        self.fired.add(key)
        state = _EventState(value)
        outer = self.active  # a gradient event fires inside the backward event
        self.active = (key, state)
        try:
            for node, new_value, span in self.skip_after.pop(key, ()):
                self._write(node, state, new_value, span)
            for wanted in self.hooked.get(key, ()):
                self._hook_gradient(state, wanted)
            for node_id in self.events[key]:
                if self.scheduler.waiting[node_id] == 0:
                    self.scheduler.push(node_id)
            self._drain()
            for node_id in self.events[key]:
                if not self.scheduler.done[node_id] and self._active(self.part_of[node_id]):
                    node = self.nodes[node_id]
                    error = ExecutionError(
                        f"`{display(node)}` could not run when {event_text(key)} ran: a value it needs was not "
                        "computed yet.",
                        node.source,
                    )
                    if not self.contained:
                        raise error
                    self._fail_part(self.part_of[node_id], error)
        finally:
            self.active = outer
        if self.stop_early and self.scheduler.remaining == 0:
            raise _EveryNodeRan
        return state

    def _hook_gradient(self, state: _EventState, wanted) -> None:
        """Before a module event's nodes run: the tensor whose gradient the graph wants, hooked to fire its gradient
        event, so that what the nodes compute from it is part of the backward pass."""
        try:
            state.value, changed = hook_tensor(state.value, wanted, self._gradient_hook(wanted.event))
        except TypeError:
            node = self.nodes[self.events[wanted.event][0]]
            raise ExecutionError(
                f"`{display(node)}`: this part of the module value is not a floating-point tensor, "
                "so it has no gradient.",
                node.source,
            ) from None
        state.changed = state.changed or changed

    # ----- running nodes -----
    def _drain(self) -> None:
        scheduler = self.scheduler
        node_id = scheduler.pop()
        while node_id is not None:
            if not self.contained:
                self._run_node(node_id)
            elif self._active(self.part_of[node_id]):
                self._run_part_node(node_id)
            node_id = scheduler.pop()

    def _run_part_node(self, node_id: int) -> None:
        """Run a node of one part of a batch: its failure or its part's cancel ends that part only."""
        index = self.part_of[node_id]
        if self.part_stopped is not None and self.part_stopped(index):
            self._fail_part(index, RunCancelled("the job was cancelled"))
            return
        try:
            self._run_node(node_id)
        except ExecutionError as error:
            self._fail_part(index, error)

    def _run_node(self, node_id: int) -> None:
        node = self.nodes[node_id]
        self.guard.check()
        unmet = self._unmet_condition(node)
        try:
            if unmet is not None:
                self.unmet[node_id] = unmet
                value = None
            elif node.op in GRADIENT_OPS:
                value = self._gradient_node(node)
            elif node.op == "module.weight":
                value = getattr(submodule(self.model, node.args[0]), node.args[1]).detach()
            elif node.op == "stop":
                value = None
            elif node.op == "cond":
                value = _holds(self._resolve(self.constants[node.id][0][0]), node)
            elif node.op == "log":
                value = self._resolve(self.constants[node.id][0])
            elif node.op == SESSION_VALUE:
                value = self._imported(node)
            elif node.id in self.event_of:
                value = self._module_event(node)
            elif node.op == "module.call":
                value = self._call_module(node)
            else:
                value = self._operation(node)
        except NDIFError:
            raise
        except Exception as error:
            raise ExecutionError(f"`{display(node)}` failed: {type(error).__name__}: {error}", node.source) from None
        self.values[node_id] = value
        self.held += value_bytes(value)
        self.guard.hold(self.held)
        released, ready = self.scheduler.complete(node_id)
        for done_with in released:
            self._release(done_with)
        active_key = self.active[0] if self.active is not None else None
        for reader in ready:
            event = self.event_of.get(reader)
            if event is None or event == active_key:
                self.scheduler.push(reader)

    def _unmet_condition(self, node: Node) -> int | None:
        """The `cond` node that keeps `node` from running (its condition is false, or it reads a value that was not
        computed for that reason), or None when it runs."""
        condition = node_condition(node)
        if condition is not None and self.values.get(condition) is False:
            return condition
        if self.unmet:
            for read in self.scheduler.reads[node.id]:
                if read in self.unmet:
                    return self.unmet[read]
        return None

    def _operation(self, node: Node) -> Any:
        args, kwargs = self.constants[node.id]
        args, kwargs = self._resolve(args), self._resolve(operation_kwargs(kwargs))
        if node.op in INDEXING_OPS:
            problem = index_problem(node.op, args, kwargs)
            if problem:
                raise ExecutionError(f"`{display(node)}` cannot run: {problem}.", node.source)
        return OPERATIONS[node.op](*args, **kwargs)

    def _release(self, node_id: int) -> None:
        value = self.values.pop(node_id, None)
        size = value_bytes(value)
        self.held -= size
        if node_id in self.unmet:
            return
        if self.nodes[node_id].saved:
            self.saved[node_id] = saved_copy(value)
            self.held += size
        if node_id in self.keep:
            self.kept[node_id] = map_leaves(_detached_copy, value)
            self.held += size

    def _imported(self, node: Node) -> Any:
        """A `session.value` node: its own copy of an earlier block's value."""
        key = (node.args[0], node.args[1])
        if key not in self.imports:
            raise ExecutionError(
                f"`{display(node)}` reads a value that block {key[0] + 1} of the session never computed: its condition "
                "was false there, or its generation ended before that step.",
                node.source,
            )
        return map_leaves(_detached_copy, self.imports[key])

    def _module_event(self, node: Node) -> Any:
        key = self.event_of[node.id]
        if self.active is None or self.active[0] != key:
            raise ExecutionError(f"`{display(node)}` ran outside {event_text(key)}.", node.source)
        state = self.active[1]
        span = self.spans[node.args[1]]
        shapes = node.kwargs["shapes"]
        if node.op == "module.skip":
            new_value = self._resolve(self.constants[node.id][0][3])
            if span.whole and not self.contained:
                self.skipping[(node.args[0], self.step)] = map_leaves(self._on_device, new_value)
            else:
                self.skip_after.setdefault((node.args[0], "post", self.step), []).append((node, new_value, span))
            return None
        one_input = node.op in ("module.input", "module.set_input")
        current = first_input(*state.value) if one_input else state.value
        if self.contained and shared_leaf(current, shapes, span):
            raise NotInBatch(
                f"`{display(node)}` reaches a value that every job of the batch shares ({event_text(key)} has no "
                "row per prompt), so it runs alone.",
                node.source,
            )
        if node.op in GETTER_PHASES:
            value = narrow(current, shapes, span)
            problem = shape_mismatch(value, shapes)
            if problem:
                raise ExecutionError(
                    f"`{display(node)}`: {problem}.",
                    node.source,
                    "The request was recorded for another model or version; record the block again.",
                )
            return value
        new_value = self._resolve(self.constants[node.id][0][3])
        if node.op == "module.set_inputs":
            new_value = tuple(new_value)
        if self.contained and node.op == "module.set_inputs" and replaces_shared_part(current, new_value):
            raise NotInBatch(
                f"`{display(node)}` replaces a part of {event_text(key)} that is not a tensor, which every job of the "
                "batch shares, so it runs alone.",
                node.source,
            )
        self._write(node, state, new_value, span, one_input)
        return None

    def _on_device(self, leaf: Any) -> Any:
        return leaf.to(self.device) if isinstance(leaf, torch.Tensor) else leaf

    def skipped_output(self, path: str) -> tuple[bool, Any]:
        """Whether the module at `path` is skipped at this step, and the output it gives instead."""
        key = (path, self.step)
        return (True, self.skipping.pop(key)) if key in self.skipping else (False, None)

    def _write(self, node: Node, state: _EventState, new_value: Any, span: Span, one_input: bool = False) -> None:
        """The event's value (or its first input) with the invoke's part replaced by `new_value`."""
        current = first_input(*state.value) if one_input else state.value
        try:
            written = replace(current, new_value, node.kwargs["shapes"], span)
        except ValueError as error:
            raise ExecutionError(f"`{display(node)}` cannot be written: {error}", node.source) from None
        state.value = _with_first_input(state.value, written) if one_input else written
        state.changed = True

    def _gradient_node(self, node: Node) -> Any:
        """`trainable`, `backward`, and inside a gradient event `grad` (read, cut to the invoke) or `set_grad`."""
        if node.op == "trainable":
            tensor = make_trainable(self.constants[node.id][0][0])
            if node.id in self.whole_tensor_events:
                tensor.register_hook(self._gradient_hook(self.whole_tensor_events[node.id]))
            return tensor
        if node.op == "backward":
            loss, gradient = self._resolve(self.constants[node.id][0])
            run_backward(loss, gradient, node)
            return None
        key = self.event_of[node.id]
        if self.active is None or self.active[0] != key:
            raise ExecutionError(f"`{display(node)}` ran outside {event_text(key)}.", node.source)
        state = self.active[1]
        invoke = invoke_of(self.nodes, node)
        span = self.spans[invoke] if invoke is not None else Span(0, 0, True)
        if node.op == "grad":
            return narrow(state.value, node.kwargs["shapes"], span)
        self._write(node, state, self._resolve(self.constants[node.id][0][1]), span)
        return None

    def _gradient_hook(self, key: EventKey) -> Callable[[torch.Tensor], torch.Tensor | None]:
        """A tensor hook that fires the gradient event `key` and passes on the gradient its nodes wrote, if any."""

        def on_gradient(grad: torch.Tensor) -> torch.Tensor | None:
            state = self._fire(key, grad)
            return state.value if state is not None and state.changed else None

        return on_gradient

    def _call_module(self, node: Node) -> Any:
        self.guard.check()
        path, call_args, call_kwargs = self.constants[node.id][0]
        module = submodule(self.model, path)
        device = next((p.device for p in module.parameters()), self.device)
        to_device = lambda leaf: leaf.to(device) if isinstance(leaf, torch.Tensor) else leaf  # noqa: E731
        args = map_leaves(to_device, self._resolve(call_args))
        kwargs = map_leaves(to_device, self._resolve(call_kwargs))
        problem = embedding_problem(module, args)
        if problem:
            raise ExecutionError(f"`{display(node)}` cannot run: {problem}.", node.source)
        self.suspended = True
        try:
            return module(*args, **kwargs)
        finally:
            self.suspended = False

    def _resolve(self, value: Any) -> Any:
        if isinstance(value, Ref):
            return self.values[value.id]
        values = self.values
        return map_leaves(lambda leaf: values[leaf.id] if isinstance(leaf, Ref) else leaf, value)

    def _place_constants(self, node: Node) -> tuple[tuple, dict]:
        def place(leaf: Any) -> Any:
            if not isinstance(leaf, torch.Tensor):
                return leaf
            if id(leaf) not in self.placed:
                self.placed[id(leaf)] = leaf.to(self.device) if leaf.device != self.device else leaf
            return self.placed[id(leaf)]

        if node.op in GETTER_PHASES:
            return node.args, node.kwargs
        values = [value for key, value in node.kwargs.items() if key not in METADATA_KWARGS]
        if not any_leaf(_is_tensor, node.args) and not any_leaf(_is_tensor, values):
            return node.args, node.kwargs
        return map_leaves(place, node.args), map_leaves(place, node.kwargs)


class _NothingLeft(Exception):
    """Every part of a batched trace ended early: the forward pass has nothing left to do."""


class _EveryNodeRan(Exception):
    """A trace with `tracer.stop()` has run every node: the rest of the forward pass is not needed."""


class _Undo:
    """A change to the model that the run takes back when it ends, as torch's hook handles are."""

    def __init__(self, undo: Callable[[], None]):
        self.remove = undo


class _SkippableForward:
    """A module whose forward gives the value of a `module.skip` node instead of running, at the steps it is
    skipped; removed (the module's own forward back) when the run ends."""

    def __init__(self, module: torch.nn.Module, path: str, run: _Run):
        self.module = module
        self.own = module.__dict__.get("forward")  # accelerate and others may have set one on the instance
        original = module.forward

        def forward(*args: Any, **kwargs: Any) -> Any:
            skipped, value = run.skipped_output(path)
            return value if skipped else original(*args, **kwargs)

        module.forward = forward

    def remove(self) -> None:
        if self.own is None:
            del self.module.forward
        else:
            self.module.forward = self.own


def _holds(predicate: Any, node: Node) -> bool:
    """Whether a `cond` node's predicate holds: a one-element tensor or a Python value, as `bool()` reads it."""
    if isinstance(predicate, torch.Tensor) and predicate.numel() != 1:
        raise ExecutionError(
            f"`{display(node)}`: a condition must be one value, and this one has shape {list(predicate.shape)}.",
            node.source,
            "Reduce it to one value, for example with `.any()` or `.all()`.",
        )
    return bool(predicate)


def _with_first_input(inputs: tuple[tuple, dict], value: Any) -> tuple[tuple, dict]:
    args, kwargs = inputs
    if args:
        return (value, *args[1:]), kwargs
    first = next(iter(kwargs))
    return args, {**kwargs, first: value}


def _detached_copy(leaf: Any) -> Any:
    return leaf.detach().clone() if isinstance(leaf, torch.Tensor) else leaf


def _is_tensor(value: Any) -> bool:
    return isinstance(value, torch.Tensor)

"""Tracer: records a `with model.trace()/generate()` block into a Graph, checking shapes as it goes, then runs it."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import torch

from ..errors import ExecutionError, Source, TraceError, first_line
from ..operations import OPERATIONS
from ..structures import (
    describe,
    first_input,
    leaf_shapes,
    leaves,
    map_leaves,
    zip_map_leaves,
)
from .envoy import display_path
from .graph import CONSTANT_TYPES, Graph, Invoke, Node, Ref
from .proxy import Proxy, _proxies_in
from .shapes import ModuleRecord, to_meta
from .source import user_source

if TYPE_CHECKING:
    from ..model import Model

NOT_READY = (-1, -1)
_GETTER_OPS = {"output": "module.output", "input": "module.input", "inputs": "module.inputs"}
_SETTER_OPS = {"output": "module.set_output", "input": "module.set_input", "inputs": "module.set_inputs"}


class Invoker:
    """One `invoke(...)` of a block: its prompts, and the generation step its interventions apply to."""

    def __init__(self, tracer: "Tracer", index: int, rows: list[list[int]]):
        self.tracer = tracer
        self.index = index
        self.rows = rows
        self.length = max(len(row) for row in rows)
        self.pads = [self.length - len(row) for row in rows]
        self.step = 0

    def next(self, count: int = 1) -> None:
        """Apply the interventions that follow to the next generated token (one more forward pass)."""
        __tracebackhide__ = True
        self.tracer._advance(self, count)

    def __enter__(self) -> "Invoker":
        self.tracer._enter_invoke(self)
        return self

    def __exit__(self, *exc: Any) -> bool:
        self.tracer._exit_invoke(self)
        return False

    @property
    def output(self) -> torch.Tensor:
        """This invoke's rows of the generated ids, without the padding other invokes added."""
        ids = self.tracer.output
        start = sum(len(inv.rows) for inv in self.tracer.invokes[: self.index])
        width = ids.shape[1] - (self.tracer._batch_length - self.length)
        return ids[start : start + len(self.rows), -width:]


class Tracer:
    """Shared machinery of the generate and trace contexts. `kind` is "generate" or "trace"."""

    kind = "trace"

    def __init__(self, model: "Model", device_map: Any, options: dict[str, Any]):
        __tracebackhide__ = True
        model._check_device_map(device_map)
        self.model = model
        self.device_map = device_map
        self.options = _plain_options(options)
        self.nodes: list[Node] = []
        self.ready_at: list[tuple[int, int]] = []
        self.invokes: list[Invoker] = []
        self.current: Invoker | None = None
        self.state = "recording"
        self.failure: str | None = None
        self._saved: list[Proxy] = []
        self._missing: dict[int, str] = {}
        self._batch_length = 0
        self._output: torch.Tensor | None = None
        self._step_records: dict[tuple[int, int, int], Any] = {}
        self.result = None

    # ----- the block -----
    def __enter__(self):
        self.model._begin(self)
        return self

    def __exit__(self, exc_type, exc, tb) -> bool:
        __tracebackhide__ = True
        self.current = None
        self.model._end(self)
        if exc_type is not None:
            self.state = "failed"
            self.failure = "the block raised an error, so the graph did not run"
            return False
        self._run()
        return False

    def invoke(self, prompt: Any) -> Invoker:
        """Add prompts to the batch; interventions inside `with tracer.invoke(...)` apply to them alone."""
        __tracebackhide__ = True
        self._check_recording()
        rows = self.model._tokenize(prompt)
        return Invoker(self, len(self.invokes), rows)

    def _enter_invoke(self, invoker: Invoker) -> None:
        __tracebackhide__ = True
        self._check_recording()
        if self.current is not None:
            raise TraceError("Invokes cannot be nested.", user_source(), "Close one invoke before opening the next.")
        if invoker.index != len(self.invokes):
            raise TraceError("This invoke was already used.", user_source())
        self.invokes.append(invoker)
        self.current = invoker

    def _exit_invoke(self, invoker: Invoker) -> None:
        if self.current is invoker:
            self.current = None

    def _advance(self, invoker: Invoker, count: int) -> None:
        __tracebackhide__ = True
        if self.kind != "generate":
            raise TraceError(
                "`next()` moves to the next generated token; a trace runs one forward pass and has none.",
                user_source(),
                "Use `model.generate(max_new_tokens=N)` to intervene on generated tokens.",
            )
        limit = self.options["max_new_tokens"]
        if invoker.step + count >= limit:
            raise TraceError(
                f"`next()` goes past the last generated token: max_new_tokens={limit} gives steps 0 to {limit - 1}, "
                f"and this would be step {invoker.step + count}.",
                user_source(),
                f"Raise max_new_tokens to at least {invoker.step + count + 1}, or remove this `next()`.",
            )
        invoker.step += count

    @property
    def output(self) -> torch.Tensor:
        """The generated token ids, [batch, prompt + new] on the CPU, left-padded across invokes."""
        if self._output is None:
            raise AttributeError(
                "This block has no output yet: it is read after the `with` block, and only `generate` produces one."
            )
        return self._output

    # ----- recording -----
    def require_invoke(self, source: Source | None) -> Invoker:
        __tracebackhide__ = True
        self._check_recording(source)
        if self.current is None:
            raise TraceError(
                "Module values belong to a prompt, and no invoke is open.",
                source,
                "Put this line inside `with generator.invoke(prompt):`.",
            )
        return self.current

    def module_get(self, path: str, kind: str) -> Proxy:
        __tracebackhide__ = True
        source = user_source()
        invoker = self.require_invoke(source)
        record = self._record_for(invoker, path, source)
        value = _event_value(record, kind)
        event = record.pre_event if kind != "output" else record.post_event
        shapes = leaf_shapes(value)
        node = self._add(_GETTER_OPS[kind], (path, invoker.index, invoker.step), {"shapes": shapes}, source)
        return self._proxy(node, _fresh(value), (invoker.step, event), invoker)

    def module_set(self, path: str, kind: str, value: Any) -> None:
        __tracebackhide__ = True
        source = user_source()
        invoker = self.require_invoke(source)
        record = self._record_for(invoker, path, source)
        expected = _event_value(record, kind)
        event = record.pre_event if kind != "output" else record.post_event
        where = f"{display_path(path)}.{kind}"
        try:
            zip_map_leaves(_check_assignable, expected, self._meta_of(value))
        except (ValueError, TypeError) as error:
            raise TraceError(f"`{where}` cannot take this value: {error}.", source) from None
        ready = self._ready_of(value)
        if ready > (invoker.step, event):
            raise TraceError(
                f"`{where}` is set from a value that the model computes only after {display_path(path)} has run.",
                source,
                "A module's output can only be changed with values computed before or at that module.",
            )
        shapes = leaf_shapes(expected)
        graph_value = self._to_graph(value, source)
        self._add(_SETTER_OPS[kind], (path, invoker.index, invoker.step, graph_value), {"shapes": shapes}, source)

    def module_call(self, path: str, args: tuple, kwargs: dict) -> Proxy:
        __tracebackhide__ = True
        source = user_source()
        self._check_recording(source)
        module = self.model._meta_module(path)
        try:
            meta = to_meta(self.model._shape_oracle.call(module, self._meta_of(args), self._meta_of(kwargs)))
        except Exception as error:
            raise TraceError(
                f"Calling `{display_path(path)}` on these values fails: {type(error).__name__}: {error}", source
            ) from None
        graph_args = (path, self._to_graph(tuple(args), source), self._to_graph(dict(kwargs), source))
        node = self._add("module.call", graph_args, {}, source)
        return self._proxy(node, meta, self._ready_of((args, kwargs)), self._invoke_of((args, kwargs)))

    def record(self, op: str, args: tuple, kwargs: dict) -> Proxy:
        __tracebackhide__ = True
        source = user_source()
        self._check_recording(source)
        try:
            meta = OPERATIONS[op](*self._meta_of(args), **self._meta_of(kwargs))
        except TraceError:
            raise
        except Exception as error:
            raise TraceError(
                f"`{_op_text(op)}` fails on the traced values ({_operand_text(args)}): {first_line(error)}",
                source,
                "Shapes are checked while the block is recorded, before any weights load; fix the shapes here.",
            ) from None
        node = self._add(op, self._to_graph(tuple(args), source), self._to_graph(dict(kwargs), source), source)
        return self._proxy(node, meta, self._ready_of((args, kwargs)), self._invoke_of((args, kwargs)))

    def token(self, proxy: Proxy, index: int) -> Proxy:
        __tracebackhide__ = True
        source = user_source()
        meta = proxy._meta
        invoker = proxy._invoke or self.current
        if not isinstance(meta, torch.Tensor) or meta.ndim == 0 or invoker is None:
            raise TraceError(f"`.t({index})` indexes the tokens of a tensor, but this value is {describe(meta)}.", source)
        step = max(proxy._ready_at[0], 0)
        cached = step > 0 and self._forward_options().get("use_cache", True)
        sequence = 1 if cached else invoker.length + step
        if meta.ndim >= 2 and meta.shape[1] == sequence:
            prefix: tuple = (slice(None),)
            pads = [0] * len(invoker.rows) if cached else invoker.pads
        elif meta.shape[0] == sequence:
            prefix = ()
            pads = [0] if cached else sorted(set(invoker.pads))
            if len(pads) > 1:
                raise TraceError(
                    f"`.t({index})` cannot tell which prompt's padding applies to a value without its batch dimension.",
                    source,
                    "Index tokens before selecting a row: `value.t(i)[row]`.",
                )
        else:
            raise TraceError(
                f"`.t({index})` looks for the token dimension (length {sequence}) on dimension 1 or 0, but this value "
                f"has shape {list(meta.shape)}.",
                source,
            )
        if index < 0:
            return self.record("getitem", (proxy, (*prefix, index)), {})
        own = sequence - max(pads)
        if index >= own:
            raise TraceError(f"`.t({index})` is past the last token: this value has {own} tokens per prompt.", source)
        positions = [pad + index for pad in pads]
        if len(set(positions)) == 1:
            key: tuple = (*prefix, positions[0])
        else:
            key = (torch.arange(len(positions)), torch.tensor(positions))
        return self.record("getitem", (proxy, key), {})

    def mark_saved(self, proxy: Proxy) -> None:
        __tracebackhide__ = True
        source = user_source()
        self._check_recording(source)
        if proxy._tracer is not self:
            raise TraceError("This value belongs to another block; save values inside the block that made them.", source)
        for leaf in leaves(proxy._meta):
            if not isinstance(leaf, (torch.Tensor, int, float, bool, type(None))):
                raise TraceError(
                    f"Only tensors (or tuples of them) can be saved; this value holds {type(leaf).__name__}.",
                    source,
                    "Index into it to the tensor you want, for example `.output[0]`.",
                )
        node = self.nodes[proxy._node_id]
        if not node.saved:
            node.saved = True
            self._saved.append(proxy)

    # ----- helpers of recording -----
    def _check_recording(self, source: Source | None = None) -> None:
        __tracebackhide__ = True
        if self.state != "recording":
            raise TraceError(
                "This block has ended; values can only be recorded inside it.",
                source or user_source(),
                "Start a new `with model.trace(...)` or `model.generate(...)` block.",
            )

    def _record_for(self, invoker: Invoker, path: str, source: Source | None) -> ModuleRecord:
        __tracebackhide__ = True
        key = (len(invoker.rows), invoker.length, invoker.step)
        step = self._step_records.get(key)
        if step is None:
            step = self.model._shape_oracle.step(*key, self._forward_options())
            self._step_records[key] = step
        record = step.modules.get(path)
        if record is None or record.post_event < 0:
            raise TraceError(
                f"`{display_path(path)}` is not called during the model's forward pass, so it has no values.",
                source,
            )
        return record

    def _forward_options(self) -> dict[str, Any]:
        return dict(self.options)

    def _add(self, op: str, args: tuple, kwargs: dict, source: Source | None) -> Node:
        node = Node(len(self.nodes), op, args, kwargs, source)
        self.nodes.append(node)
        return node

    def _proxy(self, node: Node, meta: Any, ready_at: tuple[int, int], invoke: Invoker | None) -> Proxy:
        self.ready_at.append(ready_at)
        return Proxy(self, node.id, meta, ready_at, invoke)

    def _meta_of(self, value: Any) -> Any:
        if isinstance(value, Proxy):
            if value._tracer is not self:
                return to_meta(value.value)
            return value._meta
        if isinstance(value, torch.Tensor):
            return value.to("meta")
        if isinstance(value, tuple):
            return tuple(self._meta_of(item) for item in value)
        if isinstance(value, list):
            return [self._meta_of(item) for item in value]
        if isinstance(value, dict):
            return {key: self._meta_of(item) for key, item in value.items()}
        return value

    def _to_graph(self, value: Any, source: Source | None) -> Any:
        __tracebackhide__ = True
        if isinstance(value, Proxy):
            if value._tracer is self:
                return Ref(value._node_id)
            try:
                return self._to_graph(value.value, source)
            except Exception:
                raise TraceError(
                    "This value comes from another block that has not run (or did not save it).",
                    source,
                    "Save it with `.save()` in its own block and use it after that block ends.",
                ) from None
        if isinstance(value, torch.Tensor):
            return value.detach().clone()
        if isinstance(value, tuple):
            return tuple(self._to_graph(item, source) for item in value)
        if isinstance(value, list):
            return [self._to_graph(item, source) for item in value]
        if isinstance(value, dict):
            if not all(isinstance(key, str) for key in value):
                raise TraceError("Only dictionaries with string keys can be recorded.", source)
            return {key: self._to_graph(item, source) for key, item in value.items()}
        if isinstance(value, slice):
            return slice(*(self._to_graph(part, source) for part in (value.start, value.stop, value.step)))
        if isinstance(value, CONSTANT_TYPES):
            return value
        raise TraceError(
            f"A value of type {type(value).__name__} cannot be part of an intervention graph.",
            source,
            "Graphs hold tensors, numbers, strings, slices and tuples, lists or dicts of them.",
        )

    def _ready_of(self, value: Any) -> tuple[int, int]:
        ready = NOT_READY
        for proxy in _proxies_in(value):
            if proxy._tracer is self and proxy._ready_at > ready:
                ready = proxy._ready_at
        return ready

    def _invoke_of(self, value: Any) -> Invoker | None:
        for proxy in _proxies_in(value):
            if proxy._tracer is self and proxy._invoke is not None:
                return proxy._invoke
        return self.current

    # ----- running -----
    def graph(self) -> Graph:
        """The recorded graph, as plain data."""
        return Graph(
            self.kind,
            self.nodes,
            [Invoke(invoker.rows) for invoker in self.invokes],
            dict(self.options),
            self.model._pad_token_id,
            sum(leaf.numel() * leaf.element_size() for proxy in self._saved for leaf in leaves(proxy._meta)
                if isinstance(leaf, torch.Tensor)),
        )

    def _run(self) -> None:
        __tracebackhide__ = True
        if not self.invokes:
            self.state = "failed"
            self.failure = "the block had no invoke, so nothing ran"
            raise TraceError(
                "This block has no prompt to run.", None, "Add `with generator.invoke(prompt):` inside the block."
            )
        self.state = "running"
        self._batch_length = max(invoker.length for invoker in self.invokes)
        try:
            result = self.model._execute(self.graph(), self.device_map)
        except BaseException as error:
            self.state = "failed"
            self.failure = f"running the graph failed ({type(error).__name__})"
            if isinstance(error, (ExecutionError, TraceError)):
                raise error.with_traceback(None) from None
            raise
        self.state = "done"
        self.result = result
        self._output = result.output_ids
        self._missing = result.missing
        for proxy in self._saved:
            if proxy._node_id in result.saved:
                proxy._value = result.saved[proxy._node_id]

    # ----- messages -----
    def node_source(self, node_id: int) -> Source | None:
        return self.nodes[node_id].source

    def node_op(self, node_id: int) -> str:
        return self.nodes[node_id].op

    def current_source(self) -> Source | None:
        return user_source()

    def value_not_ready_message(self, node_id: int) -> str:
        node = self.nodes[node_id]
        where = node.source.describe() if node.source else "  (unknown line)"
        if self.state == "recording":
            return (
                "`.value` is read inside the block that computes it; the graph runs when the `with` block ends.\n"
                f"The value was recorded at:\n{where}\nRead `.value` after the block."
            )
        if not node.saved:
            return f"This value was not saved.\nIt was recorded at:\n{where}\nCall `.save()` on it inside the block."
        if node_id in self._missing:
            return f"This value was never computed: {self._missing[node_id]}.\nIt was recorded at:\n{where}"
        return f"This value has no result: {self.failure or 'the graph did not run'}.\nIt was recorded at:\n{where}"

    def unsupported_attribute_message(self, proxy: Proxy, name: str) -> str:
        return (
            f"`.{name}` cannot be recorded on a traced value ({describe(proxy._meta)}): it is not a tensor method "
            "an intervention graph allows. See ndif_jupyter.operations for the allowed ones."
        )


def _event_value(record: ModuleRecord, kind: str) -> Any:
    if kind == "output":
        return record.output
    if kind == "inputs":
        return (record.args, record.kwargs)
    return first_input(record.args, record.kwargs)


def _fresh(value: Any) -> Any:
    """Meta tensors of their own for one proxy, so that in-place changes to them do not reach the shape cache."""
    if isinstance(value, torch.Tensor):
        return value.detach()
    return map_leaves(lambda leaf: leaf.detach() if isinstance(leaf, torch.Tensor) else leaf, value)


def _check_assignable(expected: Any, value: Any) -> None:
    if isinstance(expected, torch.Tensor):
        if isinstance(value, torch.Tensor):
            try:
                shape = torch.broadcast_shapes(value.shape, expected.shape)
            except RuntimeError:
                shape = None
            if shape != expected.shape:
                raise ValueError(f"it has shape {list(value.shape)}, and the module's value has {list(expected.shape)}")
        elif not isinstance(value, (int, float, bool)):
            raise ValueError(f"expected a tensor of shape {list(expected.shape)}, got {describe(value)}")


def _plain_options(options: dict[str, Any]) -> dict[str, Any]:
    for key, value in options.items():
        if not isinstance(value, (type(None), bool, int, float, str, list, tuple)):
            raise TraceError(
                f"Option `{key}` is {type(value).__name__}; options must be plain values (numbers, strings, lists) "
                "so that the graph can run anywhere.",
                user_source(),
            )
    return dict(options)


_OP_SYMBOLS = {
    "add": "+", "sub": "-", "mul": "*", "truediv": "/", "floordiv": "//", "mod": "%", "pow": "**", "matmul": "@",
    "eq": "==", "ne": "!=", "lt": "<", "le": "<=", "gt": ">", "ge": ">=", "getitem": "[...]", "setitem": "[...] =",
}


def _op_text(op: str) -> str:
    return _OP_SYMBOLS.get(op, op.replace("tensor.", "."))


def _operand_text(args: tuple) -> str:
    texts = []
    for arg in args:
        meta = arg._meta if isinstance(arg, Proxy) else arg
        texts.append(describe(meta) if isinstance(meta, torch.Tensor) else repr(meta)[:40])
    return ", ".join(texts)

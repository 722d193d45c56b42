"""Proxy: a stand-in for a value the model will compute; operations on it are recorded as graph nodes, not run."""

from __future__ import annotations

import operator
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any, cast

import torch

from ..errors import TraceError, ValueNotReadyError
from ..ir.nested import any_leaf, describe, iter_leaves, map_leaves
from ..operations import TENSOR_METHODS, TENSOR_PROPERTIES, operation_for_torch_function

if TYPE_CHECKING:
    from .gradients import GradientAccess
    from .recording import Recording

_UNSET = object()


class Proxy:
    """A recorded value: `.shape` and `.dtype` are known while tracing; `.save()` keeps it for `.value` after a run."""

    __slots__ = ("__weakref__", "_value", "invoker", "meta", "node_id", "ready_at", "tracer")

    def __init__(self, tracer: Recording, node_id: int, meta: Any, ready_at: tuple[int, int], invoker: Any):
        self.tracer = tracer
        """The block that recorded this value."""
        self.node_id = node_id
        """The id of the graph node that computes it."""
        self.meta = meta
        """What it will be, as meta tensors (or a structure of them): its shapes and dtypes."""
        self.ready_at = ready_at
        """(step, event): the module event after which the model has computed it; (-1, -1) for constants."""
        self.invoker = invoker
        """The invoke its rows belong to, or None."""
        self._value = _UNSET

    def set_value(self, value: Any) -> None:
        """Give the proxy the value its block's run computed (done by the block when it has run)."""
        self._value = value

    @property
    def has_value(self) -> bool:
        """Whether the block has run and this value was saved."""
        return self._value is not _UNSET

    # ----- what is known while tracing -----
    @property
    def shape(self) -> torch.Size:
        return self._tensor_meta("shape").shape

    @property
    def dtype(self) -> torch.dtype:
        return self._tensor_meta("dtype").dtype

    @property
    def ndim(self) -> int:
        return self._tensor_meta("ndim").ndim

    def size(self, dim: int | None = None):
        meta = self._tensor_meta("size()")
        return meta.shape if dim is None else meta.shape[dim]

    def dim(self) -> int:
        return self._tensor_meta("dim()").ndim

    def numel(self) -> int:
        return self._tensor_meta("numel()").numel()

    def __len__(self) -> int:
        if isinstance(self.meta, torch.Tensor):
            return self.meta.shape[0]
        return len(self.meta)

    def _tensor_meta(self, what: str) -> torch.Tensor:
        __tracebackhide__ = True
        if not isinstance(self.meta, torch.Tensor):
            raise TraceError(
                f"`.{what}` needs a tensor, but this value is {type(self.meta).__name__}.",
                self.tracer.node_source(self.node_id),
                "Index into it first, for example `.output[0]`.",
            )
        return self.meta

    # ----- saving and reading -----
    def save(self) -> Proxy:
        """Keep this value after the run; read it with `.value`."""
        __tracebackhide__ = True
        self.tracer.mark_saved(self)
        return self

    @property
    def value(self) -> Any:
        """The saved value, a CPU tensor (or a structure of them), once the block has run."""
        __tracebackhide__ = True
        if self._value is _UNSET:
            raise ValueNotReadyError(self.tracer.value_not_ready_message(self.node_id))
        return self._value

    # ----- gradients -----
    def backward(self, gradient: Any = None) -> Any:
        """Record the backward pass of this value (the loss): `with loss.backward():` then read `.grad` inside."""
        __tracebackhide__ = True
        return cast("GradientAccess", self.tracer).backward(self, gradient)

    @property
    def grad(self) -> Proxy:
        """The gradient the block's backward pass brings to this module value (or trainable tensor)."""
        __tracebackhide__ = True
        return cast("GradientAccess", self.tracer).grad_of(self)

    @grad.setter
    def grad(self, value: Any) -> None:
        __tracebackhide__ = True
        cast("GradientAccess", self.tracer).set_grad(self, value)

    # ----- token indexing -----
    def token(self, index: int) -> Proxy:
        """Token `index` of this invoke's own prompt (padding does not move it); negative counts from the end."""
        __tracebackhide__ = True
        return self.tracer.token(self, index)

    t = token

    # ----- recording -----
    def __getattr__(self, name: str) -> Any:
        __tracebackhide__ = True
        if name.startswith("__"):
            raise AttributeError(name)
        if name in TENSOR_PROPERTIES:
            return operate(f"tensor.{name}", (self,), {}, self.tracer)
        if name in TENSOR_METHODS:
            return _BoundMethod(self, name)
        key = field_key(self.meta, name)
        if key is not None:
            return operate("getitem", (self, key), {}, self.tracer)
        raise AttributeError(self.tracer.unsupported_attribute_message(self, name))

    def __getitem__(self, key: Any) -> Proxy:
        __tracebackhide__ = True
        return operate("getitem", (self, key), {}, self.tracer)

    def __setitem__(self, key: Any, value: Any) -> None:
        __tracebackhide__ = True
        operate("setitem", (self, key, value), {}, self.tracer)

    def __iter__(self):
        __tracebackhide__ = True
        for index in range(len(self)):
            yield self[index]

    def __bool__(self) -> bool:
        __tracebackhide__ = True
        if self._value is not _UNSET and not self.tracer.is_recording:
            return bool(self._value)
        raise TraceError(
            "A traced value has no truth value while the block is being recorded: `if`, `and`, `or` and `while` "
            "on it cannot be recorded.",
            self.tracer.node_source(self.node_id),
            "To run interventions only when it holds, use `with tracer.cond(value):`; to choose between values, "
            "`torch.where(condition, a, b)`.",
        )

    def __index__(self) -> int:
        __tracebackhide__ = True
        if self._value is not _UNSET and not self.tracer.is_recording:
            return operator.index(cast(Any, self._value))
        raise TraceError(
            "A traced value cannot be used as a Python integer while the block is being recorded.",
            self.tracer.node_source(self.node_id),
        )

    __hash__ = object.__hash__

    def __repr__(self) -> str:
        if self._value is not _UNSET:
            return f"<Proxy saved: {describe(self._value)}>"
        return f"<Proxy {self.tracer.node_op(self.node_id)}: {describe(self.meta)}>"

    @classmethod
    def __torch_function__(cls, func, types, args=(), kwargs=None):
        __tracebackhide__ = True
        tracer = next(a.tracer for a in proxies_in((args, kwargs)))
        found = operation_for_torch_function(func)
        if found is None:
            name = getattr(func, "__qualname__", getattr(func, "__name__", repr(func)))
            raise TraceError(
                f"`{name}` is not an operation an intervention graph can contain.",
                tracer.current_source(),
                "See ndif_jupyter.operations for the operations that are allowed.",
            )
        op, reversed_operands = found
        if reversed_operands:
            args = (args[1], args[0], *args[2:])
        return operate(op, tuple(args), dict(kwargs or {}), tracer)


def _binary(op: str, reverse: bool = False):
    def method(self, other):
        __tracebackhide__ = True
        operands = (other, self) if reverse else (self, other)
        return operate(op, operands, {}, self.tracer)

    method.__name__ = f"__{'r' if reverse else ''}{op}__"
    return method


def _unary(op: str):
    def method(self):
        __tracebackhide__ = True
        return operate(op, (self,), {}, self.tracer)

    method.__name__ = f"__{op}__"
    return method


for _op in ("add", "sub", "mul", "truediv", "floordiv", "mod", "pow", "matmul", "and", "or", "xor", "lshift", "rshift"):
    setattr(Proxy, f"__{_op}__", _binary(_op))
    setattr(Proxy, f"__r{_op}__", _binary(_op, reverse=True))
for _op in ("eq", "ne", "lt", "le", "gt", "ge", "iadd", "isub", "imul", "itruediv"):
    setattr(Proxy, f"__{_op}__", _binary(_op))
for _op in ("neg", "pos", "abs", "invert"):
    setattr(Proxy, f"__{_op}__", _unary(_op))


class _BoundMethod:
    """`proxy.mean` before it is called: calling it records `tensor.mean`."""

    __slots__ = ("_name", "_proxy")

    def __init__(self, proxy: Proxy, name: str):
        self._proxy = proxy
        self._name = name

    def __call__(self, *args: Any, **kwargs: Any) -> Proxy:
        __tracebackhide__ = True
        return operate(f"tensor.{self._name}", (self._proxy, *args), kwargs, self._proxy.tracer)


def operate(op: str, args: tuple, kwargs: dict, tracer: Recording) -> Any:
    """Record `op` in the block that is recording among its operands' blocks. Values of a session's blocks that
    wait for its end go into the session's block being recorded now, or, written between two blocks, into the latest
    of their own blocks (the operation runs there, and later blocks read it as any value of that block). When no
    block is left to record in (every block they come from has ended), run it now on their saved values."""
    __tracebackhide__ = True
    operands = list(proxies_in((args, kwargs)))
    recording = next((p.tracer for p in operands if p.tracer.is_recording), None)
    if recording is None:
        recording = next((block for p in operands if (block := p.tracer.recording_in_session()) is not None), None)
    if recording is not None:
        return recording.record(op, args, kwargs)
    waiting = [p.tracer for p in operands if p.tracer.waits_in_session()]
    if waiting:
        latest = max(waiting, key=lambda block: block.session_place())
        return latest.record(op, args, kwargs, between_blocks=True)
    return tracer.run_now(op, args, kwargs)


def field_key(value: Any, name: str) -> int | str | None:
    """How a named field of a structured value is indexed: `values`/`indices` of a `max` or `topk` result (a
    position), `logits` of a model output (a key); None when `value` has no field `name`."""
    if isinstance(value, dict) and name in value:
        return name
    if isinstance(value, tuple):  # named tuples, and torch's structured results (`torch.return_types.topk`)
        fields = getattr(type(value), "_fields", None) or getattr(type(value), "__match_args__", None) or ()
        if name in fields:
            return list(fields).index(name)
    return None


def resolve_saved(value: Any, tracer: Recording) -> Any:
    """`value` with each saved proxy of `tracer` replaced by its value, looking inside nested containers.

    Returns `value` itself when it holds no such proxy.
    """

    def saved_of(leaf: Any) -> bool:
        return isinstance(leaf, Proxy) and leaf.tracer is tracer and leaf.has_value

    if not any_leaf(saved_of, value):
        return value
    return map_leaves(lambda leaf: leaf.value if saved_of(leaf) else leaf, value)


def proxies_in(value: Any) -> Iterator[Proxy]:
    """Every proxy inside a nested value."""
    for leaf in iter_leaves(value):
        if isinstance(leaf, Proxy):
            yield leaf

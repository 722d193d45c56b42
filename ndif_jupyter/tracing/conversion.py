"""Values crossing into a graph: user values as meta values (for shape checks) and as graph arguments."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import torch

from ..errors import TraceError, ValueNotReadyError, first_line
from ..ir.graph import CONSTANT_TYPES, Ref
from ..ir.nested import describe, first_input, iter_containers, map_leaves
from ..ir.source import Source
from ..loading.shapes import ModuleRecord, to_meta
from .proxy import Proxy, proxies_in
from .source import user_source

if TYPE_CHECKING:
    from .invoker import Invoker
    from .recording import Recording

NOT_READY = (-1, -1)


def meta_of(value: Any, tracer: Recording) -> Any:
    """`value` as the meta values shape checks run on: a proxy's meta value, a tensor on the meta device."""

    def convert(leaf: Any) -> Any:
        if isinstance(leaf, Proxy):
            return leaf.meta if leaf.tracer is tracer or not leaf.has_value else to_meta(leaf.value)
        if isinstance(leaf, torch.Tensor):
            return leaf.to("meta")
        return leaf

    if isinstance(value, Proxy) and value.tracer is tracer:
        return value.meta
    return map_leaves(convert, value)


def to_graph(value: Any, tracer: Recording, source: Source | None) -> Any:
    """`value` as a graph argument: this block's proxies as Refs, tensors copied, constants as they are.

    A value of an earlier block of the same session goes in as a `session.value` node; a saved value of a block
    that has run, as its value. Anything else is refused at the user's line.
    """
    __tracebackhide__ = True
    for container in iter_containers(value):
        if isinstance(container, dict) and not all(isinstance(key, str) for key in container):
            raise TraceError("Only dictionaries with string keys can be recorded.", source)

    def convert(leaf: Any) -> Any:
        __tracebackhide__ = True
        if isinstance(leaf, Proxy):
            if leaf.tracer is tracer:
                return Ref(leaf.node_id)
            imported = tracer.imported_ref(leaf)
            if imported is not None:
                return imported
            try:
                value = leaf.value
            except ValueNotReadyError as error:
                raise TraceError(
                    f"This value comes from another block, where it has none: {first_line(error)}",
                    source,
                    "Save it with `.save()` in its own block and use it after that block has run.",
                ) from None
            return to_graph(value, tracer, source)
        if isinstance(leaf, torch.Tensor):
            return leaf if id(leaf) in tracer.kept_constants else leaf.detach().clone()
        if isinstance(leaf, CONSTANT_TYPES):
            return leaf
        raise TraceError(
            f"A value of type {type(leaf).__name__} cannot be part of an intervention graph.",
            source,
            "Graphs hold tensors, numbers, strings, slices and tuples, lists or dicts of them.",
        )

    return map_leaves(convert, value)


def ready_of(value: Any, tracer: Recording) -> tuple[int, int]:
    """The latest (step, event) at which the model has computed every proxy of `tracer` inside `value`."""
    ready = NOT_READY
    for proxy in proxies_in(value):
        if proxy.tracer is tracer and proxy.ready_at > ready:
            ready = proxy.ready_at
    return ready


def invoker_of(value: Any, tracer: Recording) -> Invoker | None:
    """The invoke whose rows the proxies inside `value` belong to, else the block's open invoke."""
    for proxy in proxies_in(value):
        if proxy.tracer is tracer and proxy.invoker is not None:
            return proxy.invoker
    return tracer.current


def event_value(record: ModuleRecord, kind: str) -> Any:
    """A module's `.output`, `.inputs` (args, kwargs) or `.input` (the first of them) as traced."""
    if kind == "output":
        return record.output
    if kind == "inputs":
        return (record.args, record.kwargs)
    return first_input(record.args, record.kwargs)


def fresh(value: Any) -> Any:
    """Meta tensors of their own for one proxy, so that in-place changes to them do not reach the shape cache."""
    if isinstance(value, torch.Tensor):
        return value.detach()
    return map_leaves(lambda leaf: leaf.detach() if isinstance(leaf, torch.Tensor) else leaf, value)


def check_assignable(expected: Any, value: Any) -> None:
    """Raise ValueError unless `value` can replace the module value `expected` (same or broadcastable shape)."""
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


def plain_options(options: dict[str, Any]) -> dict[str, Any]:
    """The block's options, refused unless they are plain values that can travel with the graph."""
    __tracebackhide__ = True
    for key, value in options.items():
        if not isinstance(value, (type(None), bool, int, float, str, list, tuple)):
            raise TraceError(
                f"Option `{key}` is {type(value).__name__}; options must be plain values (numbers, strings, lists) "
                "so that the graph can run anywhere.",
                user_source(),
            )
    return dict(options)

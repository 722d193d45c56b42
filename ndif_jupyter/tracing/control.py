"""Control flow in the graph: `with tracer.cond(predicate):` and `tracer.log(...)`, decided and printed at run time."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import torch

from ..errors import TraceError
from ..ir.nested import describe
from .conversion import meta_of, ready_of, to_graph
from .proxy import Proxy
from .source import user_source

if TYPE_CHECKING:
    from .recording import Recording


class Condition:
    """`with tracer.cond(predicate):`: what the body records runs only when `predicate` (one traced value: a
    one-element tensor, a comparison, an `.item()`) holds at run time. Otherwise those nodes do not run, a setter
    among them writes nothing, and a value saved there has no `.value` (it says the condition was false).

    Conditions nest; for the other branch, open a second one on the negation (`~predicate`).
    """

    def __init__(self, tracer: Recording, predicate: Any):
        __tracebackhide__ = True
        source = user_source()
        tracer.require_recording(source)
        if not isinstance(predicate, Proxy) or predicate.tracer is not tracer:
            raise TraceError(
                "`tracer.cond(...)` decides at run time on a value of this block; this condition is already known "
                f"({describe(predicate)}).",
                source,
                "Use a plain Python `if` for values known now.",
            )
        meta = meta_of(predicate, tracer)
        if not isinstance(meta, torch.Tensor) or meta.numel() != 1:
            raise TraceError(
                f"A condition must be one value; this one is {describe(meta)}.",
                source,
                "Reduce it to one value, for example `(h > 0).all()` or `h.norm() > 10`.",
            )
        self.tracer = tracer
        self.node_id = tracer.add_control("cond", (to_graph(predicate, tracer, source),), source)
        self.ready_at = max(ready_of(predicate, tracer), tracer.condition_ready())
        self.source = source

    def __enter__(self) -> Condition:
        self.tracer.conditions.append(self)
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if self.tracer.conditions and self.tracer.conditions[-1] is self:
            self.tracer.conditions.pop()


def record_log(tracer: Recording, values: tuple) -> None:
    """`tracer.log(*values)`: the values are kept and printed, as `print` would, when the block has run."""
    __tracebackhide__ = True
    source = user_source()
    tracer.require_recording(source)
    if not values:
        raise TraceError("`tracer.log()` needs something to print.", source, "Pass values: `tracer.log('norm', h)`.")
    node_id = tracer.add_control("log", to_graph(tuple(values), tracer, source), source)
    tracer.nodes[node_id].saved = True
    tracer.logs.append(node_id)

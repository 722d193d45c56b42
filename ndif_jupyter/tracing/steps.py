"""`generator.steps`: the open invoke's generation steps, iterated in order without counting `next()` calls."""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING

from ..errors import TraceError
from .source import user_source

if TYPE_CHECKING:
    from .tracer import Tracer


class Steps:
    """The steps of a generation for the open invoke: `for step in generator.steps:` runs the loop's body once per
    generated token, the invoke at that step; `generator.steps[2:5]` (or `[-1]`) takes some of them, in order.

    The loop moves the open invoke forward as `invoker.next()` would, so it ends at the last step it took.
    """

    def __init__(self, tracer: Tracer, selection: slice = slice(None)):
        self._tracer = tracer
        self._selection = selection

    def __getitem__(self, key: int | slice) -> Steps:
        __tracebackhide__ = True
        limit = self._tracer.options["max_new_tokens"]
        indices = range(limit)[self._selection]
        if isinstance(key, int):
            if not -len(indices) <= key < len(indices):
                raise TraceError(
                    f"Step {key} is not among this generation's steps (max_new_tokens={limit}: steps 0 to "
                    f"{limit - 1}).",
                    user_source(),
                )
            index = indices[key]
            return Steps(self._tracer, slice(index, index + 1))
        if not isinstance(key, slice):
            raise TraceError(f"Steps are taken by an integer or a slice, not {type(key).__name__}.", user_source())
        chosen = indices[key]
        return Steps(self._tracer, slice(chosen.start, chosen.stop, chosen.step))

    def indices(self) -> range:
        """The step numbers this selection goes through."""
        return range(self._tracer.options["max_new_tokens"])[self._selection]

    def __len__(self) -> int:
        return len(self.indices())

    def __iter__(self) -> Iterator[int]:
        __tracebackhide__ = True
        tracer = self._tracer
        indices = self.indices()
        invoker = tracer.require_invoke(user_source())
        if len(indices) and (indices.step < 0 or indices[0] < invoker.step):
            raise TraceError(
                f"Steps only go forward: the open invoke is at step {invoker.step}, and this would go back to step "
                f"{indices[0] if indices.step > 0 else indices[-1]}.",
                user_source(),
                "Take the steps in increasing order, from the invoke's step on.",
            )
        for index in indices:
            if tracer.current is not invoker:
                raise TraceError("The invoke of this loop was closed inside it.", user_source())
            if index > invoker.step:
                tracer.advance(invoker, index - invoker.step)
            yield index

    def __repr__(self) -> str:
        indices = self.indices()
        return f"<steps {indices.start} to {indices.stop - 1} of the generation>" if indices else "<no steps>"

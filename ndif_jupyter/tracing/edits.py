"""`with model.edit():`: the block that records a set of persistent edits, kept on the model instead of run."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ..errors import TraceError
from ..ir.graph import Node
from ..operations import GRADIENT_OPS
from .recording import BlockState
from .replay import EditSet
from .source import user_source
from .tracer import Tracer

if TYPE_CHECKING:
    from .invoker import Invoker
    from .proxy import Proxy
    from .traced_model import TracedModel

TEMPLATE_PROMPT = "The quick brown fox jumps over the lazy dog"
"""The prompt an edit is recorded on, for its shape checks; the edit applies to any prompt later."""
_NOT_IN_EDITS = GRADIENT_OPS | {"stop", "log"}


class EditContext(Tracer):
    """`with model.edit(name):` records interventions that every later block of the model applies, for each invoke
    and at every forward pass (every generated token), before its own. Nothing runs when the block ends.

    The interventions are recorded on a stand-in prompt, so they should not depend on its length: write whole
    values or positions from the end (`[:, -1]`). Values are not saved in an edit, and it takes no gradients.
    Recording an edit under a name it already has replaces that set.
    """

    kind = "trace"
    joins_session = False

    def __init__(self, traced: TracedModel, model: Any, name: str):
        super().__init__(traced, model, _never_runs, None, {}, use_edits=False)
        self.name = name

    def __enter__(self) -> EditContext:
        __tracebackhide__ = True
        super().__enter__()
        try:
            Tracer.invoke(self, TEMPLATE_PROMPT).__enter__()
        except BaseException:
            self.traced.end(self)
            raise
        return self

    _failed_text = "the edit raised an error, so it was not kept"

    def _complete(self) -> None:
        self.state = BlockState.DONE
        self.traced.set_edit(EditSet(self.name, tuple(self.nodes)))

    # ----- what an edit cannot hold -----
    def invoke(self, prompt: Any) -> Invoker:
        __tracebackhide__ = True
        raise TraceError(
            "An edit applies to every invoke of later blocks; it has no prompts of its own.",
            user_source(),
            "Write the interventions directly in the `with model.edit():` block.",
        )

    def next(self, count: int = 1) -> None:
        __tracebackhide__ = True
        self.advance(None, count)

    @property
    def steps(self) -> Any:
        __tracebackhide__ = True
        self.advance(None, 1)

    def advance(self, invoker: Invoker | None, count: int) -> None:
        __tracebackhide__ = True
        raise TraceError(
            "An edit applies at every forward pass (every generated token), so it has no steps.",
            user_source(),
            "Remove `next()`; to intervene at one step only, do it in the block.",
        )

    def mark_saved(self, proxy: Proxy) -> None:
        __tracebackhide__ = True
        raise TraceError(
            "An edit keeps no values: it is replayed in later blocks, which save what they read.",
            user_source(),
            "Save values in a `trace` or `generate` block; the edit applies there too.",
        )

    def token(self, proxy: Proxy, index: int) -> Proxy:
        __tracebackhide__ = True
        raise TraceError(
            "`.t()` counts from the start of a prompt, and an edit is recorded on a stand-in prompt.",
            user_source(),
            "Use positions from the end, such as `[:, -1]`, or whole values.",
        )

    def _add(self, op: str, args: tuple, kwargs: dict, source: Any) -> Node:
        __tracebackhide__ = True
        if op in _NOT_IN_EDITS:
            raise TraceError(
                "An edit changes the model for later blocks; gradients, `stop()` and `log()` belong in the block.",
                source,
                "Move this line into a `trace` or `generate` block.",
            )
        return super()._add(op, args, kwargs, source)


def _never_runs(graph: Any) -> Any:
    raise AssertionError("an edit is kept, not run")

"""`with model.session():`: several blocks recorded one after another and run together, as one request, at its end."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Literal, Protocol

from ..errors import ExecutionError, TraceError
from ..ir.result import SessionResult
from ..ir.session import MAX_BLOCKS, Session
from .source import user_source

if TYPE_CHECKING:
    from .recording import Recording
    from .traced_model import TracedModel
    from .tracer import Tracer


class SessionRunner(Protocol):
    """Runs a session's graphs where its `device_map` says."""

    def run(self, graph: Any) -> Any: ...

    def run_session(self, session: Session) -> SessionResult: ...


class SessionContext:
    """`with model.session() as session:` holds back the `trace` and `generate` blocks opened on the model inside
    it: each is recorded as usual, and at the session's end they run in order as one request (one job, one round
    trip to a server). A later block may use any value of an earlier one, saved or not (`h` of the first block in
    an operation or a setter of the second): the value goes from one block to the next where they run, without
    coming back to the kernel. Each block gets its own copy of it, so what a block changes stays in that block. An
    operation written between two blocks on their values is recorded in the latest block it reads, and runs there.

    Saved values are read after the session, as after a block; until it ends, a value of one of its blocks can still
    be saved. `device_map` is where every block of it runs.
    """

    def __init__(self, traced: TracedModel, model: Any, runner: SessionRunner, device_map: Any):
        self.traced = traced
        self.model = model
        self.runner = runner
        self.device_map = device_map
        self.blocks: list[Tracer] = []
        self.ran = False

    def __enter__(self) -> SessionContext:
        __tracebackhide__ = True
        self.traced.begin_session(self)
        return self

    def __exit__(self, exc_type, exc, tb) -> Literal[False]:
        __tracebackhide__ = True
        self.traced.end_session(self)
        if exc_type is not None:
            self._fail("the session raised an error, so its blocks did not run")
            return False
        if self.blocks:
            self._run()
        return False

    def device_map_for(self, device_map: Any) -> Any:
        """The `device_map` of a block opened inside the session: the session's; another one is refused."""
        __tracebackhide__ = True
        if device_map is not None and device_map != self.device_map:
            raise TraceError(
                f"The blocks of a session run where the session runs (device_map={self.device_map!r}), and this "
                f"block asks for device_map={device_map!r}.",
                user_source(),
                "Leave device_map out of the block, or give it to `model.session(device_map=...)`.",
            )
        return self.device_map

    def add(self, block: Tracer) -> None:
        """`block` ended without an error: it runs, in this order, when the session ends."""
        __tracebackhide__ = True
        if len(self.blocks) >= MAX_BLOCKS:
            raise TraceError(
                f"A session holds at most {MAX_BLOCKS} blocks.", user_source(), "Split the work into several sessions."
            )
        self.blocks.append(block)

    def block_index(self, block: Recording) -> int | None:
        """The place of `block` among the session's blocks that wait for its end, or None."""
        for index, waiting in enumerate(self.blocks):
            if waiting is block:
                return None if self.ran else index
        return None

    def _run(self) -> None:
        __tracebackhide__ = True
        self.ran = True
        try:
            result = self.runner.run_session(Session([block.graph() for block in self.blocks]))
        except BaseException as error:
            self._fail(f"running the session failed ({type(error).__name__})")
            if isinstance(error, (ExecutionError, TraceError)):
                raise error.with_traceback(None) from None
            raise
        for block, block_result in zip(self.blocks, result.results):
            block.finish(block_result)

    def _fail(self, failure: str) -> None:
        self.ran = True
        for block in self.blocks:
            block.fail(failure)

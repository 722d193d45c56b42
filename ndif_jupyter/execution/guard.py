"""RunGuard: what may stop a run between two of its nodes or forward passes (a cancel request, a deadline) and the
memory its graph values may hold, measured as it runs."""

from __future__ import annotations

import time
from collections.abc import Callable

from ..errors import ExecutionError, RunCancelled, RunTimedOut


class RunGuard:
    """Checked by the executor before every node and every forward pass, and told the bytes its values hold.

    `should_stop()` returning True cancels the run; `seconds` bounds its time from `start()`; `max_value_bytes`
    bounds the bytes of graph values held at once (constants, live values and saved copies, as the cost model counts
    them). `peak_bytes` is the most the run held. A session's blocks share one guard: its deadline runs from the
    first `start()`, and the values kept for later blocks (`carry`) count with each block's own.
    """

    def __init__(
        self,
        should_stop: Callable[[], bool] | None = None,
        seconds: float | None = None,
        max_value_bytes: int | None = None,
    ):
        self.should_stop = should_stop
        self.seconds = seconds
        self.max_value_bytes = max_value_bytes
        self.peak_bytes = 0
        self.carried_bytes = 0
        self._deadline: float | None = None

    def start(self) -> None:
        """The run begins: the deadline runs from the first call."""
        if self.seconds is not None and self._deadline is None:
            self._deadline = time.monotonic() + self.seconds

    def carry(self, carried_bytes: int) -> RunGuard:
        """Values held outside the run (an earlier block's, for a later one) take `carried_bytes` from now on."""
        self.carried_bytes = carried_bytes
        return self

    def check(self) -> None:
        """Raise RunCancelled or RunTimedOut when the run must stop now."""
        if self.should_stop is not None and self.should_stop():
            raise RunCancelled("the job was cancelled")
        if self._deadline is not None and time.monotonic() > self._deadline:
            raise RunTimedOut(
                f"the job ran past this server's limit of {self.seconds:g} s a job; run fewer new tokens, fewer "
                "prompts or a smaller graph"
            )

    def hold(self, held_bytes: int) -> None:
        """The values now take `held_bytes`; raise ExecutionError when that is over `max_value_bytes`."""
        held_bytes += self.carried_bytes
        if held_bytes > self.peak_bytes:
            self.peak_bytes = held_bytes
            if self.max_value_bytes is not None and held_bytes > self.max_value_bytes:
                raise ExecutionError(
                    f"the graph's values took {held_bytes / 1e6:.1f} MB, over the {self.max_value_bytes / 1e6:.1f} "
                    "MB this run may hold",
                    hint="Work on fewer positions or smaller values.",
                )

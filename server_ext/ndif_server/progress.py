"""How often a running job's step is passed on: a record write, or a message, per forward pass of a small model would
cost more than the pass."""

from __future__ import annotations

import math
import time

STEP_REPORT_SECONDS = 0.25


class Throttle:
    """Says a report is due the first time, then at most once every `seconds`."""

    def __init__(self, seconds: float = STEP_REPORT_SECONDS):
        self.seconds = seconds
        self.last = -math.inf

    def due(self) -> bool:
        now = time.monotonic()
        if now - self.last < self.seconds:
            return False
        self.last = now
        return True

"""Interleaved timing: contenders run in turn (A B C A B C ...) so that drift of the machine hits them alike."""

from __future__ import annotations

import gc
import statistics
import time
from collections.abc import Callable


def interleaved_medians(contenders: dict[str, Callable[[], object]], rounds: int, warmup: int) -> dict[str, float]:
    """Median seconds per call of each contender over `rounds` rounds, after `warmup` untimed rounds.

    Garbage collection is run before each round and disabled inside a call, so a collection started by one
    contender's garbage is not charged to the next.
    """
    times: dict[str, list[float]] = {name: [] for name in contenders}
    for round_index in range(warmup + rounds):
        for name, run in contenders.items():
            gc.collect()
            gc.disable()
            try:
                started = time.perf_counter()
                run()
                elapsed = time.perf_counter() - started
            finally:
                gc.enable()
            if round_index >= warmup:
                times[name].append(elapsed)
    return {name: statistics.median(values) for name, values in times.items()}

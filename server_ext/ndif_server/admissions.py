"""Admissions: requests checked on threads of their own, a bounded number at once, so checking never starves the API."""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor

from ndif_jupyter.loading.loaded import LoadedModel
from ndif_jupyter.protocol.admission import Admission, Refusal, admit
from ndif_jupyter.protocol.limits import Limits

PER_USER = 2
RETRY_SECONDS = 5
BUSY_RETRY_SECONDS = 1
"""The wait a request refused because others are being checked is told: checking takes milliseconds."""


class Admissions:
    """Runs `admit` on `threads` threads of its own; at most `most` requests (and PER_USER of one user) wait or are
    checked at once, and the rest are refused at once (429) instead of waiting behind them."""

    def __init__(self, threads: int, most: int):
        self._pool = ThreadPoolExecutor(max(1, threads), thread_name_prefix="ndif-admit")
        self.most = most
        self._busy: Counter[str] = Counter()

    async def admit(
        self,
        user: str,
        body: bytearray,
        served: Callable[[str], LoadedModel | None],
        limits: Limits,
        names: Sequence[str],
    ) -> Admission:
        """`admit(body, ...)` on the pool; Refusal 429 (with RETRY_SECONDS) when too many are being checked."""
        if sum(self._busy.values()) >= self.most or self._busy[user] >= PER_USER:
            raise Refusal(
                429,
                f"the server is checking {sum(self._busy.values())} other requests; try again in a second",
                retry_after=BUSY_RETRY_SECONDS,
            )
        self._busy[user] += 1
        try:
            loop = asyncio.get_running_loop()
            return await loop.run_in_executor(self._pool, admit, body, served, limits, names)
        finally:
            self._busy[user] -= 1
            if self._busy[user] <= 0:
                del self._busy[user]

    def shutdown(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)

"""The dependency scheduler of a run: which nodes may run now, and when a value is no longer needed.

Nodes run in recorded order among those whose inputs exist; a value is released when the last node reading it ran.
"""

from __future__ import annotations

import heapq

from ..ir.graph import Node, node_refs


class Scheduler:
    """Counts, per node, the inputs it still waits for and the readers that still need its value."""

    def __init__(self, nodes: list[Node]):
        count = len(nodes)
        self.reads = [node_refs(node) for node in nodes]
        self.waiting = [len(reads) for reads in self.reads]
        self.readers: list[list[int]] = [[] for _ in range(count)]
        for node_id, reads in enumerate(self.reads):
            for read in reads:
                self.readers[read].append(node_id)
        self.unread = [len(readers) for readers in self.readers]
        self.done = [False] * count
        self.remaining = count
        self._heap: list[int] = []

    def push(self, node_id: int) -> None:
        """`node_id` may run: it joins the nodes ready to run, in recorded order."""
        heapq.heappush(self._heap, node_id)

    def pop(self) -> int | None:
        """The earliest recorded node ready to run, or None when none is."""
        return heapq.heappop(self._heap) if self._heap else None

    def complete(self, node_id: int) -> tuple[list[int], list[int]]:
        """`node_id` has run: the nodes whose values nobody needs any more, and the readers now ready to run."""
        self.done[node_id] = True
        self.remaining -= 1
        released = []
        for read in self.reads[node_id]:
            self.unread[read] -= 1
            if self.unread[read] == 0:
                released.append(read)
        if self.unread[node_id] == 0:
            released.append(node_id)
        ready = []
        for reader in self.readers[node_id]:
            self.waiting[reader] -= 1
            if self.waiting[reader] == 0:
                ready.append(reader)
        return released, ready

    def first_blocker(self, node_id: int) -> int:
        """The earliest node that never ran among those `node_id` waits for, directly or not (itself if none)."""
        for read in self.reads[node_id]:
            if not self.done[read]:
                return self.first_blocker(read)
        return node_id

    def clear(self) -> None:
        self._heap.clear()

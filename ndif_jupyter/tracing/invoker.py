"""Invoker: one `invoke(...)` of a block, its prompts and the generation step its interventions apply to."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Literal

import torch

if TYPE_CHECKING:
    from .tracer import Tracer


class Invoker:
    """One `invoke(...)` of a block: its prompts, and the generation step its interventions apply to."""

    def __init__(self, tracer: Tracer, index: int, rows: list[list[int]]):
        self.tracer = tracer
        self.index = index
        self.rows = rows
        self.length = max(len(row) for row in rows)
        self.pads = [self.length - len(row) for row in rows]
        self.step = 0

    @property
    def forward_rows(self) -> int:
        """The rows this invoke fills in the forward passes: each prompt's beams or sampled sequences."""
        return len(self.rows) * self.tracer.row_copies

    @property
    def forward_pads(self) -> list[int]:
        """The left padding of each of those rows."""
        return [pad for pad in self.pads for _ in range(self.tracer.row_copies)]

    def next(self, count: int = 1) -> None:
        """Apply the interventions that follow to the next generated token (one more forward pass)."""
        __tracebackhide__ = True
        self.tracer.advance(self, count)

    def __enter__(self) -> Invoker:
        self.tracer.enter_invoke(self)
        return self

    def __exit__(self, *exc: Any) -> Literal[False]:
        self.tracer.exit_invoke(self)
        return False

    @property
    def output(self) -> torch.Tensor:
        """This invoke's rows of the generated ids, without the padding other invokes added."""
        ids = self.tracer.output
        sequences = self.tracer.sequences_per_prompt
        start = sum(len(invoker.rows) for invoker in self.tracer.invokes[: self.index]) * sequences
        width = ids.shape[1] - (self.tracer.batch_length - self.length)
        return ids[start : start + len(self.rows) * sequences, -width:]

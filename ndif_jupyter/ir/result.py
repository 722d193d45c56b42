"""ExecutionResult: what running a graph gives back, wherever it ran."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch


@dataclass
class ExecutionResult:
    """What a run gives back: saved values by node id (CPU tensors), the output ids of a generation, and timings.

    `missing` names the saved nodes that never ran and why (a generation that stopped before their step). `kept`
    holds, in a session, the values later blocks read, where the run left them (never sent: a session's blocks
    run in one place).
    """

    saved: dict[int, Any]
    output_ids: torch.Tensor | None
    missing: dict[int, str] = field(default_factory=dict)
    forward_calls: int = 0
    seconds: float = 0.0
    kept: dict[int, Any] = field(default_factory=dict)


@dataclass
class SessionResult:
    """What a session's run gives back: each block's result, in the session's order."""

    results: list[ExecutionResult]

    @property
    def forward_calls(self) -> int:
        return sum(result.forward_calls for result in self.results)

    @property
    def seconds(self) -> float:
        return sum(result.seconds for result in self.results)


RunResult = ExecutionResult | SessionResult
"""What running a request gives: a block's result, or a session's."""

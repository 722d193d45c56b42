"""ExecutionResult: what running a graph gives back, wherever it ran."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch


@dataclass
class ExecutionResult:
    """What a run gives back: saved values by node id (CPU tensors), the output ids of a generation, and timings.

    `missing` names the saved nodes that never ran and why (a generation that stopped before their step).
    """

    saved: dict[int, Any]
    output_ids: torch.Tensor | None
    missing: dict[int, str] = field(default_factory=dict)
    forward_calls: int = 0
    seconds: float = 0.0

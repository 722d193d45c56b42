"""What the shape oracle knows of one forward pass: every module's inputs and output as meta tensors, and when."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any


@dataclass
class ModuleRecord:
    """What one module received and returned at one step, as meta tensors, and when (its place in the call order)."""

    pre_event: int
    post_event: int = -1
    args: tuple = ()
    kwargs: dict = field(default_factory=dict)
    output: Any = None


@dataclass
class StepRecord:
    """Every module called in one forward pass, by dotted path."""

    modules: Mapping[str, ModuleRecord]
    """By path, in the order of their events (made on reading when the record is repeated from a layer's)."""

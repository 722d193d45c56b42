"""Reductions of hidden states to one number per (layer, token): norm, one neuron, cosine to a position, mean."""

from __future__ import annotations

from dataclasses import dataclass

import torch

REDUCTIONS = ("norm", "neuron", "cosine", "mean")
DIRECTION = "direction"


@dataclass(frozen=True)
class Reduction:
    """How a [layers, tokens, width] block becomes a [layers, tokens] grid.

    `neuron` is the unit shown by "neuron"; `reference` is the absolute token position "cosine" compares with;
    `direction` is the vector "direction" projects on (a unit vector of the width), named `direction_label`.
    """

    name: str = "norm"
    neuron: int = 0
    reference: int = 0
    direction: torch.Tensor | None = None
    direction_label: str = "direction"

    @property
    def diverging(self) -> bool:
        return self.name != "norm"

    def label(self) -> str:
        if self.name == "neuron":
            return f"neuron {self.neuron}"
        if self.name == "cosine":
            return f"cosine to token {self.reference}"
        if self.name == DIRECTION:
            return f"projection on {self.direction_label}"
        return {"norm": "L2 norm", "mean": "mean over the width"}[self.name]


def reduce(hidden: torch.Tensor, reduction: Reduction) -> torch.Tensor:
    """`hidden` [layers, tokens, width] reduced to [layers, tokens] in float32."""
    values = hidden.float()
    if reduction.name == "norm":
        return values.norm(dim=-1)
    if reduction.name == "neuron":
        if not 0 <= reduction.neuron < values.shape[-1]:
            raise ValueError(f"neuron {reduction.neuron} is outside the width {values.shape[-1]}")
        return values[..., reduction.neuron].clone()
    if reduction.name == "cosine":
        position = reduction.reference
        if not 0 <= position < values.shape[1]:
            raise ValueError(f"token {reduction.reference} is outside this step's tokens")
        return torch.nn.functional.cosine_similarity(values, values[:, position : position + 1], dim=-1)
    if reduction.name == "mean":
        return values.mean(dim=-1)
    if reduction.name == DIRECTION and reduction.direction is not None:
        return values @ reduction.direction.float()
    raise ValueError(f"unknown reduction {reduction.name!r}; choose one of {', '.join(REDUCTIONS)}")


def unit_direction(vector: torch.Tensor, width: int) -> torch.Tensor:
    """`vector` as a unit vector of `width` elements; raises ValueError for another size or a zero vector."""
    flat = vector.detach().reshape(-1).float().cpu()
    if flat.numel() != width:
        raise ValueError(f"a direction needs {width} elements (the hidden width), and this one has {flat.numel()}")
    norm = flat.norm()
    if norm == 0:
        raise ValueError("a direction cannot be the zero vector")
    return flat / norm


def plain_values(grid: torch.Tensor) -> list[float | None]:
    """A grid as a flat row-major list of floats, with None for values that are not finite (JSON has no NaN)."""
    flat = grid.reshape(-1).tolist()
    return [value if value == value and abs(value) != float("inf") else None for value in flat]

"""Colour scales of the browser's grids: a robust range, linear or log, and the values that fall outside it."""

from __future__ import annotations

from typing import Any

import torch

SCALES = ("linear", "log")
ROBUST_MINIMUM = 4
"""Below this many finite values a grid's range is its extremes: too few values to tell an outlier."""


def value_range(grid: torch.Tensor, diverging: bool) -> tuple[float, float]:
    """The colour scale's ends: the finite values' range, symmetric around zero when `diverging`.

    A few extreme values (the first token's huge norm in many models) would flatten everything else into one colour,
    so the scale stops at three interquartile ranges beyond the middle half of the values; values outside it show in
    the end colours, marked as outside, and their numbers are unchanged.
    """
    finite = grid[torch.isfinite(grid)].double()
    if finite.numel() == 0:
        return (0.0, 0.0)
    low, high = finite.min().item(), finite.max().item()
    if finite.numel() >= ROBUST_MINIMUM:
        lower, upper = torch.quantile(finite, torch.tensor([0.25, 0.75], dtype=finite.dtype)).tolist()
        spread = upper - lower
        low, high = max(low, lower - 3 * spread), min(high, upper + 3 * spread)
    if diverging:
        bound = max(abs(low), abs(high))
        return (-bound, bound)
    return (low, high)


def colour_scale(
    grid: torch.Tensor, diverging: bool, log: bool, left_out: torch.Tensor | None = None
) -> dict[str, Any]:
    """The scale of a [rows, cols] grid as the front end and the static picture draw it.

    `log` spaces the colours by powers of ten over the whole range of the positive values, so that nothing is cut
    (only for a grid that is not diverging: a log scale has no zero);
    `left_out` is a boolean mask of cells the range is computed without (the first token, whose norm dwarfs the
    rest in many models). Every cell is still drawn; those beyond the ends are counted in `below` and `above` so
    that the front end marks them, and `data_min`/`data_max` say how far the values reach.
    """
    log = log and not diverging
    finite = torch.isfinite(grid)
    counted = finite if left_out is None else finite & ~left_out
    if not counted.any():
        counted = finite
    if log:
        positive = grid[counted & (grid > 0)].double()
        low, high = (positive.min().item(), positive.max().item()) if positive.numel() else (1.0, 1.0)
    else:
        low, high = value_range(grid[counted], diverging)
    values = grid[finite].double()
    return {
        "min": low,
        "max": high,
        "scale": "log" if log else "linear",
        "data_min": values.min().item() if values.numel() else None,
        "data_max": values.max().item() if values.numel() else None,
        "below": int((values < low).sum().item()) if values.numel() else 0,
        "above": int((values > high).sum().item()) if values.numel() else 0,
    }


def first_token_mask(rows: int, cols: int, window_start: int) -> torch.Tensor | None:
    """The cells of token 0 in a window of `cols` tokens from `window_start`, or None when token 0 is not shown."""
    if window_start != 0 or cols == 0:
        return None
    mask = torch.zeros(rows, cols, dtype=torch.bool)
    mask[:, 0] = True
    return mask

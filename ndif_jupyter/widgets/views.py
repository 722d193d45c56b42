"""The state of each view, computed in the kernel from a catalog and the user's selection, bounded in size.

Every function returns plain JSON-ready values: what the browser's front end receives, and what its static picture
draws. Nothing here sends a tensor whole: grids are windows of at most `Bounds.cells` values, attention at most
`Bounds.attention` values.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from ..tracing.module_values import display_path
from .attention import AttentionSource, bounded_patterns
from .catalog import Catalog, SavedEntry
from .lens import LensResult
from .reductions import Reduction, plain_values, reduce
from .scales import colour_scale, first_token_mask
from .stacks import JOINED, LayerStack


@dataclass(frozen=True)
class Bounds:
    """How much one view may send: grid cells (layers x tokens), tokens per window, attention values in all, and
    tokens of the logit lens (the first `lens_tokens` of the window: each costs a projection onto the vocabulary
    at every layer)."""

    cells: int = 8192
    tokens: int = 256
    attention: int = 32768
    lens_tokens: int = 64

    def window_size(self, layers: int, total: int) -> int:
        return max(1, min(total, self.tokens, self.cells // max(1, layers)))


@dataclass(frozen=True)
class Shown:
    """The selection a browser shows, with every choice brought into range: stack index, step, row, token window."""

    stack: int
    step: int
    row: int
    window: Window


@dataclass(frozen=True)
class Window:
    """The token positions shown: `count` of the step's `total`, from `start`."""

    start: int
    count: int
    total: int

    @classmethod
    def clamped(cls, start: int, count: int, total: int) -> Window:
        return cls(max(0, min(start, total - count)), count, total)

    def as_dict(self) -> dict[str, int]:
        return {"start": self.start, "count": self.count, "total": self.total}


HOW_TO_GET = {
    "heatmap": "save the same value of two or more numbered layers (`[layer.output.save() for layer in "
    "model.model.layers]`), or of one layer at several steps (after `next()`)",
    "lens": "needs the model of the run (`browse(values, model=model)` for plain tensors)",
    "attention": 'save attention weights: `self_attn.output[1]` of a model loaded with `attn_implementation="eager"`',
}


def absent_views(views: list[str]) -> dict[str, str]:
    """The views these values do not have, each with what would give it."""
    absent = {name: how for name, how in HOW_TO_GET.items() if name not in views}
    if "heatmap" in absent:
        absent.pop("lens")
    return absent


def overview_rows(entries: list[SavedEntry]) -> list[dict[str, Any]]:
    """One row per saved tensor: name, origin, shape, dtype, and summary statistics of its values."""
    rows = []
    for entry in entries:
        value = entry.value
        stats: dict[str, float | None] = {"mean": None, "std": None, "min": None, "max": None, "norm": None}
        if value.numel() and not value.is_complex():
            numbers = value.detach().double()
            stats = {
                "mean": numbers.mean().item(),
                "std": numbers.std().item() if numbers.numel() > 1 else 0.0,
                "min": numbers.min().item(),
                "max": numbers.max().item(),
                "norm": numbers.norm().item(),
            }
        module = None
        if entry.origin.module is not None:
            module = f"{display_path(entry.origin.module)}.{entry.origin.event}{entry.origin.selection}"
        rows.append(
            {
                "name": entry.name,
                "module": module,
                "step": entry.origin.step,
                "invoke": entry.origin.invoke,
                "shape": list(value.shape),
                "dtype": str(value.dtype).replace("torch.", ""),
                **{key: _finite(number) for key, number in stats.items()},
            }
        )
    return rows


def stack_window(stack: LayerStack, step: int, start: int, bounds: Bounds) -> Window:
    total = stack.tokens(step)
    return Window.clamped(start, bounds.window_size(len(stack.layer_labels), total), total)


def stack_tokens(catalog: Catalog, stack: LayerStack, step: int, row: int, window: Window) -> list[str]:
    """The window's token strings for one row of a stack at one step (the joined steps end at the last step)."""
    if step == JOINED:
        step = max(stack.steps)
    return catalog.position_texts(stack.invoke, row, step, window.total, window.count, window.start)


@dataclass(frozen=True)
class Colouring:
    """How the heatmap and the strip colour values: `log` spaces the colours by powers of ten (for a reduction that
    is not diverging), and `leave_out_first` computes the range without token 0, which is still drawn."""

    log: bool = False
    leave_out_first: bool = False


def grid_state(
    stack: LayerStack, step: int, row: int, reduction: Reduction, window: Window, colouring: Colouring = Colouring()
) -> dict[str, Any]:
    """The layer x token heatmap: the reduction of every layer at the window's tokens, row-major, and its scale."""
    grid = reduce(stack.at(step, row), reduction)[:, window.start : window.start + window.count]
    return {
        "rows": grid.shape[0],
        "cols": grid.shape[1],
        "values": plain_values(grid),
        "diverging": reduction.diverging,
        "label": reduction.label(),
        **_scale_of(grid, reduction.diverging, colouring, window.start),
    }


def strip_state(
    grid: dict[str, Any], layer: int, layer_labels: list[str], window_start: int, colouring: Colouring = Colouring()
) -> dict[str, Any]:
    """The token strip: one layer's row of the heatmap, coloured on that row's own scale."""
    cols = grid["cols"]
    layer = max(0, min(layer, grid["rows"] - 1))
    layer_label = layer_labels[layer]
    values = grid["values"][layer * cols : (layer + 1) * cols]
    return {
        "layer": layer,
        "label": f"layer {layer_label}: {grid['label']}",
        "values": values,
        "diverging": grid["diverging"],
        **_scale_of(as_float_tensor(values, 1, len(values)), grid["diverging"], colouring, window_start),
    }


def _scale_of(grid: torch.Tensor, diverging: bool, colouring: Colouring, window_start: int) -> dict[str, Any]:
    rows, cols = grid.shape
    left_out = first_token_mask(rows, cols, window_start) if colouring.leave_out_first else None
    return {**colour_scale(grid, diverging, colouring.log, left_out), "left_out_first": left_out is not None}


def cell_detail_state(
    stack: LayerStack, step: int, row: int, grid: dict[str, Any], window: Window, layer: int, token: int, neurons: int
) -> dict[str, Any]:
    """A clicked heatmap cell: its value in `grid` (the heatmap shown, over `window`), the norm of its hidden state
    and its `neurons` largest units by magnitude (`token` is an absolute position of the step)."""
    hidden = stack.at(step, row)
    if not (0 <= layer < hidden.shape[0] and 0 <= token < hidden.shape[1]):
        return {}
    vector = hidden[layer, token].float()
    largest = vector.abs().topk(min(neurons, vector.numel())).indices.tolist()
    column = token - window.start
    shown = 0 <= column < grid["cols"] and layer < grid["rows"]
    return {
        "layer": layer,
        "token": token,
        "value": grid["values"][layer * grid["cols"] + column] if shown else None,
        "norm": _finite(vector.norm().item()),
        "neurons": [{"index": index, "value": _finite(vector[index].item())} for index in largest],
    }


def lens_state(result: LensResult, tokenizer: Any) -> dict[str, Any]:
    """The logit-lens grid: the top token and its probability at every (layer, token) of the window."""
    layers, tokens, _ = result.ids.shape
    top_ids = result.ids[..., 0].reshape(-1).tolist()
    return {
        "status": "ready",
        "rows": layers,
        "cols": tokens,
        "top_tokens": [tokenizer.decode([token]) for token in top_ids],
        "top_probs": [round(value, 6) for value in result.probs[..., 0].reshape(-1).tolist()],
    }


def lens_cell_state(result: LensResult, tokenizer: Any, layer: int, token: int, window: Window) -> dict[str, Any]:
    """The top-k list of one clicked cell (`token` is an absolute position inside the window)."""
    column = token - window.start
    if not (0 <= layer < result.ids.shape[0] and 0 <= column < result.ids.shape[1]):
        return {}
    ids = result.ids[layer, column].tolist()
    probs = result.probs[layer, column].tolist()
    return {
        "layer": layer,
        "token": token,
        "top": [{"token": tokenizer.decode([token_id]), "prob": round(prob, 6)} for token_id, prob in zip(ids, probs)],
    }


def attention_state(
    catalog: Catalog, source: AttentionSource, step: int, row: int, start: int, bounds: Bounds
) -> dict[str, Any]:
    """The head grid: every head's pattern over a window of query and key tokens, within `bounds.attention` values."""
    if step not in source.steps:
        step = min(source.steps)
    weights = source.steps[step][min(row, source.rows - 1)].float()
    patterns, query_start, key_start = bounded_patterns(weights, start, bounds.attention)
    heads, queries, keys = patterns.shape
    total_keys = weights.shape[-1]
    key_tokens = catalog.position_texts(source.invoke, row, step, total_keys, keys, key_start)
    query_offset = total_keys - weights.shape[1]
    query_tokens = catalog.position_texts(source.invoke, row, step, total_keys, queries, query_offset + query_start)
    return {
        "status": "ready",
        "heads": heads,
        "q": queries,
        "k": keys,
        "step": step,
        "query_tokens": query_tokens,
        "key_tokens": key_tokens,
        "patterns": [plain_values(pattern) for pattern in patterns],
    }


def _finite(number: float | None) -> float | None:
    if number is None or number != number or abs(number) == float("inf"):
        return None
    return number


def empty_grid(message: str) -> dict[str, Any]:
    return {
        "rows": 0,
        "cols": 0,
        "values": [],
        "diverging": False,
        "label": message,
        **_scale_of(torch.zeros(0, 0), False, Colouring(), 0),
    }


def stack_choice(stacks: list[LayerStack], index: int) -> LayerStack | None:
    if not stacks:
        return None
    return stacks[max(0, min(index, len(stacks) - 1))]


def step_choice(steps: list[int], step: int) -> int:
    return step if step in steps else steps[0]


def step_text(step: int) -> str:
    return "all steps" if step == JOINED else f"step {step}"


def as_float_tensor(values: list[float | None], rows: int, cols: int) -> torch.Tensor:
    """A grid's values back as a [rows, cols] tensor, NaN for None (for the static pictures)."""
    return torch.tensor([float("nan") if value is None else value for value in values]).reshape(rows, cols)

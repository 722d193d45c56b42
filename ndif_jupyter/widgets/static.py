"""Static pictures and text of the browser's current view, for notebooks opened without a kernel (GitHub, nbviewer).

Pictures are drawn with matplotlib as raster images and text placed in pixels, without axes: a `%%ndif` cell
renders one each time it shows a browser, and axes (ticks, layout) would cost several times more. Text is what
costs most, so labels are few. `ActivationBrowser.static_picture = False` leaves the picture out.
"""

from __future__ import annotations

import io
from typing import TYPE_CHECKING, Any

import matplotlib
import numpy as np
from matplotlib import colormaps
from matplotlib.colors import LogNorm, Normalize
from matplotlib.figure import Figure

from .views import as_float_tensor, step_text

if TYPE_CHECKING:
    from .widget import ActivationBrowser

DPI = 96
FONT_SIZE = 7
_MAX_LABELS = 64
_MAX_ANNOTATED_CELLS = 300
_MAX_OVERVIEW_ROWS = 40
_NAN_COLOUR = (0.6, 0.6, 0.6, 1.0)


def render_png(browser: ActivationBrowser) -> bytes:
    """A PNG of the browser's current view, drawn from the same traits the front end receives."""
    draw = {"heatmap": _heatmap, "lens": _lens, "attention": _attention, "strip": _strip}.get(browser.view, _overview)
    return draw(browser).png()


def render_text(browser: ActivationBrowser) -> str:
    """The headline, the prompts and one line per saved value: the widget's text/plain form."""
    lines = [browser.title] if browser.title else []
    for index, text in enumerate(browser.texts):
        lines.append(
            f"  [{index}] {text['prompt']!r} -> {text['generated']!r}"
            if text["generated"]
            else f"  [{index}] {text['prompt']!r}"
        )
    for row in browser.overview:
        where = f" at {row['module']}" if row["module"] else ""
        step = f" step {row['step']}" if row["step"] else ""
        norm = f"  norm {row['norm']:.4g}" if row["norm"] is not None else ""
        lines.append(f"  {row['name']}: {row['shape']} {row['dtype']}{where}{step}{norm}")
    if browser.views != ["overview"]:
        lines.append("views: " + ", ".join(browser.views) + " (interactive where widgets run)")
    for absent in browser.absent_views:
        lines.append(f"no {absent['view']} view: {absent['how']}")
    return "\n".join(lines)


class _Picture:
    """A picture laid out in pixels from the top-left corner: raster blocks and text, saved as one PNG."""

    def __init__(self, width: int, height: int):
        self.width, self.height = width, height
        self.figure = Figure(figsize=(width / DPI, height / DPI), dpi=DPI)
        self.figure.patch.set_facecolor("white")

    def image(self, rgba: np.ndarray, x: int, y: int) -> None:
        self.figure.figimage(rgba, xo=x, yo=self.height - y - rgba.shape[0], origin="upper")

    def text(self, x: float, y: float, text: str, **style: Any) -> None:
        style.setdefault("fontsize", FONT_SIZE)
        self.figure.text(x / self.width, 1 - y / self.height, text, **style)

    def png(self) -> bytes:
        buffer = io.BytesIO()
        with matplotlib.rc_context({"text.hinting": "no_hinting"}):
            self.figure.savefig(buffer, format="png", dpi=DPI)
        return buffer.getvalue()


def cell_raster(
    values: np.ndarray,
    cmap: str,
    low: float,
    high: float,
    cell_w: int,
    cell_h: int,
    flip: bool = True,
    log: bool = False,
    mark_outside: bool = False,
) -> np.ndarray:
    """A [rows, cols] grid as an RGBA raster of cells (first row at the bottom when `flip`).

    With `mark_outside`, a cell beyond the scale gets the front end's corner: top right above, bottom left below.
    """
    scale = colormaps[cmap].with_extremes(bad=_NAN_COLOUR)
    high = high if high > low else low + 1e-12
    if log and low > 0:
        normed = LogNorm(low, high, clip=True)(np.ma.masked_invalid(np.where(values > 0, values, low)))
    else:
        normed = Normalize(low, high, clip=True)(np.ma.masked_invalid(values))
    rgba = (scale(normed) * 255).astype(np.uint8)
    if flip:
        rgba, values = rgba[::-1], values[::-1]
    cells = np.repeat(np.repeat(rgba, cell_h, axis=0), cell_w, axis=1)
    if mark_outside and min(cell_w, cell_h) >= 3:
        with np.errstate(invalid="ignore"):
            _mark_outside(cells, values > high, values < low, cell_w, cell_h)
    return cells


def _mark_outside(cells: np.ndarray, above: np.ndarray, below: np.ndarray, cell_w: int, cell_h: int) -> None:
    """Stamps a white corner with a dark edge into each cell beyond the scale: top right above, bottom left below."""
    size = max(3, min(cell_w, cell_h) // 2)
    rows, columns = np.indices((size, size))
    for mask, inside, edge, corner_row, corner_column in (
        (above, columns >= rows, columns == rows, 0, cell_w - size),
        (below, rows >= columns, rows == columns, cell_h - size, 0),
    ):
        for row, column in zip(*np.nonzero(mask)):
            top, left = row * cell_h + corner_row, column * cell_w + corner_column
            block = cells[top : top + size, left : left + size]
            block[inside] = (255, 255, 255, 255)
            block[edge] = (0, 0, 0, 255)


def _colour_bar(picture: _Picture, cmap: str, scale: dict[str, Any], label: str, x: int, y: int, height: int) -> None:
    low, high, log = scale["min"], scale["max"], scale.get("scale") == "log" and scale["min"] > 0
    ramp = np.geomspace(high, low, height) if log else np.linspace(high, low, height)
    picture.image(cell_raster(ramp.reshape(height, 1).repeat(10, axis=1), cmap, low, high, 1, 1, False, log), x, y)
    picture.text(x + 14, y, f"{high:.4g}" + (" ◥" if scale.get("above") else ""), va="top")
    picture.text(x + 14, y + height, f"{low:.4g}" + (" ◣" if scale.get("below") else ""), va="bottom")
    picture.text(x + 14, y + height / 2, label + (" (log)" if log else ""), va="center", rotation=90)


def outside_text(scale: dict[str, Any]) -> str:
    """What lies beyond a scale's ends, as the front end's legend says it."""
    parts = []
    if scale.get("above"):
        parts.append(f"◥ {_count(scale['above'])} above {scale['max']:.4g}, up to {scale['data_max']:.4g}")
    if scale.get("below"):
        parts.append(f"◣ {_count(scale['below'])} below {scale['min']:.4g}, down to {scale['data_min']:.4g}")
    if scale.get("left_out_first"):
        parts.append("range without token 0")
    return " · ".join(parts)


def _count(count: int) -> str:
    return "1 value" if count == 1 else f"{count} values"


def _layer_grid(
    title: str,
    values: np.ndarray,
    cmap: str,
    scale: dict[str, Any],
    tokens: list[str],
    layer_labels: list[str],
    bar_label: str,
    annotations: list[str] | None = None,
    probabilities: np.ndarray | None = None,
    first_position: int = 0,
) -> _Picture:
    """A layer x token grid (last layer on top) with token labels below, layer labels left and a colour bar.

    A long window labels every few tokens (at most `_MAX_LABELS`), with their positions from `first_position`.
    """
    rows, cols = values.shape
    cell_w = max(6, min(44 if annotations else 28, 900 // max(1, cols)))
    cell_h = max(4, min(16, 480 // max(1, rows)))
    left, top = 40, 24
    label_room = 8 + 6 * min(12, max((len(token) for token in tokens), default=1))
    outside = outside_text(scale)
    width, height = left + cols * cell_w + 110, top + rows * cell_h + label_room + (22 if outside else 8)
    picture = _Picture(max(width, 7 * len(outside) + 16), height)
    picture.text(4, 4, title, fontsize=8, va="top")
    log = scale.get("scale") == "log"
    picture.image(cell_raster(values, cmap, scale["min"], scale["max"], cell_w, cell_h, True, log, True), left, top)
    stride = -(-cols // _MAX_LABELS)
    for column in range(0, min(cols, len(tokens)), stride):
        text = _shown(tokens[column])[:12] if stride == 1 else f"{first_position + column}:{_shown(tokens[column])[:8]}"
        picture.text(
            left + column * cell_w + cell_w / 2, top + rows * cell_h + 4, text, rotation=90, ha="center", va="top"
        )
    if outside:
        picture.text(4, height - 4, outside, va="bottom")
    for row in range(0, rows, max(1, rows // 8)):
        picture.text(left - 4, top + (rows - row - 0.5) * cell_h, layer_labels[row], ha="right", va="center")
    if annotations is not None:
        for row in range(rows):
            for column in range(cols):
                dark = probabilities is not None and probabilities[row, column] > 0.6
                picture.text(
                    left + (column + 0.5) * cell_w,
                    top + (rows - row - 0.5) * cell_h,
                    _shown(annotations[row * cols + column])[:6],
                    ha="center",
                    va="center",
                    fontsize=6,
                    color="white" if dark else "black",
                )
    _colour_bar(picture, cmap, scale, bar_label, left + cols * cell_w + 14, top, max(60, min(rows * cell_h, 240)))
    return picture


def _overview(browser: ActivationBrowser) -> _Picture:
    lines = render_text(browser).splitlines()
    shown = lines[:_MAX_OVERVIEW_ROWS] + (
        [f"... {len(lines) - _MAX_OVERVIEW_ROWS} more"] if len(lines) > _MAX_OVERVIEW_ROWS else []
    )
    picture = _Picture(max(300, 7 * max(len(line) for line in shown) + 16), 12 * len(shown) + 16)
    picture.text(8, 8, "\n".join(shown), va="top", family="monospace", linespacing=1.25)
    return picture


def _heatmap(browser: ActivationBrowser) -> _Picture:
    grid = browser.grid
    if not grid.get("rows"):
        return _message(grid.get("label", "Nothing to show."))
    values = as_float_tensor(grid["values"], grid["rows"], grid["cols"]).numpy()
    return _layer_grid(
        _stack_title(browser),
        values,
        "RdBu_r" if grid["diverging"] else "viridis",
        grid,
        browser.tokens,
        browser.layer_labels,
        grid["label"],
        first_position=browser.window.get("start", 0),
    )


def _lens(browser: ActivationBrowser) -> _Picture:
    lens = browser.lens
    if lens.get("status") != "ready":
        return _message(f"Logit lens: {lens.get('status', 'not computed')}")
    rows, cols = lens["rows"], lens["cols"]
    probabilities = as_float_tensor(lens["top_probs"], rows, cols).numpy()
    annotations = lens["top_tokens"] if rows * cols <= _MAX_ANNOTATED_CELLS else None
    return _layer_grid(
        "Logit lens: " + _stack_title(browser),
        probabilities,
        "Blues",
        {"min": 0.0, "max": 1.0},
        browser.tokens[:cols],
        browser.layer_labels,
        "probability of the top token",
        annotations,
        probabilities,
    )


def _attention(browser: ActivationBrowser) -> _Picture:
    attention = browser.attention
    heads = attention.get("heads", 0)
    if not heads:
        return _message("No attention weights were saved.")
    queries, keys = attention["q"], attention["k"]
    cell = max(1, min(12, 160 // max(queries, keys)))
    size_w, size_h = keys * cell, queries * cell
    columns = min(heads, 4)
    lines = -(-heads // columns)
    picture = _Picture(max(320, columns * (size_w + 16) + 16), 24 + lines * (size_h + 22))
    source = browser.attention_sources[max(0, min(browser.attention_source, len(browser.attention_sources) - 1))]
    picture.text(4, 4, f"{source['label']} (step {attention['step']})", fontsize=8, va="top")
    for head, pattern in enumerate(attention["patterns"]):
        values = as_float_tensor(pattern, queries, keys).numpy()
        x = 8 + (head % columns) * (size_w + 16)
        y = 24 + (head // columns) * (size_h + 22)
        picture.text(x, y, f"head {head}", va="top")
        high = float(np.nanmax(values)) if np.isfinite(values).any() else 1.0
        picture.image(cell_raster(values, "Blues", 0.0, max(high, 1e-6), cell, cell, flip=False), x, y + 14)
    return picture


def _strip(browser: ActivationBrowser) -> _Picture:
    strip = browser.strip
    values = strip.get("values") or []
    if not values:
        return _message("No per-layer hidden states were saved.")
    count = len(values)
    cell_w = max(6, min(48, 900 // count))
    grid = as_float_tensor(values, 1, count).numpy()
    cmap = "RdBu_r" if strip["diverging"] else "viridis"
    outside = outside_text(strip)
    picture = _Picture(max(40 + count * cell_w + 110, 7 * len(outside) + 16), 24 + 30 + (24 if outside else 8))
    picture.text(4, 4, strip["label"], fontsize=8, va="top")
    log = strip.get("scale") == "log"
    picture.image(cell_raster(grid, cmap, strip["min"], strip["max"], cell_w, 30, False, log, True), 20, 24)
    if outside:
        picture.text(4, 24 + 30 + 20, outside, va="bottom")
    if count <= _MAX_LABELS:
        for column, token in enumerate(browser.tokens):
            picture.text(
                20 + (column + 0.5) * cell_w,
                39,
                _shown(token)[: max(1, cell_w // 6)],
                ha="center",
                va="center",
                fontsize=6,
            )
    _colour_bar(picture, cmap, strip, "", 20 + count * cell_w + 14, 24, 30)
    return picture


def _stack_title(browser: ActivationBrowser) -> str:
    if not browser.stacks:
        return ""
    stack = browser.stacks[max(0, min(browser.stack, len(browser.stacks) - 1))]
    window = browser.window
    shown = (
        f", tokens {window['start']}-{window['start'] + window['count'] - 1} of {window['total']}"
        if window.get("count", 0) < window.get("total", 0)
        else ""
    )
    return f"{stack['label']} ({step_text(browser.step)}, row {browser.row}{shown})"


def _message(text: str) -> _Picture:
    picture = _Picture(max(300, 7 * len(text) + 16), 40)
    picture.text(8, 20, text, va="center", fontsize=9)
    return picture


def _shown(token: str) -> str:
    """A token as a label, as the front end writes it: a leading space a quiet dot (a token of spaces only each as
    ␣), newlines visible, other control characters as escapes (no font draws them)."""
    if token and token.strip(" ") == "":
        return "␣" * len(token)
    token = token.replace("\n", "⏎")
    token = "·" + token[1:] if token.startswith(" ") else token
    return "".join(char if char.isprintable() else repr(char)[1:-1] for char in token)

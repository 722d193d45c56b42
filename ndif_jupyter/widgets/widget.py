"""ActivationBrowser: the anywidget that shows a run's saved values; its traits are what the front end receives."""

from __future__ import annotations

import base64
import pathlib
from typing import TYPE_CHECKING, Any

import anywidget
import torch
import traitlets

from ..errors import NDIFError, first_line
from .attention import find_attention
from .catalog import Catalog
from .lens import LensResult, logit_lens, unembedding_paths
from .reductions import DIRECTION, REDUCTIONS, Reduction, unit_direction
from .scales import SCALES
from .stacks import JOINED, LayerStack, find_stacks
from .views import (
    Bounds,
    Colouring,
    Shown,
    Window,
    absent_views,
    attention_state,
    cell_detail_state,
    empty_grid,
    grid_state,
    lens_cell_state,
    lens_state,
    overview_rows,
    stack_choice,
    stack_tokens,
    stack_window,
    step_choice,
    strip_state,
)

STATIC = pathlib.Path(__file__).parent / "static"
LENS_TOP_K = 10
PICTURE_METADATA = "ndif-jupyter"
"""The output metadata key that marks a browser's output as carrying its picture, for the JupyterLab extension to
show when the widget's model is gone (a notebook reopened after its kernel stopped)."""
DETAIL_NEURONS = 8
DETAIL_LENS_TOKENS = 5

if TYPE_CHECKING:
    from ..model import Model


class ActivationBrowser(anywidget.AnyWidget):
    """Saved hidden states as interactive views: overview, layer x token heatmap, logit lens, attention, token strip.

    Everything is reduced in the kernel; the front end receives only the traits below, each bounded by `bounds`.
    Traits marked (front end) are the user's choices; changing them, from the browser or from Python, recomputes the
    others. Saved in a notebook, the widget's output also holds a PNG of its view and a text summary.
    """

    static_picture = True
    """Whether the notebook output also holds a PNG of the view (for GitHub and nbviewer); drawing it takes ~0.1 s."""

    _esm = STATIC / "browser.js"
    _css = STATIC / "browser.css"

    title = traitlets.Unicode("").tag(sync=True)
    texts: traitlets.List[Any] = traitlets.List().tag(sync=True)
    views: traitlets.List[Any] = traitlets.List().tag(sync=True)
    absent_views: traitlets.List[Any] = traitlets.List().tag(sync=True)
    overview: traitlets.List[Any] = traitlets.List().tag(sync=True)
    stacks: traitlets.List[Any] = traitlets.List().tag(sync=True)
    reductions = traitlets.List(list(REDUCTIONS)).tag(sync=True)
    scales = traitlets.List(list(SCALES)).tag(sync=True)
    window = traitlets.Dict().tag(sync=True)
    tokens: traitlets.List[Any] = traitlets.List().tag(sync=True)
    layer_labels: traitlets.List[Any] = traitlets.List().tag(sync=True)
    grid = traitlets.Dict().tag(sync=True)
    lens = traitlets.Dict().tag(sync=True)
    lens_cell = traitlets.Dict().tag(sync=True)
    cell_detail = traitlets.Dict().tag(sync=True)
    strip = traitlets.Dict().tag(sync=True)
    attention_sources: traitlets.List[Any] = traitlets.List().tag(sync=True)
    attention = traitlets.Dict().tag(sync=True)

    # (front end)
    view = traitlets.Unicode("overview").tag(sync=True)
    stack = traitlets.Int(0).tag(sync=True)
    step = traitlets.Int(0).tag(sync=True)
    row = traitlets.Int(0).tag(sync=True)
    reduction = traitlets.Unicode("norm").tag(sync=True)
    neuron = traitlets.Int(0).tag(sync=True)
    reference = traitlets.Int(0).tag(sync=True)
    scale = traitlets.Unicode("linear").tag(sync=True)
    leave_out_first = traitlets.Bool(False).tag(sync=True)
    token_start = traitlets.Int(0).tag(sync=True)
    selected: traitlets.List[Any] = traitlets.List().tag(sync=True)
    strip_layer = traitlets.Int(0).tag(sync=True)
    attention_source = traitlets.Int(0).tag(sync=True)
    head = traitlets.Int(0).tag(sync=True)
    lens_probabilities = traitlets.Bool(False).tag(sync=True)
    settled = traitlets.Int(0).tag(sync=True)
    """(front end) Counts the times the user left the widget after changing it: the saved picture then follows."""

    def __init__(self, catalog: Catalog, view: str | None = None, bounds: Bounds | None = None, **kwargs: Any):
        super().__init__(**kwargs)
        self.catalog = catalog
        self.bounds = bounds or Bounds()
        self._stacks = find_stacks(catalog.entries)
        self._attention = find_attention(catalog.entries)
        self._lens_cache: dict[tuple, LensResult | str] = {}
        self._shown: Shown | None = None
        self._direction: tuple[torch.Tensor, str] | None = None
        self._displays: list[Any] = []
        self._picture: str | None = None
        self._ready = False
        with self.hold_trait_notifications():
            self.title = catalog.title
            self.texts = [{"prompt": prompt, "generated": new} for prompt, new in catalog.texts]
            self.overview = overview_rows(catalog.entries)
            self.stacks = [
                {
                    "label": stack.label,
                    "layers": len(stack.layer_labels),
                    "steps": _step_order(stack),
                    "rows": stack.rows,
                    "width": stack.width,
                }
                for stack in self._stacks
            ]
            self.attention_sources = [{"label": source.label, "heads": source.heads} for source in self._attention]
            self.views = self._available_views()
            self.absent_views = [{"view": name, "how": how} for name, how in absent_views(self.views).items()]
            if view is not None and view not in self.views:
                raise NDIFError(f"These values have no {view!r} view; they have {', '.join(self.views)}.")
            self.view = view or self.views[min(1, len(self.views) - 1)]
            if self._stacks:
                self.step = JOINED if JOINED in self._stacks[0].steps else min(self._stacks[0].steps)
                self.strip_layer = len(self._stacks[0].layer_labels) - 1
        self._ready = True
        self._refresh()

    # ----- what can be shown -----
    def _available_views(self) -> list[str]:
        views = ["overview"]
        if self._stacks:
            views.append("heatmap")
            if self._lens_possible():
                views.append("lens")
        if self._attention:
            views.append("attention")
        if self._stacks:
            views.append("strip")
        return views

    def _lens_possible(self) -> bool:
        model = self.catalog.model
        if model is None:
            return False
        try:
            unembedding_paths(model)
        except NDIFError:
            return False
        return True

    # ----- recomputing from the selection -----
    @traitlets.observe(
        "stack",
        "step",
        "row",
        "reduction",
        "neuron",
        "reference",
        "token_start",
        "strip_layer",
        "scale",
        "leave_out_first",
    )
    def _on_selection(self, change: dict[str, Any]) -> None:
        if self._ready:
            self._refresh()

    @traitlets.observe("view", "selected", "attention_source")
    def _on_view(self, change: dict[str, Any]) -> None:
        if not self._ready:
            return
        self._refresh_lens()
        self._refresh_attention()
        self._refresh_cell_detail()

    def _refresh(self) -> None:
        self._refresh_stack()
        self._refresh_cell_detail()
        self._refresh_lens()
        self._refresh_attention()

    def _refresh_stack(self) -> None:
        if not self._stacks:
            self.grid = empty_grid("no per-layer hidden states were saved")
            self.strip = {}
            return
        index = max(0, min(self.stack, len(self._stacks) - 1))
        stack = self._stacks[index]
        step = step_choice(sorted(stack.steps), self.step)
        row = max(0, min(self.row, stack.rows - 1))
        window = stack_window(stack, step, self.token_start, self.bounds)
        reduction = self._reduction(stack, window)
        with self.hold_sync():
            self._shown = Shown(index, step, row, window)
            self.window = window.as_dict()
            self.layer_labels = stack.layer_labels
            self.tokens = stack_tokens(self.catalog, stack, step, row, window)
            colouring = Colouring(log=self.scale == "log", leave_out_first=self.leave_out_first)
            self.grid = grid_state(stack, step, row, reduction, window, colouring)
            self.strip = strip_state(self.grid, self.strip_layer, stack.layer_labels, window.start, colouring)

    def set_direction(self, vector: torch.Tensor, label: str = "direction") -> None:
        """Colour the views by the projection of each hidden state on `vector` (a probe, a difference of means...).

        Adds the reduction "direction" and selects it; `label` names it on the colour scale.
        """
        stack = stack_choice(self._stacks, self.stack)
        if stack is None:
            raise NDIFError("There are no per-layer hidden states here to project on a direction.")
        try:
            self._direction = (unit_direction(vector, stack.width), label)
        except ValueError as error:
            raise NDIFError(f"This direction does not fit: {error}.") from None
        with self.hold_trait_notifications():
            self.reductions = [*REDUCTIONS, DIRECTION]
            self.reduction = DIRECTION
        self._refresh()

    def _reduction(self, stack: Any, window: Window) -> Reduction:
        name = self.reduction if self.reduction in self.reductions else "norm"
        neuron = max(0, min(self.neuron, stack.width - 1))
        reference = max(0, min(self.reference, window.total - 1))
        if name == DIRECTION and self._direction is not None and self._direction[0].numel() == stack.width:
            return Reduction(name, neuron, reference, *self._direction)
        return Reduction("norm" if name == DIRECTION else name, neuron, reference)

    def _refresh_cell_detail(self) -> None:
        """The clicked heatmap cell's value, norm, largest neurons and (where the lens runs) its top tokens."""
        if self.view != "heatmap" or len(self.selected) != 2 or not self._stacks:
            self.cell_detail = {}
            return
        shown = self._shown_now()
        stack = self._stacks[shown.stack]
        layer, token = (int(part) for part in self.selected)
        detail = cell_detail_state(stack, shown.step, shown.row, self.grid, shown.window, layer, token, DETAIL_NEURONS)
        if detail and "lens" in self.views:
            result = self.lens_result()
            top = lens_cell_state(result, self._model().tokenizer, layer, token, shown.window) if result else {}
            detail["lens"] = top.get("top", [])[:DETAIL_LENS_TOKENS]
        self.cell_detail = detail

    def _refresh_lens(self) -> None:
        if self.view != "lens" or "lens" not in self.views:
            return
        if self._lens_key() not in self._lens_cache:
            self.lens = {"status": "computing"}
        result = self.lens_result()
        if result is None:
            self.lens, self.lens_cell = {"status": self._lens_cache[self._lens_key()]}, {}
            return
        tokenizer = self._model().tokenizer
        self.lens = lens_state(result, tokenizer)
        if len(self.selected) == 2:
            layer, token = (int(part) for part in self.selected)
            self.lens_cell = lens_cell_state(result, tokenizer, layer, token, self._shown_now().window)
        else:
            self.lens_cell = {}

    def _shown_now(self) -> Shown:
        """What the views show now; set by the first refresh, which runs while the browser is built."""
        if self._shown is None:
            raise RuntimeError("the browser has not shown a layer stack yet")
        return self._shown

    def _model(self) -> Model:
        """The catalog's model; the lens is offered only for catalogs that have one."""
        if self.catalog.model is None:
            raise RuntimeError("the logit lens needs the model of the run")
        return self.catalog.model

    def lens_result(self) -> LensResult | None:
        """The lens top-k for the shown stack, step, row and window, computed once; None when it cannot run."""
        if "lens" not in self.views:
            return None
        key = self._lens_key()
        if key not in self._lens_cache:
            stack, step, row, start, count = key
            hidden = self._stacks[stack].at(step, row)[:, start : start + count]
            try:
                self._lens_cache[key] = logit_lens(self._model(), hidden, LENS_TOP_K, self.catalog.device_map)
            except Exception as error:  # shown in the lens view instead of breaking the widget
                self._lens_cache[key] = f"The logit lens could not run: {first_line(error)}"
        result = self._lens_cache[key]
        return result if isinstance(result, LensResult) else None

    def _lens_key(self) -> tuple[int, int, int, int, int]:
        shown = self._shown_now()
        return (
            shown.stack,
            shown.step,
            shown.row,
            shown.window.start,
            min(shown.window.count, self.bounds.lens_tokens),
        )

    def _refresh_attention(self) -> None:
        if not self._attention:
            self.attention = {}
            return
        source = self._attention[max(0, min(self.attention_source, len(self._attention) - 1))]
        self.attention = attention_state(self.catalog, source, self.step, self.row, self.token_start, self.bounds)

    # ----- notebook output -----
    def _ipython_display_(self) -> None:
        """Shown as a display that can be updated, so that the picture saved with the notebook follows the view."""
        from IPython.display import display

        data, metadata = self._repr_mimebundle_()
        self._picture = data.get("image/png")
        self._displays.append(display(data, metadata=metadata, raw=True, display_id=True))

    @traitlets.observe("settled")
    def _on_settled(self, change: dict[str, Any]) -> None:
        if not self.static_picture or not self._displays:
            return
        data, metadata = self._repr_mimebundle_()
        if data.get("image/png") == self._picture:
            return
        self._picture = data.get("image/png")
        for handle in self._displays:
            handle.update(data, metadata=metadata, raw=True)

    def _repr_mimebundle_(self, **kwargs: Any) -> tuple[dict[str, Any], dict[str, Any]]:
        from .static import render_png, render_text

        bundle = super()._repr_mimebundle_(**kwargs)
        data, metadata = (dict(bundle[0]), dict(bundle[1])) if bundle else ({}, {})

        data["text/plain"] = render_text(self)
        if not self.static_picture:
            return data, metadata
        try:
            data["image/png"] = base64.b64encode(render_png(self)).decode("ascii")
        except Exception as error:  # a picture that cannot be drawn must not hide the live widget
            data["text/plain"] += f"\n(static picture unavailable: {first_line(error)})"
            return data, metadata
        metadata[PICTURE_METADATA] = {"picture": "image/png"}
        return data, metadata


def _step_order(stack: LayerStack) -> list[int]:
    """The steps in slider order: each step, then all steps joined where there are (`JOINED`, -1)."""
    steps = sorted(step for step in stack.steps if step != JOINED)
    return [*steps, JOINED] if JOINED in stack.steps else steps

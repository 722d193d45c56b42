"""browse(): an activation browser for a `%%ndif` result, a block that has run, or plain saved tensors."""

from __future__ import annotations

from typing import Any

import torch

from ..errors import NDIFError
from ..tracing.tracer import Tracer
from .catalog import Catalog, InvokeTokens, entries_from_saved, entries_from_values
from .views import Bounds
from .widget import ActivationBrowser


def browse(
    values: Any, *, model: Any = None, prompt: Any = None, view: str | None = None, bounds: Bounds | None = None
) -> ActivationBrowser:
    """The activation browser for `values`.

    `values` is `_ndif` (a `%%ndif` cell's result), a `with model.trace/generate(...)` block after it ran, or plain
    tensors: one, or a dict, list or tuple of them (a list of per-layer hidden states becomes a layer stack). For
    plain tensors, `model` gives the tokenizer and the logit lens, and `prompt` (text or token ids) the axis labels.
    `view` is the view shown first: "overview", "heatmap", "lens", "attention" or "strip".
    """
    if hasattr(values, "catalog"):  # `_ndif`, or anything else that carries the catalog of its run
        catalog = values.catalog
        if catalog is None:
            raise NDIFError("This result has nothing to browse: its cell saved no values.")
    elif isinstance(values, Tracer):
        catalog = _catalog_of_block(values)
    else:
        catalog = _catalog_of_values(values, model, prompt)
    if not catalog.entries:
        raise NDIFError(
            "There is nothing to browse: no saved tensors were found. Call `.save()` on values in the block."
        )
    return ActivationBrowser(catalog, view=view, bounds=bounds)


def _catalog_of_block(block: Tracer) -> Catalog:
    record = block.run_record
    if record is None:
        raise NDIFError(
            f"This block has not run ({block.state.value}); browse it after its `with` statement ends without an error."
        )
    return Catalog.of_run(record, entries_from_saved(record), f"{record.model_name}: {record.kind}")


def _catalog_of_values(values: Any, model: Any, prompt: Any) -> Catalog:
    entries = entries_from_values(values, "" if isinstance(values, dict) else "value")
    invokes: list[InvokeTokens] = []
    if prompt is not None:
        if model is None and not _is_token_ids(prompt):
            raise NDIFError("A text prompt needs `model=` to be turned into tokens.")
        try:
            rows = model.loaded.tokenize(prompt) if model is not None else [list(map(int, prompt))]
        except ValueError as error:
            raise NDIFError(str(error)) from None
        invokes = [InvokeTokens(rows)]
    return Catalog(
        entries, invokes, model, model.loaded.device_map if model is not None else None, getattr(model, "name", "")
    )


def _is_token_ids(prompt: Any) -> bool:
    if isinstance(prompt, torch.Tensor):
        return not prompt.is_floating_point()
    return isinstance(prompt, (list, tuple)) and all(isinstance(item, int) for item in prompt)

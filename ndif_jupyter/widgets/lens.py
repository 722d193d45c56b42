"""The logit lens: hidden states projected through the final norm and the unembedding, as top-k tokens per cell.

The projection runs as a small intervention graph on the run's own device map, through the one executor: in the
kernel after a local run, in the server extension (or its GPU host) after a `--server` run, where the weights are.
Only the top-k probabilities and token ids come back.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, cast

import torch

from ..errors import NDIFError

if TYPE_CHECKING:
    from ..model import Model


@dataclass
class LensResult:
    """Top-k of the next-token distribution read at every (layer, token): `probs` and `ids` are [layers, tokens, k]."""

    probs: torch.Tensor
    ids: torch.Tensor


def unembedding_paths(model: Model) -> tuple[str, str]:
    """The module paths of the final norm and the unembedding (`model.norm`, `lm_head` for Llama-like models).

    The final norm is the last normalisation module outside the layer list; the unembedding is the model's output
    embeddings. Raises NDIFError for a model that has either missing.
    """
    meta = cast(Any, model.loaded.meta_model)
    paths = {id(module): path for path, module in meta.named_modules()}
    unembedding = meta.get_output_embeddings()
    if unembedding is None or id(unembedding) not in paths:
        raise NDIFError(f"{model.name} has no output embeddings, so the logit lens has nothing to project through.")
    layer_lists = [path for path, module in meta.named_modules() if isinstance(module, torch.nn.ModuleList)]
    norm = None
    for path, module in meta.named_modules():
        inside_layers = any(path.startswith(prefix + ".") for prefix in layer_lists)
        if not inside_layers and "norm" in type(module).__name__.lower():
            norm = path
    if norm is None:
        raise NDIFError(f"{model.name} has no final norm outside its layers that the logit lens could find.")
    return norm, paths[id(unembedding)]


def logit_lens(model: Model, hidden: torch.Tensor, k: int = 5, device_map: Any = None) -> LensResult:
    """Top-k next-token probabilities of `hidden` [layers, tokens, width] read through the final norm and unembedding.

    Runs one graph with `device_map` (the device map of the run that saved `hidden`): the states go in as a constant,
    and the model's forward runs on a single token only because a graph needs a prompt.
    """
    norm_path, unembedding_path = unembedding_paths(model)
    norm = model.module(norm_path)
    unembedding = model.module(unembedding_path)
    with model.trace([[model.loaded.pad_token_id]], device_map=device_map, edits=False):
        logits = unembedding(norm(hidden.to(model.loaded.dtype)))
        top = logits.float().softmax(-1).topk(k, dim=-1)
        probs = top[0].save()
        ids = top[1].save()
    return LensResult(probs.value, ids.value)

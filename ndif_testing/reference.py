"""Plain PyTorch forward hooks on a separately loaded model: the ground truth the engine's results are checked by."""

from __future__ import annotations

from contextlib import contextmanager

import torch
from transformers import AutoModelForCausalLM, GenerationMixin, PreTrainedModel


def load(folder) -> PreTrainedModel:
    return AutoModelForCausalLM.from_pretrained(str(folder)).eval()


@contextmanager
def capture(model: torch.nn.Module, paths: list[str], edit=None):
    """Collect each module's output at every call; `edit(path, output)` may return a replacement output."""
    seen: dict[str, list] = {path: [] for path in paths}
    handles = []
    for path in paths:

        def hook(module, args, output, path=path):
            if edit is not None:
                changed = edit(path, output)
                if changed is not None:
                    output = changed
            seen[path].append(output.detach().clone() if isinstance(output, torch.Tensor) else output)
            return output if edit is not None else None

        handles.append(model.get_submodule(path).register_forward_hook(hook))
    try:
        yield seen
    finally:
        for handle in handles:
            handle.remove()


def forward_logits(model: torch.nn.Module, ids: list[int]) -> torch.Tensor:
    with torch.no_grad():
        return model(torch.tensor([ids])).logits


def greedy(model: GenerationMixin, ids: list[int], new_tokens: int, pad_token_id: int) -> torch.Tensor:
    with torch.no_grad():
        return model.generate(
            torch.tensor([ids]),
            attention_mask=torch.ones(1, len(ids), dtype=torch.long),
            max_new_tokens=new_tokens,
            do_sample=False,
            pad_token_id=pad_token_id,
        )

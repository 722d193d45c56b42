"""Model: a Hugging Face causal LM addressed by its module tree; weights load only when a graph first runs."""

from __future__ import annotations

from typing import Any

import torch

from .loading.loaded import LoadedModel
from .runners import Runner, runner_for
from .tracing.contexts import GenerateContext, TraceContext
from .tracing.edits import EditContext
from .tracing.envoy import Envoy
from .tracing.session import SessionContext
from .tracing.traced_model import TracedModel

_OWN_ATTRIBUTES = ["name", "config", "tokenizer", "local_model", "loaded", "tracing"]


class Model:
    """A causal language model whose internals can be read and changed inside `trace`/`generate` blocks.

    `Model("gpt2")` takes a Hugging Face repo id or a local checkpoint folder; `Model()` is the embedded default
    model (SmolLM2-135M-Instruct). Construction reads only the config and the tokenizer and builds the module tree
    on the meta device; the weights load ("dispatch") on the first run, with that run's `device_map`.

    Modules are reached as attributes, mirroring the Hugging Face tree: `model.transformer.h[-1].mlp`.
    `loaded` is the model itself (config, tokenizer, meta module tree, weights), `tracing` its recording side.
    """

    def __init__(
        self, name: str | None = None, *, dtype: str | torch.dtype = "auto", attn_implementation: str | None = None
    ):
        self.loaded = LoadedModel(name, dtype=dtype, attn_implementation=attn_implementation, progress=True)
        self.tracing = TracedModel(self.loaded)

    @property
    def name(self) -> str:
        return self.loaded.name

    @property
    def config(self) -> Any:
        return self.loaded.config

    @property
    def tokenizer(self) -> Any:
        return self.loaded.tokenizer

    @property
    def local_model(self) -> torch.nn.Module | None:
        """The model with its weights, once a run in this process (or `dispatch`) has loaded them; else None."""
        return self.loaded.local_model

    # ----- the blocks -----
    def generate(self, *, device_map: Any = None, edits: bool = True, **options: Any) -> GenerateContext:
        """A block that generates tokens; other keyword arguments go to Hugging Face's `generate`. `edits=False`
        leaves the model's persistent edits out of this block."""
        __tracebackhide__ = True
        device_map, runner = self._runner(device_map)
        return GenerateContext(self.tracing, self, runner.run, device_map, options, edits)

    def trace(self, prompt: Any = None, *, device_map: Any = None, edits: bool = True, **options: Any) -> TraceContext:
        """A block of one forward pass; other keyword arguments go to the model's forward. `edits=False` leaves the
        model's persistent edits out of this block."""
        __tracebackhide__ = True
        device_map, runner = self._runner(device_map)
        return TraceContext(self.tracing, self, runner.run, prompt, device_map, options, edits)

    def session(self, *, device_map: Any = None) -> SessionContext:
        """`with model.session():` runs the `trace` and `generate` blocks opened inside it together at its end, as
        one request (one round trip to a server), in order; a later block may use any value of an earlier one, which
        goes from block to block where they run without coming back to the kernel."""
        __tracebackhide__ = True
        runner = runner_for(self.loaded, device_map)
        return SessionContext(self.tracing, self, runner, device_map)

    def _runner(self, device_map: Any) -> tuple[Any, Runner]:
        """Where a block runs: its `device_map` (inside a session, the session's) and the runner for it."""
        __tracebackhide__ = True
        session = self.tracing.session
        if session is not None:
            return session.device_map_for(device_map), session.runner
        return device_map, runner_for(self.loaded, device_map)

    # ----- persistent edits -----
    def edit(self, name: str = "default") -> EditContext:
        """`with model.edit():` records interventions that every later block of this model applies (for each
        invoke, at every forward pass, before the block's own) until `clear_edits()`. Recording an edit under a
        name it already has replaces that set; other names add sets."""
        __tracebackhide__ = True
        return EditContext(self.tracing, self, name)

    def clear_edits(self, name: str | None = None) -> None:
        """Remove the persistent edit set `name`, or all of them."""
        self.tracing.clear_edits(name)

    @property
    def edits(self) -> dict[str, list[str]]:
        """The persistent edit sets by name, each with the lines that recorded it."""
        return {name: edit.lines() for name, edit in self.tracing.edits.items()}

    # ----- weights -----
    def dispatch(self, device_map: Any = None) -> torch.nn.Module:
        """Load the weights with `device_map` ("cpu", "cuda", "auto", or a dict as accelerate takes); kept loaded."""
        return self.loaded.dispatch(device_map)

    # ----- module tree -----
    def module(self, path: str) -> Envoy:
        """The module at dotted `path` (`"model.layers.3.mlp"`), as `model.model.layers[3].mlp` gives it."""
        return self.tracing.module(path)

    def __getattr__(self, name: str) -> Any:
        __tracebackhide__ = True
        if name.startswith("_") or name in ("loaded", "tracing"):
            raise AttributeError(name)
        return getattr(self.tracing.root, name)

    def __getitem__(self, key: Any) -> Any:
        return self.tracing.root[key]

    def __dir__(self) -> list[str]:
        own = [n for n in type(self).__dict__ if not n.startswith("_")] + _OWN_ATTRIBUTES
        return sorted(set(own) | set(dir(self.tracing.root)))

    def __repr__(self) -> str:
        text = repr(self.loaded.meta_model)
        if not self.tracing.edits:
            return text
        heading = "Persistent edits (every block applies them; model.clear_edits() removes them):"
        sets = [f'  "{name}":\n' + "\n".join(f"    {line}" for line in lines) for name, lines in self.edits.items()]
        return "\n".join([text, heading, *sets])

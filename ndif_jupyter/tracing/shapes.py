"""Shapes and dtypes of every module's inputs and outputs, from forward passes on fake tensors, cached per input shape.

A forward pass of the meta-device model under torch's FakeTensorMode costs no weights and no memory, but it is not
free (a fraction of a second for a 30-layer model), so each result is kept per (rows, prompt length, step, options):
tracing the same shapes again costs a dictionary look-up. The last CACHED_SHAPES input shapes are kept.
"""

from __future__ import annotations

import inspect
import threading
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any

import torch
from torch._subclasses.fake_tensor import FakeTensorMode

from ..structures import map_leaves

CACHED_SHAPES = 64
FORWARD_OPTIONS_FOR_GENERATE = ("output_attentions", "output_hidden_states", "use_cache", "logits_to_keep")


@dataclass
class ModuleRecord:
    """What one module received and returned at one step, as meta tensors, and when (its place in the call order)."""

    pre_event: int
    post_event: int = -1
    args: tuple = ()
    kwargs: dict = field(default_factory=dict)
    output: Any = None


@dataclass
class StepRecord:
    """Every module called in one forward pass, by dotted path."""

    modules: dict[str, ModuleRecord]


@dataclass
class _Chain:
    records: list[StepRecord] = field(default_factory=list)
    cache: Any = None


def to_meta(value: Any) -> Any:
    """Plain meta tensors in place of fake (or real) ones; other leaves unchanged."""

    def convert(leaf: Any) -> Any:
        if isinstance(leaf, torch.Tensor):
            return torch.empty_strided(leaf.shape, leaf.stride(), dtype=leaf.dtype, device="meta")
        return leaf

    return map_leaves(convert, value)


class ShapeOracle:
    """Answers "what does module M see at step s for an invoke of n rows of length L", running fake forwards as needed."""

    def __init__(self, meta_model: torch.nn.Module):
        self._model = meta_model
        self._chains: OrderedDict[tuple, _Chain] = OrderedDict()
        self._lock = threading.Lock()
        parameters = inspect.signature(meta_model.forward).parameters
        self._parameters = frozenset(parameters)
        self._cache_kwarg = "cache" if "cache" in parameters else "past_key_values"
        self._takes_position_ids = "position_ids" in parameters

    def takes(self, name: str) -> bool:
        """Whether the model's forward accepts the keyword argument `name`."""
        return name in self._parameters

    def step(self, rows: int, length: int, step: int, forward_options: dict[str, Any]) -> StepRecord:
        key = (rows, length, tuple(sorted(forward_options.items())))
        with self._lock:
            chain = self._chains.pop(key, None) or _Chain()
            self._chains[key] = chain
            while len(self._chains) > CACHED_SHAPES:
                self._chains.popitem(last=False)
            while len(chain.records) <= step:
                self._advance(chain, rows, length, forward_options)
            return chain.records[step]

    def _advance(self, chain: _Chain, rows: int, length: int, forward_options: dict[str, Any]) -> None:
        step = len(chain.records)
        use_cache = forward_options.get("use_cache", True)
        total = length + step
        new_tokens = total if (step == 0 or not use_cache) else 1
        records: dict[str, ModuleRecord] = {}
        handles = []
        counter = [0]

        def before(path: str):
            def hook(module, args, kwargs):
                if path not in records:
                    records[path] = ModuleRecord(counter[0], args=args, kwargs=dict(kwargs))
                    counter[0] += 1

            return hook

        def after(path: str):
            def hook(module, args, kwargs, output):
                record = records.get(path)
                if record is not None and record.post_event < 0:
                    record.post_event = counter[0]
                    record.output = output
                    counter[0] += 1

            return hook

        for path, module in self._model.named_modules():
            handles.append(module.register_forward_pre_hook(before(path), with_kwargs=True))
            handles.append(module.register_forward_hook(after(path), with_kwargs=True))
        try:
            with torch.no_grad(), FakeTensorMode(allow_non_fake_inputs=True):
                kwargs = dict(forward_options)
                kwargs["input_ids"] = torch.zeros(rows, new_tokens, dtype=torch.long, device="meta")
                kwargs["attention_mask"] = torch.ones(rows, total, dtype=torch.long, device="meta")
                if self._takes_position_ids:
                    start = total - new_tokens
                    positions = torch.arange(start, total, device="meta")
                    kwargs["position_ids"] = positions.unsqueeze(0).expand(rows, new_tokens)
                if use_cache:
                    kwargs["use_cache"] = True
                    if chain.cache is not None:
                        kwargs[self._cache_kwarg] = chain.cache
                output = self._model(**kwargs)
                chain.cache = (getattr(output, "cache", None) or getattr(output, "past_key_values", None)) if use_cache else None
        finally:
            for handle in handles:
                handle.remove()
        chain.records.append(
            StepRecord({
                path: ModuleRecord(r.pre_event, r.post_event, to_meta(r.args), to_meta(r.kwargs), to_meta(r.output))
                for path, r in records.items()
            })
        )

    def call(self, module: torch.nn.Module, args: tuple, kwargs: dict) -> Any:
        """What calling one meta module on meta values returns (for `model.lm_head(hidden)` in a graph)."""
        with self._lock, torch.no_grad(), FakeTensorMode(allow_non_fake_inputs=True):
            return module(*args, **kwargs)

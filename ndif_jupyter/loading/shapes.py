"""Shapes and dtypes of every module's inputs and outputs, from forward passes on fake tensors, cached per input shape.

A forward pass of the meta-device model under torch's FakeTensorMode costs no weights and no memory, but it is not
free (a fraction of a second for a 30-layer model), so each result is kept per (rows, prompt length, step, options):
tracing the same shapes again costs a dictionary look-up. The last CACHED_SHAPES input shapes are kept.

Three ways keep passes few:
- a model whose layers are one repeated module runs its passes on a one-layer twin (`layer_stack`), a thirtieth of
  the work for a 30-layer model;
- generation steps after the second need no pass: every dimension of every recorded tensor is fitted as
  `a + b * step` on steps 1 and 2 (after the prefill only the cache grows);
- once three prompt lengths have run for the same rows, step and options, a new length needs no pass either: every
  dimension is fitted as `a + b * length` on those three.
A dimension that does not fit a line through the samples makes the oracle run the real passes instead.
"""

from __future__ import annotations

import inspect
import threading
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any

import torch
from torch._subclasses.fake_tensor import FakeTensorMode

from ..ir.nested import leaves, map_leaves
from .inner_ops import instrument, operation_path
from .layer_stack import LayerStack, expand
from .records import ModuleRecord, StepRecord

CACHED_SHAPES = 256
SAMPLES_FOR_A_FIT = 3
"""Prompt lengths that must have run (for the same rows, step and options) before a new length is fitted."""
STEPS_FOR_A_FIT = 2
"""Generation steps after the prefill that run before later steps are fitted: with a key-value cache each later
step reads one more cached position and nothing else changes, so two points give the line (and the executor checks
every module value against the shapes a graph declares, so a wrong fit would fail loudly, not silently)."""
FORWARD_OPTIONS_FOR_GENERATE = ("output_attentions", "output_hidden_states", "use_cache", "logits_to_keep")


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
    """Answers "what does module M see at step s for an invoke of n rows of length L", running fake forwards.

    With a one-layer `twin` of the model and its layer stack (`layer_stack.one_layer_twin`), passes run on the twin
    and its layer's records are repeated for every layer.
    """

    def __init__(self, meta_model: torch.nn.Module, twin: tuple[torch.nn.Module, LayerStack] | None = None):
        self._model = meta_model
        self._pass_model: torch.nn.Module = twin[0] if twin is not None else meta_model
        self._stack: LayerStack | None = twin[1] if twin is not None else None
        self._chains: OrderedDict[tuple, _Chain] = OrderedDict()
        self._derived: OrderedDict[tuple, StepRecord] = OrderedDict()
        self._whole: OrderedDict[tuple, StepRecord] = OrderedDict()
        self.forward_passes = 0
        self._lock = threading.Lock()
        parameters = inspect.signature(meta_model.forward).parameters
        self._parameters = frozenset(parameters)
        self._cache_kwarg = "cache" if "cache" in parameters else "past_key_values"
        self._takes_position_ids = "position_ids" in parameters

    @property
    def uses_twin(self) -> bool:
        """Whether passes run on a one-layer twin of the model."""
        return self._stack is not None

    def takes(self, name: str) -> bool:
        """Whether the model's forward accepts the keyword argument `name`."""
        return name in self._parameters

    def step(self, rows: int, length: int, step: int, forward_options: dict[str, Any]) -> StepRecord:
        options = tuple(sorted(forward_options.items()))
        key = (rows, length, step, options)
        with self._lock:
            record = self._whole.get(key)
            if record is None:
                compact = self._step(rows, length, step, forward_options)
                record = expand(compact, self._stack) if self._stack is not None else compact
                if record is None:  # the layer's events are not one span of its own: the whole model from now on
                    self._forget_twin()
                    record = self._step(rows, length, step, forward_options)
            _remember(self._whole, key, record)
            return record

    def full_passes(self, rows: int, length: int, steps: int, forward_options: dict[str, Any]) -> list[StepRecord]:
        """The records of `steps` steps from passes of the whole model (no twin, no fit, nothing kept): what the
        oracle's answers must equal."""
        chain = _Chain()
        with self._lock:
            while len(chain.records) < steps:
                chain.records.append(self._pass(self._model, chain, rows, length, forward_options))
        return chain.records

    def _step(self, rows: int, length: int, step: int, forward_options: dict[str, Any]) -> StepRecord:
        """The record of the model that passes run on (the twin's one layer, or the whole model)."""
        options = tuple(sorted(forward_options.items()))
        key = (rows, length, options)
        chain = self._chains.get(key)
        if chain is not None and len(chain.records) > step:
            self._chains.move_to_end(key)
            return chain.records[step]
        derived_key = (rows, length, step, options)
        derived = self._derived.get(derived_key)
        if derived is None and step > STEPS_FOR_A_FIT:
            samples = [(at, self._step(rows, length, at, forward_options)) for at in range(1, STEPS_FOR_A_FIT + 1)]
            derived = _fit(samples, step)
        if derived is None:
            derived = self._fit_length(rows, length, step, options)
        if derived is not None:
            _remember(self._derived, derived_key, derived)
            return derived
        chain = self._chains.pop(key, None) or _Chain()
        _remember(self._chains, key, chain)
        while len(chain.records) <= step:
            chain.records.append(self._pass(self._pass_model, chain, rows, length, forward_options))
        return chain.records[step]

    def _fit_length(self, rows: int, length: int, step: int, options: tuple) -> StepRecord | None:
        samples = [
            (sample_length, chain.records[step])
            for (sample_rows, sample_length, sample_options), chain in reversed(self._chains.items())
            if sample_rows == rows and sample_options == options and len(chain.records) > step
        ][:SAMPLES_FOR_A_FIT]
        return _fit(samples, length) if len(samples) == SAMPLES_FOR_A_FIT else None

    def _forget_twin(self) -> None:
        self._pass_model, self._stack = self._model, None
        for kept in (self._chains, self._derived, self._whole):
            kept.clear()

    def _pass(
        self, model: torch.nn.Module, chain: _Chain, rows: int, length: int, forward_options: dict[str, Any]
    ) -> StepRecord:
        """One fake forward of `model` at the chain's next step, its cache kept in the chain."""
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

        def inner(owner: str):
            def dispatch(name: str, callee: Any, *args: Any, **kwargs: Any) -> Any:
                path = operation_path(owner, name)
                if path in records:
                    return callee(*args, **kwargs)
                record = records[path] = ModuleRecord(counter[0], args=args, kwargs=dict(kwargs))
                counter[0] += 1
                record.output = callee(*args, **kwargs)
                record.post_event = counter[0]
                counter[0] += 1
                return record.output

            return dispatch

        undo = []
        for path, module in model.named_modules():
            handles.append(module.register_forward_pre_hook(before(path), with_kwargs=True))
            handles.append(module.register_forward_hook(after(path), with_kwargs=True))
            undo.append(instrument(module, inner(path)))
        try:
            with torch.no_grad(), FakeTensorMode(allow_non_fake_inputs=True):
                kwargs: dict[str, Any] = {
                    "input_ids": torch.zeros(rows, new_tokens, dtype=torch.long, device="meta"),
                    "attention_mask": torch.ones(rows, total, dtype=torch.long, device="meta"),
                }
                if self._takes_position_ids:
                    start = total - new_tokens
                    positions = torch.arange(start, total, device="meta")
                    kwargs["position_ids"] = positions.unsqueeze(0).expand(rows, new_tokens)
                kwargs.update(forward_options)  # after the inputs, in the order the executor passes them
                if use_cache:
                    kwargs["use_cache"] = True
                    if chain.cache is not None:
                        kwargs[self._cache_kwarg] = chain.cache
                self.forward_passes += 1
                output = model(**kwargs)
                chain.cache = (
                    (getattr(output, "cache", None) or getattr(output, "past_key_values", None)) if use_cache else None
                )
        finally:
            for handle in handles:
                handle.remove()
            for restore in undo:
                restore()
        return StepRecord(
            {
                path: ModuleRecord(r.pre_event, r.post_event, to_meta(r.args), to_meta(r.kwargs), to_meta(r.output))
                for path, r in records.items()
            }
        )

    def call(self, module: torch.nn.Module, args: tuple, kwargs: dict) -> Any:
        """What calling one meta module on meta values returns (for `model.lm_head(hidden)` in a graph)."""
        with self._lock, torch.no_grad(), FakeTensorMode(allow_non_fake_inputs=True):
            return module(*args, **kwargs)


def _remember(cache: OrderedDict, key: tuple, value: Any) -> None:
    cache[key] = value
    cache.move_to_end(key)
    while len(cache) > CACHED_SHAPES:
        cache.popitem(last=False)


def _fit(samples: list[tuple[int, StepRecord]], at: int) -> StepRecord | None:
    """The record at `at` from records at other points (prompt lengths, or steps), every dimension of every tensor
    fitted on a line through them; None where one does not fit."""
    modules: dict[str, ModuleRecord] = {}
    for path, record in samples[0][1].modules.items():
        found = [(x, r) for x, sample in samples if (r := sample.modules.get(path)) is not None]
        if len(found) != len(samples):
            return None
        fitted = _fit_leaves([(x, (r.args, r.kwargs, r.output)) for x, r in found], at)
        if fitted is None:
            return None
        args, kwargs, output = fitted
        modules[path] = ModuleRecord(record.pre_event, record.post_event, args, kwargs, output)
    return StepRecord(modules)


def _fit_leaves(samples: list[tuple[int, Any]], length: int) -> Any | None:
    """The first sample's structure, every tensor shape fitted linearly in the prompt length; None if that fails."""
    leaf_lists = [leaves(value) for _, value in samples]
    if len({len(found) for found in leaf_lists}) != 1:
        return None
    shapes: list[torch.Size | None] = []
    for column in zip(*leaf_lists):
        tensors = [leaf for leaf in column if isinstance(leaf, torch.Tensor)]
        if not tensors:
            shapes.append(None)
            continue
        if len(tensors) != len(column) or len({t.ndim for t in tensors}) != 1:
            return None
        shape = []
        for dim in range(tensors[0].ndim):
            points = [(n, t.shape[dim]) for (n, _), t in zip(samples, tensors)]
            size = _line_through(points, length)
            if size is None:
                return None
            shape.append(size)
        shapes.append(torch.Size(shape))
    fitted = iter(shapes)

    def rebuild(leaf: Any) -> Any:
        shape = next(fitted)
        return leaf if shape is None else _empty_like_layout(shape, leaf)

    return map_leaves(rebuild, samples[0][1])


def _line_through(points: list[tuple[int, int]], at: int) -> int | None:
    (x0, y0), (x1, y1) = points[0], points[1]
    if x0 == x1 or (y1 - y0) % (x1 - x0):
        return None
    slope = (y1 - y0) // (x1 - x0)
    intercept = y0 - slope * x0
    if any(intercept + slope * x != y for x, y in points):
        return None
    value = intercept + slope * at
    return value if value > 0 else None


def _empty_like_layout(shape: torch.Size, like: torch.Tensor) -> torch.Tensor:
    """A meta tensor of `shape` whose dimensions are laid out in memory in the same order as `like`'s."""
    order = sorted(range(like.ndim), key=lambda d: like.stride(d), reverse=True)
    strides = [0] * like.ndim
    step = 1
    for dim in reversed(order):
        strides[dim] = 0 if like.stride(dim) == 0 and like.shape[dim] > 1 else step
        step *= max(shape[dim], 1) if strides[dim] else 1
    return torch.empty_strided(shape, strides, dtype=like.dtype, device="meta")

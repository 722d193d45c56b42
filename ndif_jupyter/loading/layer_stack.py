"""A model's stack of identical layers, and a one-layer twin whose shape pass gives every layer's shapes at once.

A decoder's layers are the same module with the same shapes in and out, called one after the other. A fake-tensor
pass of a one-layer copy of the model (built from its config) therefore records what all of them see: layer `i`'s
records are layer 0's under the path `layers.i`, its events moved by `i` layers' worth, and everything after the
stack moved by the other layers' events. The twin is used only when that holds by construction: one module list as
long as the config's `num_hidden_layers`, every per-layer setting of the config the same for all layers, and the
twin's module tree (classes, parameter and buffer shapes) equal to the model's once its layer is repeated.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import torch

from .records import ModuleRecord, StepRecord


@dataclass(frozen=True)
class LayerStack:
    """The module list at `path` holds `count` layers of one kind."""

    path: str
    count: int

    def layer_path(self, index: int) -> str:
        return f"{self.path}.{index}" if self.path else str(index)


def one_layer_twin(
    meta_model: torch.nn.Module, config: Any, build: Callable[[Any], torch.nn.Module]
) -> tuple[torch.nn.Module, LayerStack] | None:
    """A copy of `meta_model` with one layer, built by `build(config)`, and its stack; None where that is unsafe."""
    count = getattr(config, "num_hidden_layers", None)
    if not isinstance(count, int) or count < 2:
        return None
    stacks = [
        path
        for path, module in meta_model.named_modules()
        if isinstance(module, torch.nn.ModuleList) and len(module) == count
    ]
    if len(stacks) != 1:
        return None
    one_layer = _one_layer_config(config, count)
    if one_layer is None:
        return None
    try:
        twin = build(one_layer)
    except Exception:
        return None
    stack = LayerStack(stacks[0], count)
    if _tree(meta_model) != _repeated(_tree(twin), stack):
        return None
    twin.eval()
    return twin, stack


def expand(record: StepRecord, stack: LayerStack) -> StepRecord | None:
    """The whole model's record from the twin's: layer 0 repeated `count` times; None if layer 0 is not one span of
    events that only its own modules fill."""
    first = stack.layer_path(0)
    layer = record.modules.get(first)
    if layer is None or layer.post_event < 0:
        return None
    start, end = layer.pre_event, layer.post_event
    span = end - start + 1
    inside = {path for path in record.modules if path == first or path.startswith(first + ".")}
    for path, module in record.modules.items():
        within = start <= module.pre_event <= end
        if within != (path in inside) or (path in inside and not start <= module.post_event <= end):
            return None
    later = (stack.count - 1) * span
    places: list[tuple[int, str, str, int, int]] = []
    for path, module in record.modules.items():
        if path not in inside:
            places.append((_move(module.pre_event, later, end), path, path, later, end))
            continue
        rest = path[len(first) :]
        for index in range(stack.count):
            by = index * span
            places.append((_move(module.pre_event, by, start - 1), stack.layer_path(index) + rest, path, by, start - 1))
    places.sort()
    return StepRecord(_Expanded(record.modules, {path: (source, by, after) for _, path, source, by, after in places}))


class _Expanded(Mapping[str, ModuleRecord]):
    """The whole model's records by path, in the order of their events, each made from the twin's record when it is
    read: a step keeps one small entry per module instead of a record (a 30-layer model has hundreds of modules,
    and a generation's steps are kept), so recording a block leaves little for the garbage collector to walk."""

    __slots__ = ("_places", "_twin")

    def __init__(self, twin: Mapping[str, ModuleRecord], places: dict[str, tuple[str, int, int]]):
        self._twin = twin
        self._places = places

    def __getitem__(self, path: str) -> ModuleRecord:
        source, by, after = self._places[path]
        return _moved(self._twin[source], by, after)

    def __iter__(self) -> Iterator[str]:
        return iter(self._places)

    def __len__(self) -> int:
        return len(self._places)

    def __contains__(self, path: object) -> bool:
        return path in self._places


def _move(event: int, by: int, after: int) -> int:
    return event + by if event > after else event


def _moved(module: ModuleRecord, by: int, after: int) -> ModuleRecord:
    """`module`'s record with each event later than `after` moved by `by`."""

    pre, post = _move(module.pre_event, by, after), _move(module.post_event, by, after)
    return ModuleRecord(pre, post, module.args, module.kwargs, module.output)


def _one_layer_config(config: Any, count: int) -> Any | None:
    """`config` with one layer; None if any per-layer setting (a list as long as the stack) differs between layers."""
    one = copy.deepcopy(config)
    for name, value in vars(config).items():
        if isinstance(value, (list, tuple)) and len(value) == count and count > 1:
            if any(item != value[0] for item in value):
                return None
            setattr(one, name, type(value)(value[:1]))
    one.num_hidden_layers = 1
    return one


def _tree(model: torch.nn.Module) -> dict[str, tuple]:
    """Every module by path: its class and its own parameters' and buffers' names, shapes and dtypes."""
    return {
        path: (
            type(module),
            tuple((n, tuple(p.shape), p.dtype) for n, p in module.named_parameters(recurse=False)),
            tuple((n, tuple(b.shape), b.dtype) for n, b in module.named_buffers(recurse=False)),
        )
        for path, module in model.named_modules()
    }


def _repeated(tree: dict[str, tuple], stack: LayerStack) -> dict[str, tuple]:
    """The twin's tree with its one layer's modules repeated under each layer index."""
    first = stack.layer_path(0)
    repeated: dict[str, tuple] = {}
    for path, entry in tree.items():
        if path == first or path.startswith(first + "."):
            rest = path[len(first) :]
            for index in range(stack.count):
                repeated[stack.layer_path(index) + rest] = entry
        else:
            repeated[path] = entry
    return repeated

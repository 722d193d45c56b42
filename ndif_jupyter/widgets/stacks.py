"""Layer stacks: saved per-layer hidden states grouped into [layers, rows, tokens, width] grids, one per step."""

from __future__ import annotations

import re
from dataclasses import dataclass, field

import torch

from .catalog import SavedEntry

JOINED = -1
"""The step key of a stack's steps joined along the tokens: the prompt's pass, then each generated token's."""

_LAYER_PATH = re.compile(r"^(?P<prefix>.*?)\.(?P<index>\d+)(?P<suffix>(\.[^.]+)*)$")
_LAYER_NAME = re.compile(r"^(?P<prefix>.*)\[(?P<index>\d+)\]$")


@dataclass
class LayerStack:
    """Hidden states of several layers read at the same place of each layer.

    `steps` maps a generation step to its per-layer tensors, each [rows, tokens, width], in layer order; every step has
    the same layers. When the steps are a generation's prompt pass and one new token per later step, `JOINED` holds
    them joined: every position of the run in one grid. `invoke` is the invoke they belong to (None when unknown, as
    for plain tensors).
    """

    label: str
    layer_labels: list[str]
    steps: dict[int, list[torch.Tensor]] = field(default_factory=dict)
    invoke: int | None = None

    @property
    def rows(self) -> int:
        return next(iter(self.steps.values()))[0].shape[0]

    @property
    def width(self) -> int:
        return next(iter(self.steps.values()))[0].shape[-1]

    def tokens(self, step: int) -> int:
        return self.steps[step][0].shape[1]

    def at(self, step: int, row: int) -> torch.Tensor:
        """One row of one step as a [layers, tokens, width] tensor."""
        return torch.stack([layer[row] for layer in self.steps[step]])


def find_stacks(entries: list[SavedEntry], minimum_layers: int = 2) -> list[LayerStack]:
    """Every group of at least `minimum_layers` entries that are the same module value of numbered layers, and one
    layer's value saved at several steps (its view is then the steps: one row, a slider and all steps joined).

    Entries with a recorded origin group by module path (`model.layers.3` and `model.layers.7.mlp` are layers 3 and 7
    of different stacks); plain tensors group by name (`hs[0]`, `hs[1]`, ...). Only [rows, tokens, width] tensors
    (or [tokens, width], taken as one row) of one shape per step take part.
    """
    groups: dict[tuple, dict[int, dict[int, torch.Tensor]]] = {}
    labels: dict[tuple, str] = {}
    for entry in entries:
        value = _as_rows(entry.value)
        if value is None:
            continue
        origin = entry.origin
        if origin.module is not None:
            if origin.selection not in ("", "[0]"):
                continue
            match = _LAYER_PATH.match(origin.module)
            if match is None:
                continue
            key: tuple = ("module", match["prefix"], match["suffix"], origin.event, origin.selection, origin.invoke)
            labels[key] = f"{match['prefix']}.*{match['suffix']}.{origin.event}{origin.selection}"
            step = origin.step or 0
        else:
            match = _LAYER_NAME.match(entry.name)
            if match is None:
                continue
            key = ("name", match["prefix"])
            labels[key] = f"{match['prefix']}[*]"
            step = 0
        groups.setdefault(key, {}).setdefault(step, {})[int(match["index"])] = value
    stacks = []
    for key, by_step in groups.items():
        stack = _stack_of(labels[key], by_step, key[-1] if key[0] == "module" else None)
        if stack is not None and (len(stack.layer_labels) >= minimum_layers or len(stack.steps) > 1):
            stacks.append(stack)
    return stacks


def _as_rows(value: torch.Tensor) -> torch.Tensor | None:
    if not value.is_floating_point():
        return None
    if value.ndim == 3:
        return value
    if value.ndim == 2:
        return value.unsqueeze(0)
    return None


def _stack_of(label: str, by_step: dict[int, dict[int, torch.Tensor]], invoke: int | None) -> LayerStack | None:
    """The steps that saved the most layers; a step that saved fewer layers than that is left out of the stack."""
    layer_indices = max((tuple(sorted(layers)) for layers in by_step.values()), key=len)
    steps = {}
    for step in sorted(by_step):
        if tuple(sorted(by_step[step])) != layer_indices:
            continue
        tensors = [by_step[step][index] for index in layer_indices]
        if len({tuple(tensor.shape) for tensor in tensors}) != 1:
            return None
        steps[step] = tensors
    shapes = {(tensors[0].shape[0], tensors[0].shape[-1]) for tensors in steps.values()}
    if len(shapes) != 1:
        return None
    joined = _joined(steps)
    if joined is not None:
        steps[JOINED] = joined
    return LayerStack(label, [str(index) for index in layer_indices], steps, invoke)


def _joined(steps: dict[int, list[torch.Tensor]]) -> list[torch.Tensor] | None:
    """Per layer, the prompt's states followed by each later step's one new position, when the steps are 0, 1, ...
    without a gap and each later step saw one token (generation with the KV cache); else None."""
    order = sorted(steps)
    if len(order) < 2 or order != list(range(len(order))):
        return None
    if any(steps[step][0].shape[1] != 1 for step in order[1:]):
        return None
    return [torch.cat([steps[step][layer] for step in order], dim=1) for layer in range(len(steps[0]))]

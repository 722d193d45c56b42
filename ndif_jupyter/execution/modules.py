"""Finding a model's modules by dotted path, and the keyword arguments its forward takes, for every run anew.

Nothing is cached on the model: a user may replace a submodule between runs, and the next run must hook the new one.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from functools import lru_cache
from typing import Any

import torch


def submodule(model: torch.nn.Module, path: str) -> torch.nn.Module:
    """The module at dotted `path` ("" is `model`), looked up child by child as the model is now.

    Reads torch's table of children directly: `get_submodule` gives the same module but costs about ten times more,
    and a run looks up every module it hooks.
    """
    module = model
    for name in path.split(".") if path else []:
        child = module._modules.get(name)
        if child is None:
            return model.get_submodule(path)  # raises the AttributeError that names the missing part
        module = child
    return module


def forward_parameters(model: torch.nn.Module) -> frozenset[str]:
    """The names of the parameters of `model.forward` (cached per function, so a replaced forward is read anew)."""
    forward: Any = model.forward
    return _parameters_of(getattr(forward, "__func__", forward))


@lru_cache(maxsize=256)
def _parameters_of(function: Callable[..., Any]) -> frozenset[str]:
    parameters = inspect.signature(function).parameters
    return frozenset(name for name in parameters if name != "self")

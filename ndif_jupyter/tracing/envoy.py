"""Envoy: a module of the model's tree as the user addresses it (`model.transformer.h[-1].mlp`), giving proxies of
its `.output`, `.input` and `.inputs` inside a traced block."""

from __future__ import annotations

import difflib
from typing import TYPE_CHECKING, Any

import torch

from .inner import InnerOperations
from .module_values import EVENTS, ModuleValues

if TYPE_CHECKING:
    from .traced_model import TracedModel

_OWN = ("_traced", "_path", "_module", "_children")
_PUBLIC = (*EVENTS, "skip", "path", "module_paths", "ops")


class Envoy(ModuleValues):
    """One module of the tree, addressed by its dotted path. Needs no weights: it wraps the meta-device module."""

    __slots__ = _OWN

    def __init__(self, traced: TracedModel, path: str, module: torch.nn.Module):
        object.__setattr__(self, "_traced", traced)
        object.__setattr__(self, "_path", path)
        object.__setattr__(self, "_module", module)
        object.__setattr__(self, "_children", {})

    @property
    def ops(self) -> InnerOperations:
        """The functions this module's forward calls by name (`self_attn.ops.apply_rotary_pos_emb`), whose inputs
        and outputs are read and set as a module's are; `print(module.ops)` lists them."""
        return InnerOperations(self._traced, self._path, self._module)

    def skip(self, value: Any) -> None:
        """This module does not run (at the current invoke and step): its output is `value`, of the output's shape
        (for a layer, usually its input: `layer.skip(layer.input)`)."""
        __tracebackhide__ = True
        self._open_tracer(".skip(...)").module_skip(self._path, value)

    def __call__(self, *args: Any, **kwargs: Any):
        """Call this module on traced values (for example the logit lens: `model.lm_head(model.model.norm(h))`)."""
        __tracebackhide__ = True
        return self._open_tracer("(...)").module_call(self._path, args, kwargs)

    # ----- walking the tree -----
    def __getattr__(self, name: str) -> Any:
        __tracebackhide__ = True
        if name.startswith("__"):
            raise AttributeError(name)
        child = self._child(name)
        if child is not None:
            return child
        if name in self._module._parameters or name in self._module._buffers:
            return self._open_tracer(f".{name}").module_weight(self._path, name)
        try:
            return getattr(self._module, name)
        except AttributeError:
            pass
        raise AttributeError(self._unknown_name_message(name))

    def _child(self, name: str) -> Envoy | None:
        """The Envoy of a child module, made once per name (None when there is no such child)."""
        child = self._children.get(name)
        if child is None:
            module = self._module._modules.get(name)
            if module is None:
                return None
            child = self._children[name] = Envoy(self._traced, _join(self._path, name), module)
        return child

    def __getitem__(self, key: int | slice | str) -> Any:
        """A child by name (`h["0"]`) or position (`h[-1]`), or a list of children by slice (`h[2:5]`)."""
        __tracebackhide__ = True
        names = list(self._module._modules)
        if isinstance(key, str):
            if key not in self._module._modules:
                raise KeyError(self._unknown_name_message(key))
            return self._child(key)
        if isinstance(key, slice):
            return [self._child(name) for name in names[key]]
        if not isinstance(self._module, (torch.nn.ModuleList, torch.nn.Sequential)):
            raise TypeError(
                f"`{self._display()}` ({type(self._module).__name__}) cannot be indexed; it is not a list of modules."
            )
        if not -len(names) <= key < len(names):
            raise IndexError(f"`{self._display()}` has {len(names)} modules; index {key} is out of range.")
        return self._child(names[key])

    def __len__(self) -> int:
        return len(self._module._modules)

    def __iter__(self):
        for name in list(self._module._modules):
            yield self._child(name)

    def __dir__(self) -> list[str]:
        return sorted(set(self._module._modules) | set(_PUBLIC) | set(self._weights()))

    def _weights(self) -> list[str]:
        return [*self._module._parameters, *self._module._buffers]

    def __repr__(self) -> str:
        return repr(self._module)

    @property
    def path(self) -> str:
        """The dotted path of this module in the model (`transformer.h.11`)."""
        return self._path

    def module_paths(self) -> list[str]:
        """The dotted path of this module and of every module inside it, in the order of the tree."""
        return [_join(self._path, name) for name, _ in self._module.named_modules()]

    def _unknown_name_message(self, name: str) -> str:
        candidates = [*self._module._modules, *_PUBLIC, *self._weights()]
        close = difflib.get_close_matches(name, candidates, n=3, cutoff=0.5)
        children = ", ".join(self._module._modules) or "none"
        message = f"`{self._display()}` ({type(self._module).__name__}) has no module or attribute `{name}`."
        if close:
            message += f" Did you mean {', '.join(f'`{c}`' for c in close)}?"
        return message + f" Its modules: {children}."


def _join(path: str, name: str) -> str:
    return f"{path}.{name}" if path else name

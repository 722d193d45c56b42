"""`module.ops`: the inner operations of a module's forward (the functions it calls by name), each addressed as a
module is: `model.model.layers[4].self_attn.ops.apply_rotary_pos_emb.output`."""

from __future__ import annotations

import difflib
from collections.abc import Iterator
from typing import TYPE_CHECKING

import torch

from ..loading.inner_ops import InnerOperation, inner_operations, operation_path
from .module_values import ModuleValues, display_path

if TYPE_CHECKING:
    from .traced_model import TracedModel


class OperationEnvoy(ModuleValues):
    """One inner operation of a module: its `.output`, `.input` (first argument) and `.inputs` (`(args, kwargs)`) at
    the open invoke and step, read and set. A call site inside a loop gives its first call of each forward pass."""

    __slots__ = ("_path", "_traced", "operation")
    operation: InnerOperation

    def __init__(self, traced: TracedModel, path: str, operation: InnerOperation):
        object.__setattr__(self, "_traced", traced)
        object.__setattr__(self, "_path", path)
        object.__setattr__(self, "operation", operation)

    @property
    def path(self) -> str:
        """The dotted path of this operation (`model.layers.4.self_attn.ops.apply_rotary_pos_emb`)."""
        return self._path

    def __repr__(self) -> str:
        return f"{self._display()}  (line {self.operation.lineno}: {self.operation.line})"


class InnerOperations:
    """The inner operations of one module's forward, by name; `print()` lists them with the lines that call them."""

    __slots__ = ("_module", "_operations", "_path", "_traced")

    def __init__(self, traced: TracedModel, path: str, module: torch.nn.Module):
        self._traced = traced
        self._path = path
        self._module = module
        self._operations = {operation.name: operation for operation in inner_operations(module)}

    def __getattr__(self, name: str) -> OperationEnvoy:
        __tracebackhide__ = True
        if name.startswith("__"):
            raise AttributeError(name)
        operation = self._operations.get(name)
        if operation is None:
            raise AttributeError(self._unknown(name))
        return OperationEnvoy(self._traced, operation_path(self._path, name), operation)

    def __getitem__(self, name: str) -> OperationEnvoy:
        return getattr(self, name)

    def __iter__(self) -> Iterator[OperationEnvoy]:
        return (getattr(self, name) for name in self._operations)

    def __len__(self) -> int:
        return len(self._operations)

    def __dir__(self) -> list[str]:
        return list(self._operations)

    def __repr__(self) -> str:
        where = f"{display_path(self._path)}.ops ({type(self._module).__name__}.forward)"
        if not self._operations:
            return f"{where}: no inner operations (its forward calls no functions by name)"
        width = max(len(name) for name in self._operations)
        lines = [f"  {name:<{width}}  line {op.lineno}: {op.line}" for name, op in self._operations.items()]
        return f"{where}:\n" + "\n".join(lines)

    def _unknown(self, name: str) -> str:
        known = list(self._operations)
        close = difflib.get_close_matches(name, known, n=3, cutoff=0.5)
        message = f"`{display_path(self._path)}.ops` has no operation `{name}`."
        if close:
            message += f" Did you mean {', '.join(f'`{c}`' for c in close)}?"
        return message + f" Its operations: {', '.join(known) or 'none'}."

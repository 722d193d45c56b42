"""Index arguments checked against the shape they index, before a kernel sees them (on a GPU an index out of range
is a device-side assert that breaks the process's CUDA context)."""

from __future__ import annotations

from typing import Any

import torch

_DIM_INDEX_OPS = {
    "tensor.index_select": "index",
    "torch.index_select": "index",
    "tensor.gather": "index",
    "torch.gather": "index",
    "tensor.scatter": "index",
    "tensor.scatter_": "index",
    "tensor.scatter_add": "index",
    "tensor.index_fill": "index",
    "tensor.index_fill_": "index",
}
INDEXING_OPS = frozenset({"getitem", "setitem", "torch.nn.functional.one_hot", *_DIM_INDEX_OPS})


def index_problem(op: str, args: tuple, kwargs: dict) -> str | None:
    """What is wrong with the indices of an indexing operation, or None when they fit (or cannot be known yet:
    indices on the meta device are checked when the run has their values)."""
    try:
        if op in ("getitem", "setitem"):
            target, key = args[0], args[1]
            if not isinstance(target, torch.Tensor):
                return None
            return _key_problem(tuple(target.shape), key)
        if op == "torch.nn.functional.one_hot":
            classes = args[1] if len(args) > 1 else kwargs.get("num_classes", -1)
            if isinstance(classes, int) and classes > 0:
                return _range_problem(args[0], classes, "a class")
            return None
        if op in _DIM_INDEX_OPS:
            target = args[0]
            dim = args[1] if len(args) > 1 else kwargs.get("dim")
            index = args[2] if len(args) > 2 else kwargs.get("index")
            if (
                not isinstance(target, torch.Tensor)
                or not isinstance(dim, int)
                or not -target.ndim <= dim < max(target.ndim, 1)
            ):
                return None
            return _range_problem(index, target.shape[dim] if target.ndim else 1, f"dimension {dim}")
    except (IndexError, TypeError):
        return None
    return None


def embedding_problem(module: torch.nn.Module, args: tuple) -> str | None:
    """What is wrong with the token ids a call of an embedding module gets, or None (also for other modules)."""
    if not isinstance(module, torch.nn.Embedding) or not args:
        return None
    ids = args[0]
    if isinstance(ids, torch.Tensor) and (ids.is_floating_point() or ids.dtype == torch.bool):
        return None
    return _range_problem(ids, module.num_embeddings, "the embedding's vocabulary")


def _range_problem(index: Any, size: int, what: str) -> str | None:
    if not isinstance(index, torch.Tensor) or index.is_meta or index.numel() == 0:
        return None
    if index.dtype == torch.bool or index.is_floating_point() or index.is_complex():
        return None
    low, high = int(index.min()), int(index.max())
    if low < -size or high >= size:
        return f"index {high if high >= size else low} is out of range for {what} of size {size}"
    return None


def _key_problem(shape: tuple[int, ...], key: Any) -> str | None:
    parts = key if isinstance(key, tuple) else (key,)
    used = [_dims_used(part) for part in parts]
    dim = 0
    for position, part in enumerate(parts):
        if part is Ellipsis:
            dim = len(shape) - sum(used[position + 1 :])
            continue
        if part is None or isinstance(part, bool):
            continue
        if dim >= len(shape):
            return f"too many indices for a value of shape {list(shape)}"
        size = shape[dim]
        if isinstance(part, int):
            if not -size <= part < size:
                return f"index {part} is out of range for dimension {dim} of size {size}"
        elif isinstance(part, list):
            problem = _range_problem(_as_index(part), size, f"dimension {dim}")
            if problem:
                return problem
        elif isinstance(part, torch.Tensor):
            if part.dtype == torch.bool:
                if not part.is_meta and list(part.shape) != list(shape[dim : dim + part.ndim]):
                    return (
                        f"a mask of shape {list(part.shape)} does not fit shape {list(shape[dim:])} at dimension {dim}"
                    )
            else:
                problem = _range_problem(part, size, f"dimension {dim}")
                if problem:
                    return problem
        dim += used[position]
    return None


def _dims_used(part: Any) -> int:
    if part is None or part is Ellipsis or isinstance(part, bool):
        return 0
    if isinstance(part, torch.Tensor) and part.dtype == torch.bool:
        return part.ndim
    return 1


def _as_index(part: list) -> torch.Tensor | None:
    try:
        return torch.tensor(part, dtype=torch.long)
    except (TypeError, ValueError, RuntimeError, OverflowError):
        return None

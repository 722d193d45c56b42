"""Walking nested module inputs and outputs (tuples, lists, dicts, Hugging Face ModelOutputs) leaf by leaf."""

from __future__ import annotations

from typing import Any, Callable, Iterator

import torch


def map_leaves(fn: Callable[[Any], Any], value: Any) -> Any:
    """The same structure with `fn` applied to every leaf (anything that is not a tuple, list or dict)."""
    if isinstance(value, tuple):
        items = [map_leaves(fn, item) for item in value]
        return type(value)(*items) if hasattr(value, "_fields") else tuple(items)
    if isinstance(value, list):
        return [map_leaves(fn, item) for item in value]
    if isinstance(value, dict):
        mapped = {key: map_leaves(fn, item) for key, item in value.items()}
        return mapped if type(value) is dict else type(value)(**mapped)
    return fn(value)


def labelled_leaves(name: str, value: Any) -> Iterator[tuple[str, Any]]:
    """Every leaf of nested lists, tuples and dicts with a label that says where it is (`hs[3]`, `d['key']`).

    Keys of a dict at the top (an empty `name`) label its items by themselves.
    """
    if isinstance(value, (list, tuple)):
        for index, item in enumerate(value):
            yield from labelled_leaves(f"{name}[{index}]", item)
    elif isinstance(value, dict):
        for key, item in value.items():
            yield from labelled_leaves(f"{name}[{key!r}]" if name else str(key), item)
    else:
        yield name, value


def leaves(value: Any) -> list[Any]:
    """Every leaf of a nested structure, in the order `map_leaves` visits them."""
    found: list[Any] = []
    map_leaves(found.append, value)
    return found


def zip_map_leaves(fn: Callable[[Any, Any], Any], value: Any, other: Any) -> Any:
    """Like `map_leaves`, over two structures of the same shape, leaf by leaf; raises ValueError where they differ."""
    if isinstance(value, (tuple, list)):
        if not isinstance(other, (tuple, list)) or len(other) != len(value):
            raise ValueError(f"expected a sequence of {len(value)} items, got {describe(other)}")
        items = [zip_map_leaves(fn, a, b) for a, b in zip(value, other)]
        if isinstance(value, list):
            return items
        return type(value)(*items) if hasattr(value, "_fields") else tuple(items)
    if isinstance(value, dict):
        if not isinstance(other, dict) or set(other) != set(value):
            raise ValueError(f"expected a mapping with keys {sorted(value)}, got {describe(other)}")
        mapped = {key: zip_map_leaves(fn, item, other[key]) for key, item in value.items()}
        return mapped if type(value) is dict else type(value)(**mapped)
    return fn(value, other)


def describe(value: Any) -> str:
    """A short description of a value for error messages: shape and dtype for tensors, the type otherwise."""
    shape = getattr(value, "shape", None)
    if shape is not None and hasattr(value, "dtype"):
        return f"a tensor of shape {list(shape)} ({str(value.dtype).replace('torch.', '')})"
    if isinstance(value, (tuple, list)):
        return f"a {type(value).__name__} of {len(value)} items"
    return f"a {type(value).__name__}"


def leaf_shapes(value: Any) -> list:
    """The shape of every tensor leaf as a plain list (None for other leaves), in `leaves` order."""
    if isinstance(value, torch.Tensor):
        return [list(value.shape)]
    return [list(leaf.shape) if isinstance(leaf, torch.Tensor) else None for leaf in leaves(value)]


def first_input(args: tuple, kwargs: dict) -> Any:
    """A module's `.input`: its first positional argument, else its first keyword argument."""
    if args:
        return args[0]
    return next(iter(kwargs.values()))

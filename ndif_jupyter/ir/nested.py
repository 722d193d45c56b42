"""Nested values, walked by one set of rules: what a container is, and how each kind is taken apart and rebuilt.

Containers are tuples (named tuples too), lists, dicts (subclasses too, such as Hugging Face's ModelOutput, rebuilt
as copies) and slices (start, stop, step). Everything else is a leaf: tensors, numbers,
strings, graph references, proxies. Module inputs and outputs, graph arguments and saved values are all walked here.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import torch

_CONTAINERS = (tuple, list, dict, slice)
SAVEABLE = (torch.Tensor, int, float, bool, str, type(None))
"""The leaves a saved value keeps; any other (a key-value cache object) is saved as None."""


def children(value: Any) -> Sequence[Any]:
    """The items of a container, in walking order (a dict's values, a slice's start, stop and step)."""
    if isinstance(value, (tuple, list)):
        return value
    if isinstance(value, dict):
        return list(value.values())
    if isinstance(value, slice):
        return (value.start, value.stop, value.step)
    return ()


def rebuild(like: Any, items: list[Any]) -> Any:
    """A container of the same kind as `like` holding `items` (in `children` order)."""
    if type(like) is tuple:
        return tuple(items)
    if isinstance(like, tuple):
        return type(like)(*items) if hasattr(like, "_fields") else tuple(items)
    if isinstance(like, list):
        return items
    if isinstance(like, dict):
        if type(like) is dict:
            return dict(zip(like.keys(), items))
        copied = copy.copy(like)  # keeps what the subclass adds: a ModelOutput's fields, a defaultdict's factory
        for key, item in zip(like.keys(), items):
            copied[key] = item
        return copied
    if isinstance(like, slice):
        return slice(*items)
    raise TypeError(f"{type(like).__name__} is not a container")


def map_leaves(fn: Callable[[Any], Any], value: Any) -> Any:
    """The same structure with `fn` applied to every leaf."""
    if not isinstance(value, _CONTAINERS):
        return fn(value)
    items = [map_leaves(fn, item) if isinstance(item, _CONTAINERS) else fn(item) for item in children(value)]
    return rebuild(value, items)


def iter_leaves(value: Any) -> Iterator[Any]:
    """Every leaf of a nested structure, in the order `map_leaves` visits them."""
    if not isinstance(value, _CONTAINERS):
        yield value
        return
    pending = [iter(children(value))]
    while pending:
        for item in pending[-1]:
            if isinstance(item, _CONTAINERS):
                pending.append(iter(children(item)))
                break
            yield item
        else:
            pending.pop()


def leaves(value: Any) -> list[Any]:
    """Every leaf of a nested structure, as a list."""
    return list(iter_leaves(value))


def any_leaf(predicate: Callable[[Any], bool], value: Any) -> bool:
    """Whether some leaf satisfies `predicate` (stopping at the first that does)."""
    return any(predicate(leaf) for leaf in iter_leaves(value))


def iter_containers(value: Any) -> Iterator[Any]:
    """Every container inside `value` (itself included), outermost first."""
    if isinstance(value, _CONTAINERS):
        yield value
        for item in children(value):
            if isinstance(item, _CONTAINERS):
                yield from iter_containers(item)


def zip_map_leaves(fn: Callable[[Any, Any], Any], value: Any, other: Any) -> Any:
    """Like `map_leaves`, over two structures of the same shape, leaf by leaf; raises ValueError where they differ.

    `value` gives the structure; `other` may hold any sequence where `value` has a tuple or list.
    """
    if isinstance(value, (tuple, list)):
        if not isinstance(other, (tuple, list)) or len(other) != len(value):
            raise ValueError(f"expected a sequence of {len(value)} items, got {describe(other)}")
        return rebuild(value, [zip_map_leaves(fn, a, b) for a, b in zip(value, other)])
    if isinstance(value, dict):
        if not isinstance(other, dict) or set(other) != set(value):
            raise ValueError(f"expected a mapping with keys {sorted(value)}, got {describe(other)}")
        return rebuild(value, [zip_map_leaves(fn, item, other[key]) for key, item in value.items()])
    return fn(value, other)


def labelled_leaves(name: str, value: Any) -> Iterator[tuple[str, Any]]:
    """Every leaf of nested lists, tuples and dicts with a label that says where it is (`hs[3]`, `d['key']`).

    Keys of a dict at the top (an empty `name`) label its items by themselves. Slices are leaves here.
    """
    if isinstance(value, (list, tuple)):
        for index, item in enumerate(value):
            yield from labelled_leaves(f"{name}[{index}]", item)
    elif isinstance(value, dict):
        for key, item in value.items():
            yield from labelled_leaves(f"{name}[{key!r}]" if name else str(key), item)
    else:
        yield name, value


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
    return [list(leaf.shape) if isinstance(leaf, torch.Tensor) else None for leaf in iter_leaves(value)]


def first_input(args: tuple, kwargs: dict) -> Any:
    """A module's `.input`: its first positional argument, else its first keyword argument."""
    if args:
        return args[0]
    return next(iter(kwargs.values()))


def value_bytes(value: Any) -> int:
    """The bytes of the tensors in a value, each counted as its own elements (views as if they were copies)."""
    if isinstance(value, torch.Tensor):
        return value.numel() * value.element_size()
    return sum(leaf.numel() * leaf.element_size() for leaf in iter_leaves(value) if isinstance(leaf, torch.Tensor))

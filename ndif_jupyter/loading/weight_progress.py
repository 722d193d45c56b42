"""Weight loading shown as one progress line of ours instead of transformers' own bar."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from ..progress import ProgressLine


class _Steps:
    """What transformers' progress-bar hook returns: the wrapped iterable, counted on the progress line."""

    def __init__(self, line: ProgressLine, title: str, iterable: Any, total: int | None):
        self.line, self.title, self.iterable = line, title, iterable
        self.total = total if total is not None else _length(iterable)
        self.done = 0

    def __iter__(self) -> Iterator[Any]:
        for item in self.iterable or ():
            yield item
            self.update()

    def update(self, count: int = 1) -> None:
        self.done += count
        of = f"/{self.total}" if self.total else ""
        self.line.update(f"{self.title}: {self.done}{of} tensors")

    @property
    def n(self) -> int:
        return self.done

    def __enter__(self) -> _Steps:
        return self

    def __exit__(self, *exc: Any) -> None:
        return None

    def __getattr__(self, name: str) -> Any:  # set_description, set_postfix, close, refresh: nothing to do here
        return lambda *args, **kwargs: None


def _length(iterable: Any) -> int | None:
    try:
        return len(iterable)
    except TypeError:
        return None


@contextmanager
def weight_loading(name: str, device: Any) -> Iterator[None]:
    """Shows "Loading the weights of NAME on DEVICE: n/N tensors", then "Loaded NAME on DEVICE in 1.2 s"."""
    from transformers.utils import logging as hf_logging

    line = ProgressLine()
    title = f"Loading the weights of {name} on {device}"
    line.update(title, force=True)
    started = time.monotonic()

    def hook(factory: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        return _Steps(line, title, args[0] if args else kwargs.get("iterable"), kwargs.get("total"))

    previous = hf_logging.set_tqdm_hook(hook)
    try:
        yield
    except BaseException:
        line.finish(f"Loading the weights of {name} failed")
        raise
    finally:
        hf_logging.set_tqdm_hook(previous)
    line.finish(f"Loaded {name} on {device} in {time.monotonic() - started:.1f} s")

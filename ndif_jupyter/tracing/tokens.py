"""`.t(i)`: token `i` of an invoke's own prompt, as an index into a traced value, whatever padding the batch adds."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import torch

from ..errors import TraceError
from ..ir.nested import describe
from ..ir.source import Source

if TYPE_CHECKING:
    from .invoker import Invoker


def token_key(meta: Any, invoker: Invoker | None, step: int, cached: bool, index: int, source: Source | None) -> tuple:
    """The getitem key that selects token `index` of `invoker`'s prompt in a value of shape `meta.shape`.

    `step` is the generation step the value belongs to; `cached` says whether that step's forward sees only its new
    token (the KV cache). The token dimension is dimension 1, or 0 for a value without its batch dimension.
    A negative index counts from the end, where padding (on the left) never is.
    """
    __tracebackhide__ = True
    if not isinstance(meta, torch.Tensor) or meta.ndim == 0 or invoker is None:
        raise TraceError(f"`.t({index})` indexes the tokens of a tensor, but this value is {describe(meta)}.", source)
    sequence = 1 if cached else invoker.length + step
    if meta.ndim >= 2 and meta.shape[1] == sequence:
        prefix: tuple = (slice(None),)
        pads = [0] * invoker.forward_rows if cached else invoker.forward_pads
    elif meta.shape[0] == sequence:
        prefix = ()
        pads = [0] if cached else sorted(set(invoker.pads))
        if len(pads) > 1:
            raise TraceError(
                f"`.t({index})` cannot tell which prompt's padding applies to a value without its batch dimension.",
                source,
                "Index tokens before selecting a row: `value.t(i)[row]`.",
            )
    else:
        raise TraceError(
            f"`.t({index})` looks for the token dimension (length {sequence}) on dimension 1 or 0, but this value "
            f"has shape {list(meta.shape)}.",
            source,
        )
    if index < 0:
        return (*prefix, index)
    own = sequence - max(pads)
    if index >= own:
        raise TraceError(f"`.t({index})` is past the last token: this value has {own} tokens per prompt.", source)
    positions = [pad + index for pad in pads]
    if len(set(positions)) == 1:
        return (*prefix, positions[0])
    return (torch.arange(len(positions)), torch.tensor(positions))

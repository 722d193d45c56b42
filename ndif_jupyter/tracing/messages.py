"""The text of tracing's messages: operations as the user wrote them, and why a value cannot be read."""

from __future__ import annotations

from typing import Any

import torch

from ..ir.graph import Node
from ..ir.nested import describe
from .proxy import Proxy

# fmt: off
_OP_SYMBOLS = {
    "add": "+", "sub": "-", "mul": "*", "truediv": "/", "floordiv": "//", "mod": "%", "pow": "**", "matmul": "@",
    "eq": "==", "ne": "!=", "lt": "<", "le": "<=", "gt": ">", "ge": ">=", "getitem": "[...]", "setitem": "[...] =",
}
# fmt: on


def op_text(op: str) -> str:
    """An operation as the user wrote it: `+` for add, `.mean` for tensor.mean."""
    return _OP_SYMBOLS.get(op, op.replace("tensor.", "."))


_UNCONDITIONAL_TEXT = {
    "backward": "A backward pass",
    "grad": "Reading `.grad`",
    "set_grad": "Setting `.grad`",
    "trainable": "`tracer.trainable(...)`",
    "module.skip": "Skipping a module",
    "stop": "`tracer.stop()`",
}


def unconditional_text(op: str) -> str:
    """Why `op` cannot be recorded under `tracer.cond(...)`."""
    what = _UNCONDITIONAL_TEXT.get(op, f"`{op}`")
    return f"{what} cannot depend on a condition: it changes how the whole run goes, not one value."


def none_saved_text(path: str | None) -> str:
    """What saving a value that is always None says, with the likely reason for attention weights."""
    text = "This value is None when the model runs, so `.save()` keeps None."
    if path is not None and "attn" in path:
        text += (
            " Attention weights are not computed with sdpa attention (the default): load the model with "
            '`attn_implementation="eager"`, or compute them from the queries and keys of '
            "`.self_attn.ops.attention_interface.inputs`."
        )
    return text


def operand_text(args: tuple) -> str:
    """The operands of a failing operation, briefly: shapes and dtypes of tensors, the start of other values."""
    texts = []
    for arg in args:
        meta = arg.meta if isinstance(arg, Proxy) else arg
        texts.append(describe(meta) if isinstance(meta, torch.Tensor) else repr(meta)[:40])
    return ", ".join(texts)


def value_not_ready_text(node: Node, recording: bool, missing: str | None, failure: str | None) -> str:
    """Why `.value` of `node` cannot be read: the block still records, the value was not saved, or never computed."""
    where = node.source.describe() if node.source else "  (unknown line)"
    if recording:
        return (
            "`.value` is read inside the block that computes it; the graph runs when the `with` block ends.\n"
            f"The value was recorded at:\n{where}\nRead `.value` after the block."
        )
    if not node.saved:
        return f"This value was not saved.\nIt was recorded at:\n{where}\nCall `.save()` on it inside the block."
    if missing is not None:
        return f"This value was never computed: {missing}.\nIt was recorded at:\n{where}"
    return f"This value has no result: {failure or 'the graph did not run'}.\nIt was recorded at:\n{where}"


def session_waiting_text(node: Node) -> str:
    """Why `.value` of a value of a session's block cannot be read yet."""
    where = node.source.describe() if node.source else "  (unknown line)"
    saved = "" if node.saved else " (save it with `.save()` in its block to read it then)"
    return (
        "This value's block belongs to a session (`with model.session():`), whose blocks run together when it ends.\n"
        f"The value was recorded at:\n{where}\nRead `.value` after the session{saved}, or use the value itself in a "
        "later block of the session."
    )


def unsupported_attribute_text(meta: Any, name: str) -> str:
    """Why `.name` of a traced value cannot be recorded."""
    return (
        f"`.{name}` cannot be recorded on a traced value ({describe(meta)}): it is not a tensor method "
        "an intervention graph allows. See ndif_jupyter.operations for the allowed ones."
    )

"""The allowlist of tensor operations a graph may contain, by name, with the function that runs each.

Tracing refuses any operation not named here, and the executor runs only these, so the same list bounds what a
graph can do locally and on a server.
"""

from __future__ import annotations

import operator
from collections.abc import Callable
from typing import Any, Literal

import torch

# fmt: off
OPERATORS: dict[str, Callable[..., Any]] = {
    "add": operator.add, "sub": operator.sub, "mul": operator.mul, "truediv": operator.truediv,
    "floordiv": operator.floordiv, "mod": operator.mod, "pow": operator.pow, "matmul": operator.matmul,
    "and": operator.and_, "or": operator.or_, "xor": operator.xor, "lshift": operator.lshift, "rshift": operator.rshift,
    "neg": operator.neg, "pos": operator.pos, "abs": operator.abs, "invert": operator.invert,
    "eq": operator.eq, "ne": operator.ne, "lt": operator.lt, "le": operator.le, "gt": operator.gt, "ge": operator.ge,
    "iadd": operator.iadd, "isub": operator.isub, "imul": operator.imul, "itruediv": operator.itruediv,
    "getitem": operator.getitem,
}
# fmt: on


def _setitem(target: Any, key: Any, value: Any) -> None:
    if isinstance(target, torch.Tensor) and isinstance(value, torch.Tensor):
        value = value.to(device=target.device, dtype=target.dtype)
    target[key] = value


OPERATORS["setitem"] = _setitem

TENSOR_METHODS = frozenset(
    """
    abs abs_ add add_ all amax amin any argmax argmin argsort bfloat16 bmm bool chunk clamp clamp_ clip clone
    contiguous copy_ cos cpu cumsum detach diag diagonal diff div div_ dot double eq exp expand expand_as fill_
    flatten flip float gather ge gt half index_fill index_fill_ index_select int isfinite isnan item le log log_softmax
    logsumexp long lt masked_fill masked_fill_ matmul max mean min mm mul mul_ narrow ne neg neg_ nan_to_num norm
    normal_ outer permute pow prod reciprocal relu repeat repeat_interleave reshape reshape_as roll round rsqrt
    scatter scatter_ scatter_add select sigmoid sign sin softmax sort split sqrt square squeeze std sub sub_ sum
    t tanh to tolist topk transpose tril triu type_as unbind unflatten unsqueeze var view view_as where zero_
""".split()
)

TENSOR_PROPERTIES = frozenset({"T", "mT", "H", "mH"})

TORCH_FUNCTIONS = frozenset(
    """
    torch.abs torch.all torch.allclose torch.amax torch.amin torch.any torch.argmax torch.argmin torch.argsort
    torch.bmm torch.cat torch.chunk torch.clamp torch.clone torch.concat torch.cos torch.cosine_similarity
    torch.cumsum torch.diag torch.diagonal torch.dist torch.dot torch.einsum torch.exp torch.flatten torch.flip
    torch.full_like torch.gather torch.index_select torch.isclose torch.isnan torch.log torch.log_softmax
    torch.logsumexp torch.masked_fill torch.matmul torch.max torch.maximum torch.mean torch.min torch.minimum
    torch.mm torch.mul torch.nan_to_num torch.narrow torch.norm torch.ones_like torch.outer torch.permute
    torch.prod torch.rand_like torch.randn_like torch.relu torch.reshape torch.roll torch.rsqrt torch.sigmoid
    torch.sign torch.sin torch.softmax torch.sort torch.split torch.sqrt torch.square torch.squeeze torch.stack
    torch.std torch.sub torch.sum torch.tanh torch.tensordot torch.topk torch.transpose torch.tril torch.triu
    torch.unbind torch.unsqueeze torch.var torch.where torch.zeros_like torch.add torch.div
    torch.linalg.norm torch.linalg.vector_norm torch.linalg.matrix_norm
    torch.nn.functional.softmax torch.nn.functional.log_softmax torch.nn.functional.cosine_similarity
    torch.nn.functional.normalize torch.nn.functional.relu torch.nn.functional.gelu torch.nn.functional.silu
    torch.nn.functional.layer_norm torch.nn.functional.linear torch.nn.functional.kl_div
    torch.nn.functional.cross_entropy torch.nn.functional.mse_loss torch.nn.functional.one_hot
    torch.nn.functional.pad torch.nn.functional.dropout
""".split()
)


def _resolve(dotted: str) -> Callable[..., Any]:
    target: Any = torch if dotted.startswith("torch.") else None
    for part in dotted.split(".")[1:]:
        target = getattr(target, part)
    return target


def _tensor_method(name: str) -> Callable[..., Any]:
    def call(tensor: Any, *args: Any, **kwargs: Any) -> Any:
        return getattr(tensor, name)(*args, **kwargs)

    call.__name__ = name
    return call


def _tensor_property(name: str) -> Callable[..., Any]:
    def read(tensor: Any) -> Any:
        return getattr(tensor, name)

    read.__name__ = name
    return read


OPERATIONS: dict[str, Callable[..., Any]] = dict(OPERATORS)
OPERATIONS.update({f"tensor.{name}": _tensor_method(name) for name in TENSOR_METHODS})
OPERATIONS.update({f"tensor.{name}": _tensor_property(name) for name in TENSOR_PROPERTIES})
OPERATIONS.update({name: _resolve(name) for name in TORCH_FUNCTIONS})

MODULE_EVENTS = frozenset(
    {
        "module.output",
        "module.input",
        "module.inputs",
        "module.set_output",
        "module.set_input",
        "module.set_inputs",
        "module.skip",
        "module.call",
    }
)
MODEL_READS = frozenset({"module.weight"})
"""Reading a module's weight or buffer (`model.lm_head.weight`): no event, the value as the model holds it."""
CONTROL_OPS = frozenset({"stop", "cond", "log"})
"""`stop`: a trace's forward pass ends as soon as every node of the graph has run. `cond`: whether its predicate (one
value) holds; the nodes recorded under it (`ir.graph.CONDITION`) run only when it does. `log`: its values, kept
and printed by the kernel after the run."""

TOLIST_LIMIT = 65_536
"""The most elements `.tolist()` turns into graph values; larger tensors stay tensors."""


def _meta_item(tensor: torch.Tensor) -> torch.Tensor:
    if tensor.numel() != 1:
        raise ValueError(f"a tensor of {tensor.numel()} elements has no single item; reduce it first (`.sum()`)")
    return torch.empty((), dtype=tensor.dtype, device="meta")


def _meta_tolist(tensor: torch.Tensor) -> Any:
    if tensor.numel() > TOLIST_LIMIT:
        raise ValueError(f"a list of {tensor.numel()} numbers is past the {TOLIST_LIMIT:,} a graph keeps as numbers")
    if tensor.ndim == 0:
        return _meta_item(tensor)
    return [_meta_tolist(row) for row in tensor.unbind(0)]


def _number_as_index(key: Any) -> Any:
    """An index key with each stand-in for a Python integer (a 0-dimensional integer meta tensor) as 0, which indexes
    to the same shape and which meta tensors can index with."""

    def plain(part: Any) -> Any:
        is_number = isinstance(part, torch.Tensor) and part.ndim == 0 and part.device.type == "meta"
        return 0 if is_number and not part.dtype.is_floating_point and part.dtype != torch.bool else part

    return tuple(plain(part) for part in key) if isinstance(key, tuple) else plain(key)


def _meta_getitem(target: Any, key: Any) -> Any:
    return OPERATORS["getitem"](target, _number_as_index(key))


def _meta_setitem(target: Any, key: Any, value: Any) -> None:
    OPERATORS["setitem"](target, _number_as_index(key), value)


META_OPERATIONS: dict[str, Callable[..., Any]] = {
    "tensor.item": _meta_item,
    "tensor.tolist": _meta_tolist,
    "getitem": _meta_getitem,
    "setitem": _meta_setitem,
}
"""How operations run on meta values where their own function cannot: `.item()` and `.tolist()` give Python numbers,
stood in for by 0-dimensional meta tensors, which indexing then takes as integers."""


def meta_operation(op: str) -> Callable[..., Any]:
    """The function that computes `op` on meta values, for shape checks."""
    return META_OPERATIONS.get(op) or OPERATIONS[op]


GRADIENT_OPS = frozenset({"backward", "grad", "set_grad", "trainable"})
"""The operations of a gradient run: `backward` (of a loss, once per trace, after the forward pass), `grad` and
`set_grad` (read or replace the gradient reaching a module value or a trainable tensor), `trainable` (a constant
tensor whose gradient the run computes). The executor runs them itself (execution/gradients.py)."""

UNCONDITIONAL = GRADIENT_OPS | {"module.skip", "stop"}
"""Operations that cannot run under `tracer.cond(...)`: they change how the whole run goes, not one value."""

EventPhase = Literal["pre", "post"]
GETTER_PHASES: dict[str, EventPhase] = {"module.output": "post", "module.input": "pre", "module.inputs": "pre"}
"""The module events that read a value, and whether they happen before the module runs (pre) or after (post)."""
SETTER_PHASES: dict[str, EventPhase] = {
    "module.set_output": "post",
    "module.set_input": "pre",
    "module.set_inputs": "pre",
    "module.skip": "pre",
}
"""The module events that replace a value, and when (`module.skip`: the module does not run, and its output is the
value given, which must exist before the module's input)."""

_DUNDER_OPERATORS = {f"__{name}__": name for name in OPERATORS if name not in ("and", "or", "setitem")}
_DUNDER_OPERATORS.update({"__and__": "and", "__or__": "or", "__div__": "truediv"})
_REVERSED_DUNDERS = {
    f"__r{name}__": name
    for name in (
        "add",
        "sub",
        "mul",
        "truediv",
        "floordiv",
        "mod",
        "pow",
        "matmul",
        "and",
        "or",
        "xor",
        "lshift",
        "rshift",
    )
}


def _torch_function_names() -> dict[Any, tuple[str, bool]]:
    names: dict[Any, tuple[str, bool]] = {}
    for dotted in TORCH_FUNCTIONS:
        names[_resolve(dotted)] = (dotted, False)
    for name in TENSOR_METHODS | TENSOR_PROPERTIES:
        attribute = getattr(torch.Tensor, name, None)
        if attribute is not None:
            names[getattr(attribute, "__get__", attribute) if name in TENSOR_PROPERTIES else attribute] = (
                f"tensor.{name}",
                False,
            )
    for dunder, name in _DUNDER_OPERATORS.items():
        attribute = getattr(torch.Tensor, dunder, None)
        if attribute is not None:
            names[attribute] = (name, False)
    for dunder, name in _REVERSED_DUNDERS.items():
        attribute = getattr(torch.Tensor, dunder, None)
        if attribute is not None:
            names[attribute] = (name, True)
    names[torch.Tensor.__setitem__] = ("setitem", False)
    return names


TORCH_FUNCTION_NAMES = _torch_function_names()


def operation_for_torch_function(func: Any) -> tuple[str, bool] | None:
    """The allowlisted name of a torch function or Tensor method, and whether its two operands come reversed."""
    try:
        return TORCH_FUNCTION_NAMES.get(func)
    except TypeError:
        return None

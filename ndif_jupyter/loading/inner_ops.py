"""Inner operations of a module: the functions its forward calls by name (`apply_rotary_pos_emb`, the attention
interface, `create_causal_mask`), found in the forward's source without running it, and a forward that reports each
call to a dispatcher, which may read and replace its inputs and output.

Each call site is an operation named by its callee (`repeat_kv`, then `repeat_kv_1` for a second site). Calls of
Python builtins, of classes and of names a `for` loop binds (the layers of a module list) are not operations. Only
the forward's own code is rewritten (the model's code, never a user's); a call site inside a loop reports its first
call of a forward pass. A forward whose source cannot be read or that closes over variables has no operations.
"""

from __future__ import annotations

import ast
import builtins
import inspect
import textwrap
import types
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

OPS = "ops"
"""The path segment between a module and its operations: `model.layers.0.self_attn.ops.apply_rotary_pos_emb`."""

_DISPATCH = "__ndif_inner_op__"
_FACTORY = "__ndif_forward_factory__"

Dispatch = Callable[..., Any]
"""`dispatch(name, callee, *args, **kwargs)`: runs one inner operation (calls `callee` with the arguments, or not)."""


@dataclass(frozen=True)
class InnerOperation:
    """One call site in a module's forward: its name, and the line of the model's code that calls it."""

    name: str
    line: str
    lineno: int


@dataclass(frozen=True)
class _Rewritten:
    operations: tuple[InnerOperation, ...]
    factory: types.CodeType
    function: types.FunctionType


def inner_operations(module: torch.nn.Module) -> tuple[InnerOperation, ...]:
    """The inner operations of `module`'s forward, in the order of the source."""
    rewritten = _rewritten(type(module))
    return rewritten.operations if rewritten is not None else ()


def split_path(path: str) -> tuple[str, str] | None:
    """`(module path, operation name)` of an inner operation's path, or None for a module's path."""
    owner, marker, name = path.rpartition(f".{OPS}.")
    if marker:
        return owner, name
    if path.startswith(f"{OPS}."):
        return "", path[len(OPS) + 1 :]
    return None


def operation_path(module_path: str, name: str) -> str:
    """The dotted path of operation `name` of the module at `module_path`."""
    return f"{module_path}.{OPS}.{name}" if module_path else f"{OPS}.{name}"


def instrument(module: torch.nn.Module, dispatch: Dispatch) -> Callable[[], None]:
    """Make `module`'s forward report its inner operations to `dispatch`; returns what undoes it. The forward is
    replaced on the instance (inside accelerate's wrapper where there is one), the class is left alone."""
    rewritten = _rewritten(type(module))
    if rewritten is None:
        return lambda: None
    namespace: dict[str, Any] = {}
    exec(rewritten.factory, rewritten.function.__globals__, namespace)
    forward = namespace[_FACTORY](dispatch, type(module))
    attribute = "_old_forward" if "_old_forward" in module.__dict__ else "forward"
    own = module.__dict__.get(attribute)
    setattr(module, attribute, types.MethodType(forward, module))

    def undo() -> None:
        if own is None:
            delattr(module, attribute)
        else:
            setattr(module, attribute, own)

    return undo


_REWRITTEN: dict[type, _Rewritten | None] = {}


def _rewritten(cls: type) -> _Rewritten | None:
    """The rewritten forward of a module class, made once per class."""
    if cls not in _REWRITTEN:
        _REWRITTEN[cls] = _rewrite(cls)
    return _REWRITTEN[cls]


def _rewrite(cls: type) -> _Rewritten | None:
    forward = getattr(cls, "forward", None)
    if forward is None:
        return None
    function = inspect.unwrap(forward)
    if not isinstance(function, types.FunctionType) or function.__code__.co_freevars not in ((), ("__class__",)):
        return None
    try:
        source = textwrap.dedent(inspect.getsource(function))
        lines, first_line = inspect.getsourcelines(function)
        filename = inspect.getsourcefile(function) or "<model>"
    except (OSError, TypeError):
        return None
    tree = ast.parse(source)
    definition = tree.body[0]
    if not isinstance(definition, ast.FunctionDef):
        return None
    sites = _CallSites(function.__globals__, _loop_names(definition))
    for statement in definition.body:
        sites.visit(statement)
    if not sites.found:
        return None
    operations = tuple(
        InnerOperation(name, lines[call.lineno - 1].strip(), first_line + call.lineno - 1) for name, call in sites.found
    )
    # The forward is defined inside a function that takes the dispatcher and `__class__` (for a zero-argument super).
    module = ast.parse(f"def {_FACTORY}({_DISPATCH}, __class__):\n    pass")
    factory = module.body[0]
    assert isinstance(factory, ast.FunctionDef)
    factory.body = [definition, ast.Return(ast.Name(definition.name, ast.Load()))]
    ast.fix_missing_locations(module)
    ast.increment_lineno(module, first_line - 1)
    return _Rewritten(operations, compile(module, filename, "exec"), function)


def _loop_names(definition: ast.FunctionDef) -> set[str]:
    """Names bound by `for` loops in the forward (the modules of a module list, called one by one)."""
    names: set[str] = set()
    for node in ast.walk(definition):
        if isinstance(node, (ast.For, ast.comprehension)):
            names.update(target.id for target in ast.walk(node.target) if isinstance(target, ast.Name))
    return names


class _CallSites(ast.NodeTransformer):
    """Rewrites `callee(...)` as `dispatch("callee", callee, ...)` for each call of a name that is an operation."""

    def __init__(self, globals_: dict[str, Any], loop_names: set[str]):
        self.globals = globals_
        self.loop_names = loop_names
        self.found: list[tuple[str, ast.Call]] = []
        self.counts: dict[str, int] = {}

    def visit_FunctionDef(self, node: ast.FunctionDef) -> ast.AST:
        return node  # a function defined inside the forward keeps its code

    visit_AsyncFunctionDef = visit_FunctionDef  # type: ignore[assignment]

    def visit_Lambda(self, node: ast.Lambda) -> ast.AST:
        return node

    def visit_Call(self, node: ast.Call) -> ast.AST:
        self.generic_visit(node)
        if not isinstance(node.func, ast.Name) or not self._is_operation(node.func.id):
            return node
        callee = node.func.id
        count = self.counts.get(callee, 0)
        self.counts[callee] = count + 1
        name = callee if count == 0 else f"{callee}_{count}"
        self.found.append((name, node))
        return ast.copy_location(
            ast.Call(
                func=ast.Name(_DISPATCH, ast.Load()),
                args=[ast.Constant(name), node.func, *node.args],
                keywords=node.keywords,
            ),
            node,
        )

    def _is_operation(self, name: str) -> bool:
        if name in self.loop_names or name in (_DISPATCH, "super"):
            return False
        if name in self.globals:
            return not isinstance(self.globals[name], type)
        return not hasattr(builtins, name)

"""Running a `%%ndif` cell body as the body of a trace or generate block, in the user's namespace, all or nothing."""

from __future__ import annotations

import builtins
import contextlib
import time
from dataclasses import dataclass
from types import CodeType
from typing import Any

from ..errors import TraceError
from ..model import Model
from ..tracing.invoker import Invoker
from ..tracing.proxy import resolve_saved
from ..tracing.source import user_source
from ..tracing.tracer import Tracer
from ..widgets.catalog import Catalog, entries_from_record
from .result import CellResult
from .running import cell_number

_MISSING = object()


@dataclass
class CompiledBody:
    """A cell body compiled so that its line numbers are the cell's (the `%%ndif` line is line 1)."""

    filename: str
    code: CodeType


def compile_body(shell: Any, header: str, body: str) -> CompiledBody:
    """Transform IPython syntax, register the cell text for tracebacks, and compile. Raises SyntaxError."""
    transformed = shell.transform_cell(body)
    shown = header.rstrip("\n") + "\n" + transformed
    filename = shell.compile.cache(shown, cell_number(shell), raw_code=shown)
    code = compile("\n" + transformed, filename, "exec", flags=shell.compile.flags, dont_inherit=True)
    return CompiledBody(filename, code)


class NamespaceTransaction:
    """The user namespace around a cell body: names bound for the body, then either kept or all restored."""

    def __init__(self, namespace: dict[str, Any]):
        self.namespace = namespace
        self.before = dict(namespace)
        self.bound: dict[str, Any] = {}

    def bind(self, names: dict[str, Any]) -> None:
        self.bound.update(names)
        self.namespace.update(names)

    def assigned(self) -> dict[str, Any]:
        """The names the body assigned: new or rebound, apart from the bindings it left alone."""
        changed = {}
        for name, value in self.namespace.items():
            if name in self.bound and value is self.bound[name]:
                continue
            if self.before.get(name, _MISSING) is not value:
                changed[name] = value
        return changed

    def commit(self, block: Tracer) -> tuple[dict[str, Any], dict[str, Any]]:
        """Keep the body's assignments, with saved values in place of their proxies.

        Returns the saved values by name, and the same names' values as recorded (the proxies), which tell where
        each saved value came from.
        """
        saved, recorded = {}, {}
        for name, value in self.assigned().items():
            concrete = resolve_saved(value, block)
            if concrete is not value:
                self.namespace[name] = concrete
                saved[name] = concrete
                recorded[name] = value
        self._unbind()
        return saved, recorded

    def rollback(self) -> None:
        """Every name as it was before the cell: new names removed, rebound ones restored."""
        for name in [name for name in self.namespace if name not in self.before]:
            del self.namespace[name]
        for name, value in self.before.items():
            if self.namespace.get(name, _MISSING) is not value:
                self.namespace[name] = value

    def _unbind(self) -> None:
        for name, value in self.bound.items():
            if self.namespace.get(name, _MISSING) is not value:
                continue
            previous = self.before.get(name, _MISSING)
            if previous is _MISSING:
                del self.namespace[name]
            else:
                self.namespace[name] = previous


class NextStep:
    """`next()` inside a cell body: the open invoke moves to the next generated token.

    `next(iterator)` and `next(iterator, default)` still behave as Python's `next`.
    """

    def __init__(self, block: Tracer):
        self._block = block

    def __call__(self, *args: Any) -> Any:
        __tracebackhide__ = True
        if args and not isinstance(args[0], int):
            return builtins.next(*args)
        invoker = self._block.current
        if invoker is None:
            raise TraceError(
                "`next()` moves an invoke to its next generated token, and no invoke is open here.",
                user_source(),
                "Call it inside `with invoke(prompt):`, or give the cell its prompts with --prompt.",
            )
        invoker.next(*args)

    def __repr__(self) -> str:
        return "<next(): the open invoke moves to the next generated token>"


def run_body(shell: Any, model: Model, block: Tracer, body: CompiledBody, invoker: Invoker | None) -> CellResult:
    """Run the body inside `block` (and inside `invoker`, if given); the namespace changes only on success."""
    __tracebackhide__ = True
    transaction = NamespaceTransaction(shell.user_ns)
    started = time.perf_counter()
    try:
        with block:
            bindings = {"model": model, "invoke": block.invoke, "next": NextStep(block), _block_name(block): block}
            if invoker is not None:
                bindings["invoker"] = invoker
            with invoker if invoker is not None else contextlib.nullcontext():
                transaction.bind(bindings)
                exec(body.code, shell.user_global_ns, shell.user_ns)
            if not block.invokes:
                raise TraceError(
                    "This cell opened no invoke, so it has no prompt to run.",
                    None,
                    "Give the cell its prompts with --prompt TEXT, or open one with `with invoke(prompt):`.",
                )
    except BaseException:
        transaction.rollback()
        raise
    saved, recorded = transaction.commit(block)
    record = block.run_record
    assert record is not None, "a block that ended without an error has its run record"
    result = CellResult.from_record(record, model.tokenizer, saved, time.perf_counter() - started)
    result.catalog = Catalog.of_run(
        record, entries_from_record(record, recorded), result.headline(), list(zip(result.prompts, result.generated))
    )
    return result


def _block_name(block: Tracer) -> str:
    return "generator" if block.kind == "generate" else "tracer"

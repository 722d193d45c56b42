"""Recording: the graph a block builds as the user's code runs: operations, `.t()`, `.save()`, checked at each line.

Module values are recorded by `ModuleAccess` (module_access.py) on top of this, and the block's lifecycle by `Tracer`.
"""

from __future__ import annotations

import enum
import warnings
from typing import TYPE_CHECKING, Any

import torch

from ..errors import TraceError, first_line
from ..ir.graph import CONDITION, GraphKind, Node, Ref
from ..ir.nested import SAVEABLE, leaves, map_leaves
from ..ir.result import ExecutionResult
from ..ir.session import SESSION_VALUE
from ..ir.source import Source
from ..operations import OPERATIONS, UNCONDITIONAL, meta_operation
from .conversion import NOT_READY, invoker_of, meta_of, ready_of, to_graph
from .messages import (
    none_saved_text,
    op_text,
    operand_text,
    session_waiting_text,
    unconditional_text,
    unsupported_attribute_text,
    value_not_ready_text,
)
from .proxy import Proxy
from .source import user_source
from .tokens import token_key

if TYPE_CHECKING:
    from .control import Condition
    from .invoker import Invoker
    from .session import SessionContext
    from .traced_model import TracedModel


class BlockState(enum.Enum):
    """Where a block is in its life: recording its body, running its graph, done, or failed."""

    RECORDING = "recording"
    WAITING = "waiting"
    """A block of a session, recorded, that runs when the session ends."""
    RUNNING = "running"
    DONE = "done"
    FAILED = "failed"


class Recording:
    """The nodes recorded so far and the values saved, for a block whose state and open invoke its subclass keeps."""

    kind: GraphKind = "trace"
    traced: TracedModel
    options: dict[str, Any]
    nodes: list[Node]
    current: Invoker | None
    state: BlockState
    failure: str | None
    result: ExecutionResult | None
    conditions: list[Condition]
    """The `tracer.cond(...)` blocks open now, innermost last: what is recorded runs only when they all hold."""
    logs: list[int]
    """The `tracer.log(...)` nodes, printed in this order after the run."""
    kept_constants: set[int]
    """Ids of tensors that go into the graph as they are, not copied: a persistent edit's, which nothing changes."""
    session: SessionContext | None
    """The session this block runs with, when it was opened inside `with model.session():`."""
    imported: dict[tuple[int, int], int]
    """The `session.value` nodes of this block by the (block, node) of the session they read."""
    _saved: list[Proxy]

    def require_invoke(self, source: Source | None) -> Invoker:
        """The open invoke, which module values need; a TraceError at `source` when none is open."""
        __tracebackhide__ = True
        self._check_recording(source)
        if self.current is None:
            raise TraceError(
                "Module values belong to a prompt, and no invoke is open.",
                source,
                "Put this line inside `with generator.invoke(prompt):`.",
            )
        return self.current

    @property
    def is_recording(self) -> bool:
        """Whether the block is still being recorded (its values are traced, not computed)."""
        return self.state is BlockState.RECORDING

    def imported_ref(self, proxy: Proxy) -> Ref | None:
        """A value of an earlier block of this block's session as a node of this block (a `session.value` node,
        made once per value, that no condition holds back); None when `proxy` is not such a value."""
        block = self.session.block_index(proxy.tracer) if self.session is not None else None
        if block is None:
            return None
        key = (block, proxy.node_id)
        if key not in self.imported:
            node = Node(len(self.nodes), SESSION_VALUE, key, {}, user_source())
            self.nodes.append(node)
            self.imported[key] = node.id
        return Ref(self.imported[key])

    def waits_in_session(self) -> bool:
        """Whether this block waits for the end of a session that is still open."""
        return self.state is BlockState.WAITING and self.session is not None and self.traced.session is self.session

    def session_place(self) -> int:
        """This block's place among its session's blocks (-1 outside one)."""
        index = self.session.block_index(self) if self.session is not None else None
        return -1 if index is None else index

    def recording_in_session(self) -> Recording | None:
        """While this block waits for its session's end: the block of that session being recorded now, if any."""
        if not self.waits_in_session():
            return None
        block = self.traced.open_block
        return block if block is not None and block.session is self.session and block.is_recording else None

    def run_now(self, op: str, args: tuple, kwargs: dict) -> Any:
        """`op` run at once on the saved values of ended blocks (a later cell's `means[3][0]` or `h.mean()`)."""
        __tracebackhide__ = True

        def value_of(leaf: Any) -> Any:
            return leaf.value if isinstance(leaf, Proxy) else leaf  # a value never saved says why it has none

        return OPERATIONS[op](*map_leaves(value_of, args), **map_leaves(value_of, kwargs))

    def record(self, op: str, args: tuple, kwargs: dict, between_blocks: bool = False) -> Proxy:
        """Record an allowlisted operation on traced values, checking it on their meta values first; with
        `between_blocks`, in this block of a session after it ended (an operation written between two blocks)."""
        __tracebackhide__ = True
        source = user_source()
        if not (between_blocks and self.waits_in_session()):
            self._check_recording(source)
        try:
            meta = meta_operation(op)(*meta_of(args, self), **meta_of(kwargs, self))
        except TraceError:
            raise
        except Exception as error:
            raise TraceError(
                f"`{op_text(op)}` fails on the traced values ({operand_text(args)}): {first_line(error)}",
                source,
                "Shapes are checked while the block is recorded, before any weights load; fix the shapes here.",
            ) from None
        node = self._add(op, to_graph(tuple(args), self, source), to_graph(dict(kwargs), self, source), source)
        operands = (args, kwargs)
        ready = max(ready_of(operands, self), self.condition_ready())
        return Proxy(self, node.id, meta, ready, invoker_of(operands, self))

    def condition_ready(self) -> tuple[int, int]:
        """The (step, event) after which every open condition is known, (-1, -1) with none open."""
        return max((condition.ready_at for condition in self.conditions), default=NOT_READY)

    def add_control(self, op: str, args: tuple, source: Source | None) -> int:
        """Record a `cond` or `log` node on graph arguments; its id."""
        return self._add(op, args, {}, source).id

    def require_recording(self, source: Source | None) -> None:
        """A TraceError at `source` unless the block is still recording."""
        __tracebackhide__ = True
        self._check_recording(source)

    def token(self, proxy: Proxy, index: int) -> Proxy:
        """`proxy.t(index)`: token `index` of its invoke's own prompt."""
        __tracebackhide__ = True
        step = max(proxy.ready_at[0], 0)
        cached = step > 0 and self.forward_options().get("use_cache", True)
        key = token_key(proxy.meta, proxy.invoker or self.current, step, cached, index, user_source())
        return self.record("getitem", (proxy, key), {})

    def mark_saved(self, proxy: Proxy) -> None:
        """`proxy.save()`: keep its value after the run (also for a block of a session that waits for its end)."""
        __tracebackhide__ = True
        source = user_source()
        if self.state is not BlockState.WAITING:
            self._check_recording(source)
        if proxy.tracer is not self:
            raise TraceError(
                "This value belongs to another block; save values inside the block that made them.", source
            )
        found = leaves(proxy.meta)
        dropped = sorted({type(leaf).__name__ for leaf in found if not isinstance(leaf, SAVEABLE)})
        if dropped and not any(isinstance(leaf, torch.Tensor) for leaf in found):
            raise TraceError(
                f"Only tensors (or tuples of them) can be saved; this value holds {', '.join(dropped)}.",
                source,
                "Index into it to the tensor you want, for example `.output[0]`.",
            )
        if proxy.meta is None:
            warnings.warn_explicit(
                none_saved_text(self._module_of(proxy.node_id)),
                UserWarning,
                source.filename if source else "<block>",
                source.lineno if source else 0,
            )
        if dropped:
            warnings.warn_explicit(
                f"This value holds {', '.join(dropped)} (a key-value cache or the like), which cannot be saved: its "
                "tensors are saved, with None in its place.",
                UserWarning,
                source.filename if source else "<block>",
                source.lineno if source else 0,
            )
        node = self.nodes[proxy.node_id]
        if not node.saved:
            node.saved = True
            self._saved.append(proxy)

    def _module_of(self, node_id: int) -> str | None:
        """The path of the module value that node `node_id` indexes into (through `getitem`s), if any."""
        node = self.nodes[node_id]
        while node.op == "getitem" and node.args and isinstance(node.args[0], Ref):
            node = self.nodes[node.args[0].id]
        return node.args[0] if node.op.startswith("module.") and node.args else None

    def forward_options(self) -> dict[str, Any]:
        """The options of the model's forward passes, as shape checks run them."""
        return dict(self.options)

    def _check_recording(self, source: Source | None = None) -> None:
        __tracebackhide__ = True
        if self.state is not BlockState.RECORDING:
            raise TraceError(
                "This block has ended; values can only be recorded inside it.",
                source or user_source(),
                "Start a new `with model.trace(...)` or `model.generate(...)` block.",
            )

    def _add(self, op: str, args: tuple, kwargs: dict, source: Source | None) -> Node:
        __tracebackhide__ = True
        if self.conditions:
            if op in UNCONDITIONAL:
                raise TraceError(
                    unconditional_text(op), source, "Move it out of the `with tracer.cond(...)` block, before it."
                )
            kwargs = {**kwargs, CONDITION: Ref(self.conditions[-1].node_id)}
        node = Node(len(self.nodes), op, args, kwargs, source)
        self.nodes.append(node)
        return node

    # ----- what proxies say -----
    def node_source(self, node_id: int) -> Source | None:
        return self.nodes[node_id].source

    def node_op(self, node_id: int) -> str:
        return self.nodes[node_id].op

    def current_source(self) -> Source | None:
        return user_source()

    def value_not_ready_message(self, node_id: int) -> str:
        if self.state is BlockState.WAITING:
            return session_waiting_text(self.nodes[node_id])
        missing = self.result.missing.get(node_id) if self.result is not None else None
        return value_not_ready_text(self.nodes[node_id], self.state is BlockState.RECORDING, missing, self.failure)

    def unsupported_attribute_message(self, proxy: Proxy, name: str) -> str:
        return unsupported_attribute_text(proxy.meta, name)

"""Tracer: a `with model.trace()/generate()` block: its lifecycle, its invokes, and running its graph at the end.

What the block records is built in layers: operations, `.t()` and `.save()` (`recording`), module values
(`module_access`), gradients (`gradients`); values cross into the graph by `conversion`; the finished run is handed
out as a `RunRecord`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any, Literal

import torch

from ..errors import ExecutionError, TraceError
from ..ir.graph import Graph, Invoke, Node, rows_per_prompt, sequences_per_prompt
from ..ir.nested import leaves
from ..ir.result import ExecutionResult
from ..loading.shapes import StepRecord
from .caching import ModuleCache, record_cache
from .control import Condition, record_log
from .conversion import (
    plain_options,
)
from .gradients import GradientAccess
from .invoker import Invoker
from .proxy import Proxy
from .record import InvokeTokens, RunRecord
from .recording import BlockState
from .replay import replay_edits
from .source import user_source
from .steps import Steps

if TYPE_CHECKING:
    from .session import SessionContext
    from .traced_model import TracedModel

GraphRunner = Callable[[Graph], ExecutionResult]
"""Runs a recorded graph where the block's `device_map` says and returns its result."""


class Tracer(GradientAccess):
    """Shared machinery of the generate and trace contexts.

    `traced` is the model's recording side (module tree, shape oracle, open block); `model` the object the user
    opened the block on, handed on in the run's record; `runner` runs the graph where `device_map` says.
    """

    def __init__(
        self,
        traced: TracedModel,
        model: Any,
        runner: GraphRunner,
        device_map: Any,
        options: dict[str, Any],
        use_edits: bool = True,
    ):
        __tracebackhide__ = True
        self.traced = traced
        self.model = model
        self.runner = runner
        self.device_map = device_map
        self.options = plain_options(self._prepared(options))
        self.nodes: list[Node] = []
        self.invokes: list[Invoker] = []
        self.current: Invoker | None = None
        self.state = BlockState.RECORDING
        self.failure: str | None = None
        self.batch_length = 0
        self.result: ExecutionResult | None = None
        self._run_record: RunRecord | None = None
        self._saved: list[Proxy] = []
        self.conditions: list[Condition] = []
        self.logs: list[int] = []
        self.use_edits = use_edits
        """Whether the model's persistent edits apply to this block (`edits=False` leaves them out)."""
        self.kept_constants: set[int] = set()
        self.session: SessionContext | None = None
        self.imported: dict[tuple[int, int], int] = {}
        self._step_records: dict[tuple[int, int, int], StepRecord] = {}
        self._touched: dict[tuple[int, int], set[str]] = {}
        self._skipped: dict[tuple[int, int], set[str]] = {}
        self.backward_node: int | None = None
        self.trainables: list[tuple[Proxy, torch.Tensor]] = []
        self.trainable_grads: list[tuple[torch.Tensor, Proxy]] = []

    joins_session = True
    """Whether the block, opened inside `with model.session():`, runs with the session's blocks at its end."""

    # ----- the block -----
    def __enter__(self):
        self.traced.begin(self)
        self.session = self.traced.session if self.joins_session else None
        return self

    def __exit__(self, exc_type, exc, tb) -> Literal[False]:
        __tracebackhide__ = True
        self.current = None
        self.conditions.clear()
        self.traced.end(self)
        if exc_type is not None:
            self.state = BlockState.FAILED
            self.failure = self._failed_text
            return False
        self._complete()
        return False

    _failed_text = "the block raised an error, so the graph did not run"

    def _prepared(self, options: dict[str, Any]) -> dict[str, Any]:
        """The block's options as the user gave them, completed and checked by the kind of block."""
        return dict(options)

    def _complete(self) -> None:
        """What the block does when its body ends without an error: run its graph, or, inside a session, wait for
        the session's end."""
        __tracebackhide__ = True
        self._check_runnable()
        if self.session is None:
            self._run()
            return
        self.session.add(self)
        self.state = BlockState.WAITING

    def invoke(self, prompt: Any) -> Invoker:
        """Add prompts to the batch; interventions inside `with tracer.invoke(...)` apply to them alone."""
        __tracebackhide__ = True
        self._check_recording()
        try:
            rows = self.traced.loaded.tokenize(prompt)
        except ValueError as error:
            raise TraceError(str(error), user_source()) from None
        return Invoker(self, len(self.invokes), rows)

    def enter_invoke(self, invoker: Invoker) -> None:
        """`invoker` becomes the open invoke (invokes do not nest, and each is used once)."""
        __tracebackhide__ = True
        self._check_recording()
        if self.current is not None:
            raise TraceError("Invokes cannot be nested.", user_source(), "Close one invoke before opening the next.")
        if invoker.index != len(self.invokes):
            raise TraceError("This invoke was already used.", user_source())
        self.invokes.append(invoker)
        self.current = invoker
        if self.use_edits and self.traced.edits:
            steps = range(self.options["max_new_tokens"] if self.kind == "generate" else 1)
            replay_edits(self, invoker, self.traced.edits.values(), steps)

    def exit_invoke(self, invoker: Invoker) -> None:
        if self.current is invoker:
            self.current = None

    def advance(self, invoker: Invoker, count: int) -> None:
        """`invoker.next(count)`: its later interventions apply `count` generated tokens later."""
        __tracebackhide__ = True
        if self.kind != "generate":
            raise TraceError(
                "`next()` moves to the next generated token; a trace runs one forward pass and has none.",
                user_source(),
                "Use `model.generate(max_new_tokens=N)` to intervene on generated tokens.",
            )
        limit = self.options["max_new_tokens"]
        if invoker.step + count >= limit:
            raise TraceError(
                f"`next()` goes past the last generated token: max_new_tokens={limit} gives steps 0 to {limit - 1}, "
                f"and this would be step {invoker.step + count}.",
                user_source(),
                f"Raise max_new_tokens to at least {invoker.step + count + 1}, or remove this `next()`.",
            )
        invoker.step += count

    def cache(
        self, modules: Iterable[Any] | None = None, *, names: Literal["paths", "transformer_lens"] = "paths"
    ) -> ModuleCache:
        """Save the output of every module at the open invoke's step, in one call: a mapping by module path (or,
        with `names="transformer_lens"`, by TransformerLens hook name for GPT-2 and Llama models). `modules`
        limits it to some modules (Envoys or dotted paths). Entries are traced values inside the block and tensors
        after it."""
        __tracebackhide__ = True
        return record_cache(self, modules, names)

    def stop(self) -> None:
        """End this trace's forward pass as soon as every value the block needs has been computed (the modules
        after the last one it reads do not run)."""
        __tracebackhide__ = True
        source = user_source()
        self._check_recording(source)
        if self.kind != "trace":
            raise TraceError(
                "`stop()` ends a trace's forward pass early; a generation needs every forward pass to the end.",
                source,
                "Lower max_new_tokens to generate fewer tokens.",
            )
        if not any(node.op == "stop" for node in self.nodes):
            self._add("stop", (), {}, source)

    def cond(self, predicate: Any) -> Condition:
        """`with tracer.cond(predicate):` records interventions that run only where `predicate`, a traced value of
        one element (`h.norm() > 10`, `(logits.argmax() == 42)`, `x.item() > 0.5`), holds at run time."""
        __tracebackhide__ = True
        return Condition(self, predicate)

    def log(self, *values: Any) -> None:
        """Print `values` (traced values, tensors, text) as `print` would, after the block has run."""
        __tracebackhide__ = True
        record_log(self, values)

    @property
    def steps(self) -> Steps:
        """The open invoke's generation steps: `for step in generator.steps:` (every step), `generator.steps[2:5]`."""
        __tracebackhide__ = True
        if self.kind != "generate":
            raise TraceError(
                "`steps` are the generated tokens of a generation; a trace runs one forward pass and has none.",
                user_source(),
                "Use `model.generate(max_new_tokens=N)` to intervene on generated tokens.",
            )
        return Steps(self)

    @property
    def output(self) -> torch.Tensor:
        """The generated token ids, [batch, prompt + new] on the CPU, left-padded across invokes."""
        output = self.result.output_ids if self.result is not None else None
        if output is None:
            raise AttributeError(
                "This block has no output yet: it is read after the `with` block, and only `generate` produces one."
            )
        return output

    @property
    def row_copies(self) -> int:
        """How many rows each prompt fills in the forward passes: its beams, or its sampled sequences."""
        return rows_per_prompt(self.kind, self.options)

    @property
    def sequences_per_prompt(self) -> int:
        """How many rows of generated ids each prompt gets back (`num_return_sequences`)."""
        return sequences_per_prompt(self.kind, self.options)

    # ----- running -----
    def graph(self) -> Graph:
        """The recorded graph, as plain data."""
        return Graph(
            self.kind,
            self.nodes,
            [Invoke(invoker.rows) for invoker in self.invokes],
            dict(self.options),
            self.traced.loaded.pad_token_id,
            sum(
                leaf.numel() * leaf.element_size()
                for proxy in [*self._saved, *(grad for _, grad in self.trainable_grads)]
                for leaf in leaves(proxy.meta)
                if isinstance(leaf, torch.Tensor)
            ),
        )

    def _check_runnable(self) -> None:
        __tracebackhide__ = True
        if not self.invokes:
            self.fail("the block had no invoke, so nothing ran")
            raise TraceError(
                "This block has no prompt to run.", None, "Add `with generator.invoke(prompt):` inside the block."
            )
        self.batch_length = max(invoker.length for invoker in self.invokes)

    def _run(self) -> None:
        __tracebackhide__ = True
        self.state = BlockState.RUNNING
        try:
            result = self.runner(self.graph())
        except BaseException as error:
            self.fail(f"running the graph failed ({type(error).__name__})")
            if isinstance(error, (ExecutionError, TraceError)):
                raise error.with_traceback(None) from None
            raise
        self.finish(result)

    def fail(self, failure: str) -> None:
        """The block will not run: its values say `failure` when read."""
        self.state = BlockState.FAILED
        self.failure = failure

    def finish(self, result: ExecutionResult) -> None:
        """The block ran: its saved values, the gradients of its trainables and its logs from `result`."""
        self.state = BlockState.DONE
        self.result = result
        for proxy in self._saved:
            if proxy.node_id in result.saved:
                proxy.set_value(result.saved[proxy.node_id])
        for tensor, grad in self.trainable_grads:
            if grad.node_id in result.saved:
                value = result.saved[grad.node_id].to(tensor.device, tensor.dtype)
                tensor.grad = value if tensor.grad is None else tensor.grad + value
        for node_id in self.logs:
            if node_id in result.saved:
                print(*result.saved[node_id])

    @property
    def run_record(self) -> RunRecord | None:
        """The record of the run once the block has run without an error (made on first use), else None."""
        if self._run_record is None and self.state is BlockState.DONE and self.result is not None:
            self._run_record = self._record_of(self.result)
        return self._run_record

    def _record_of(self, result: ExecutionResult) -> RunRecord:
        invokes = []
        sequences = self.sequences_per_prompt
        for invoker in self.invokes:
            generated: list[list[int]] = []
            if self.kind == "generate" and result.output_ids is not None:
                own = invoker.output
                generated = [own[index, invoker.length :].tolist() for index in range(own.shape[0])]
            prompts = [list(row) for row in invoker.rows for _ in range(sequences)]
            invokes.append(InvokeTokens(prompts, generated))
        return RunRecord(
            self.kind,
            self.model,
            self.traced.loaded.name,
            self.device_map,
            self.nodes,
            invokes,
            result.saved,
            [proxy.node_id for proxy in self._saved],
            result.output_ids,
        )

"""The cost of a request before it runs: every node's shape and dtype on the meta device, and from them the memory
its values hold at their peak, the bytes it saves, the tokens its forwards see and its forward passes.

The walk is the executor's own: nodes run in recorded order among those whose inputs exist, module events when the
model reaches that module (in the order the model calls them), and a value is let go when its last reader ran. The
executor checks, as it runs, that every module value has the shape the request declares, so the sizes counted here
are the sizes it holds.
"""

from __future__ import annotations

import heapq
from dataclasses import asdict, dataclass
from typing import Any

import torch

from ..errors import ProtocolError, first_line
from ..indexing import INDEXING_OPS, embedding_problem, index_problem
from ..ir.gradients import GRADIENT_READERS, gradient_target
from ..ir.graph import Graph, Node, Ref, node_refs, operation_kwargs, sequences_per_prompt
from ..ir.nested import first_input, iter_leaves, leaves, map_leaves, value_bytes
from ..ir.session import SESSION_VALUE, Request, kept_values
from ..loading.inner_ops import split_path
from ..loading.loaded import LoadedModel
from ..loading.shapes import FORWARD_OPTIONS_FOR_GENERATE, StepRecord, to_meta
from ..operations import GETTER_PHASES, SETTER_PHASES, meta_operation
from .limits import Limits, cut
from .validation import in_block, where


@dataclass(frozen=True)
class Cost:
    """What a request will take: `peak_bytes` of graph values (constants and saved copies included) at once,
    `saved_bytes` of result, `tokens` through the model's forwards, `forward_passes` of the model and its modules."""

    peak_bytes: int
    saved_bytes: int
    tokens: int
    forward_passes: int
    nodes: int

    def document(self) -> dict[str, int]:
        return asdict(self)


def estimate_cost(graph: Graph, loaded: LoadedModel, limits: Limits) -> Cost:
    """The cost of running `graph` on `loaded`; ProtocolError naming the node and the limit when it is over one."""
    return _Estimate(graph, loaded, limits).run()


def estimate_request_cost(request: Request, loaded: LoadedModel, limits: Limits) -> Cost:
    """The cost of a request: a graph's, or a session's. A session's blocks run one after another, so its peak is
    the highest of its blocks', each with the values kept for it by earlier blocks; its saved bytes, tokens, forward
    passes and nodes are those of all its blocks."""
    if isinstance(request, Graph):
        return estimate_cost(request, loaded, limits)
    keep = kept_values(request)
    metas: dict[tuple[int, int], Any] = {}
    costs: list[Cost] = []
    carried = 0
    for index, graph in enumerate(request.graphs):
        with in_block(index):
            estimate = _Estimate(graph, loaded, limits, metas, keep[index], carried)
            costs.append(estimate.run())
        for node_id in keep[index]:
            metas[(index, node_id)] = estimate.metas[node_id]
            carried += value_bytes(estimate.metas[node_id])
    saved = sum(cost.saved_bytes for cost in costs)
    if saved > limits.max_result_bytes:
        raise ProtocolError(
            f"the session's saved values would be {_size(saved)}, over this server's limit of "
            f"{_size(limits.max_result_bytes)}; save less"
        )
    return Cost(
        max(cost.peak_bytes for cost in costs),
        saved,
        sum(cost.tokens for cost in costs),
        sum(cost.forward_passes for cost in costs),
        sum(cost.nodes for cost in costs),
    )


class _Estimate:
    def __init__(
        self,
        graph: Graph,
        loaded: LoadedModel,
        limits: Limits,
        imports: dict[tuple[int, int], Any] | None = None,
        keep: set[int] | None = None,
        carried: int = 0,
    ):
        """In a session: `imports`, the meta values of earlier blocks' nodes that `session.value` nodes read;
        `keep`, this block's nodes that later blocks read (kept as saved values are); `carried`, the bytes earlier
        blocks keep for later ones while this one runs."""
        self.graph = graph
        self.loaded = loaded
        self.limits = limits
        self.imports = imports or {}
        self.keep = keep or set()
        self.carried = carried
        self.steps = graph.steps
        self.forward_options = {k: v for k, v in graph.options.items() if k in FORWARD_OPTIONS_FOR_GENERATE}
        self.metas: dict[int, Any] = {}
        self.records: dict[tuple[int, int], StepRecord] = {}
        self.module_calls = 0
        self.call_tokens = 0
        self.seen: dict[tuple, Any] = {}
        self.reads = [node_refs(node) for node in graph.nodes]
        self.constant_bytes = 0
        self.constants: dict[int, torch.Tensor] = {}

    def run(self) -> Cost:
        graph = self.graph
        rows = graph.batch_size
        length = max(invoke.length for invoke in graph.invokes)
        self._check_positions(length)
        for node in graph.nodes:
            self.metas[node.id] = self._meta(node)
        saved = sum(value_bytes(self.metas[node.id]) for node in graph.nodes if node.saved)
        sequences = rows * sequences_per_prompt(graph.kind, graph.options)
        output_ids = sequences * (length + self.steps) * 8 if graph.kind == "generate" else 0
        if saved + output_ids > self.limits.max_result_bytes:
            raise ProtocolError(
                f"the saved values would be {_size(saved + output_ids)}, over this server's limit of "
                f"{_size(self.limits.max_result_bytes)}; save less (for example one position: `.output[:, -1]`)"
            )
        peak = self._peak() + self._autograd_bytes()
        if peak > self.limits.max_memory_bytes:
            raise ProtocolError(
                f"the backward pass would keep {_size(peak)} of activations and values, over this server's limit of "
                f"{_size(self.limits.max_memory_bytes)}; take gradients from a later module or use fewer tokens"
            )
        forward_tokens = rows * length + rows * (self.steps - 1)
        return Cost(
            peak,
            saved + output_ids,
            forward_tokens + self.call_tokens,
            self.steps + self.module_calls,
            len(graph.nodes),
        )

    # ----- shapes -----
    def _check_positions(self, length: int) -> None:
        config = self.loaded.config
        longest = getattr(config, "max_position_embeddings", None) or getattr(config, "n_positions", None)
        total = length + (self.steps if self.graph.kind == "generate" else 0)
        if isinstance(longest, int) and total > longest:
            raise ProtocolError(
                f"the prompt ({length} tokens) and the new tokens make {total} positions, past the model's "
                f"{longest}; use a shorter prompt or fewer new tokens"
            )

    def _meta(self, node: Node) -> Any:
        if node.op in GETTER_PHASES:
            return self._module_value(node)
        args, kwargs = self._operands(node)
        if node.op in SETTER_PHASES or node.op in ("backward", "stop"):
            return None
        if node.op == "module.weight":
            weight = getattr(self.loaded.meta_module(node.args[0]), node.args[1])
            return torch.empty_like(weight, device="meta")
        if node.op == "trainable":
            return _fresh_meta(args[0])
        if node.op == "cond":
            predicate = args[0] if len(args) == 1 else None
            if isinstance(predicate, torch.Tensor) and predicate.numel() != 1:
                raise ProtocolError(f"{where(node)}: a condition must be one value, not shape {list(predicate.shape)}")
            return None
        if node.op == "log":
            return args
        if node.op == SESSION_VALUE:
            return map_leaves(_fresh_meta, self.imports[(node.args[0], node.args[1])])
        if node.op in ("grad", "set_grad"):
            return self._gradient(node, args)
        if node.op == "module.call":
            return self._module_call(node, args[1], args[2])
        if node.op in INDEXING_OPS:
            problem = index_problem(node.op, *self._operands(node, constants_as_meta=False))
            if problem:
                raise ProtocolError(f"{where(node)}: {problem}")
        try:
            return self._operation(node.op, args, kwargs)
        except Exception as error:
            raise ProtocolError(f"{where(node)} fails on the shapes of its values: {cut(first_line(error))}") from None

    def _operation(self, op: str, args: tuple, kwargs: dict) -> Any:
        """An operation on meta values, its result remembered by the shapes, dtypes and constants it got: graphs
        repeat the same operation on the same shapes many times, and a meta kernel costs a fraction of a
        millisecond (operations that change their operand in place always run)."""
        key = _signature(op, args, kwargs)
        if key is None:
            return meta_operation(op)(*args, **kwargs)
        if key not in self.seen:
            self.seen[key] = meta_operation(op)(*args, **kwargs)
        return map_leaves(_fresh_meta, self.seen[key])

    def _operands(self, node: Node, constants_as_meta: bool = True) -> tuple[tuple, dict]:
        """A node's arguments with the meta values of the nodes they read; its constant tensors on the meta device
        (and counted), or as they are for checks that read their values."""
        metas = self.metas

        def meta(leaf: Any) -> Any:
            if isinstance(leaf, Ref):
                return metas[leaf.id]
            if isinstance(leaf, torch.Tensor) and constants_as_meta:
                if id(leaf) not in self.constants:
                    self.constants[id(leaf)] = leaf.to("meta")
                    self.constant_bytes += leaf.numel() * leaf.element_size()
                return self.constants[id(leaf)]
            if isinstance(leaf, torch.device):
                return torch.device("meta")
            return leaf

        return map_leaves(meta, node.args), map_leaves(meta, operation_kwargs(node.kwargs))

    def _record(self, invoke: int, step: int) -> StepRecord:
        key = (invoke, min(step, 1))
        if key not in self.records:
            rows = self.graph.invokes[invoke].rows
            length = self.graph.invokes[invoke].length
            rows_in_pass = len(rows) * self.graph.row_copies
            self.records[key] = self.loaded.shapes.step(rows_in_pass, length, key[1], self.forward_options)
        return self.records[key]

    def _module_value(self, node: Node) -> Any:
        path, invoke, step = node.args[:3]
        record = self._record(invoke, step).modules.get(path)
        if record is None or record.post_event < 0:
            raise ProtocolError(f"{where(node)}: `{cut(path)}` is not called during the model's forward pass")
        if node.op == "module.output":
            value = record.output
        elif node.op == "module.inputs":
            value = (record.args, record.kwargs)
        else:
            value = first_input(record.args, record.kwargs)
        declared = node.kwargs["shapes"]
        found = leaves(value)
        if len(declared) != len(found):
            raise ProtocolError(
                f"{where(node)}: its shapes name {len(declared)} values where the module has {len(found)}; "
                "record the block again against this server's model"
            )
        shapes = iter(declared)

        def sized(leaf: Any) -> Any:
            shape = next(shapes)
            if not isinstance(leaf, torch.Tensor):
                return leaf
            if shape is None:
                raise ProtocolError(f"{where(node)}: it declares no shape for a tensor of the module's value")
            if len(shape) != leaf.ndim:
                raise ProtocolError(
                    f"{where(node)}: a shape of {len(shape)} dimensions where the module's value has {leaf.ndim}"
                )
            return torch.empty(shape, dtype=leaf.dtype, device="meta")

        return map_leaves(sized, value)

    def _module_call(self, node: Node, args: tuple, kwargs: dict) -> Any:
        for leaf in iter_leaves((args, kwargs)):
            if isinstance(leaf, torch.Tensor) and leaf.ndim >= 2:
                rows = leaf.shape[0]
                tokens = leaf.shape[1] if not leaf.is_floating_point() else (leaf.shape[-2] if leaf.ndim >= 3 else 1)
                if rows > self.limits.max_batch_size:
                    raise ProtocolError(
                        f"{where(node)}: it calls the module on {rows} rows, over this server's limit of "
                        f"{self.limits.max_batch_size} prompts"
                    )
                if tokens > self.limits.max_prompt_tokens:
                    raise ProtocolError(
                        f"{where(node)}: it calls the module on {tokens} tokens, over this server's limit of "
                        f"{self.limits.max_prompt_tokens}"
                    )
                self.call_tokens += rows * tokens
                break
        self.module_calls += 1
        module = self.loaded.meta_module(node.args[0])
        problem = embedding_problem(module, node.args[1])
        if problem:
            raise ProtocolError(f"{where(node)}: {problem}")
        try:
            return to_meta(self.loaded.shapes.call(module, args, kwargs))
        except Exception as error:
            raise ProtocolError(f"{where(node)}: calling the module fails: {cut(first_line(error))}") from None

    def _gradient(self, node: Node, args: tuple) -> Any:
        target = self.metas[node.args[0].id]
        shape = node.kwargs["shapes"][0]
        if not isinstance(target, torch.Tensor) or list(target.shape) != shape:
            raise ProtocolError(f"{where(node)}: its declared shape {shape} is not the shape of its value")
        if node.op == "grad":
            return torch.empty(shape, dtype=target.dtype, device="meta")
        value = args[1]
        if isinstance(value, torch.Tensor) and torch.broadcast_shapes(value.shape, target.shape) != target.shape:
            raise ProtocolError(f"{where(node)}: a gradient of shape {list(value.shape)} cannot replace {shape}")
        return None

    # ----- memory -----
    def _autograd_bytes(self) -> int:
        """What a backward pass keeps from the forward pass: the inputs and outputs of every innermost module that
        runs after the earliest value whose gradient the graph takes (all of them for a trainable tensor or a weight),
        for every invoke. An estimate from above: autograd keeps at most these (and often less)."""
        nodes = self.graph.nodes
        if not any(node.op == "backward" for node in nodes):
            return 0
        targets = [
            target
            for node in nodes
            if node.op in GRADIENT_READERS and (target := gradient_target(nodes, node.args[0].id)) is not None
        ]
        roots = [nodes[root] for root, _ in targets]
        earliest = 0
        if roots and all(root.op in GETTER_PHASES for root in roots):
            earliest = min(self._event_rank((root.args[0], GETTER_PHASES[root.op], 0))[1] for root in roots)
        kept = 0
        for invoke in range(len(self.graph.invokes)):
            modules = self._record(invoke, 0).modules
            parents = {path.rsplit(".", 1)[0] if "." in path else "" for path in modules if path}
            for path, record in modules.items():
                if path not in parents and record.post_event >= earliest and split_path(path) is None:
                    kept += value_bytes((record.args, record.kwargs, record.output))
        return kept

    def _peak(self) -> int:
        """The most bytes the executor holds at once, walking its order: constants, live values, saved copies."""
        graph = self.graph
        sizes = {node_id: value_bytes(meta) for node_id, meta in self.metas.items()}
        held = self.carried + self.constant_bytes
        peak = held
        unread = [0] * len(graph.nodes)
        for reads in self.reads:
            for read in reads:
                unread[read] += 1
        for node_id in self._order():
            node = graph.nodes[node_id]
            held += sizes[node_id]
            if node.saved:
                held += sizes[node_id]
            if node_id in self.keep:
                held += sizes[node_id]
            if held > peak:
                peak = held
                if peak > self.limits.max_memory_bytes:
                    raise ProtocolError(
                        f"{where(node)}: the graph's values would take {_size(peak)} here, over this server's "
                        f"limit of {_size(self.limits.max_memory_bytes)}; work on fewer positions or smaller values"
                    )
            for read in self.reads[node_id]:
                unread[read] -= 1
                if unread[read] == 0:
                    held -= sizes[read]
            if unread[node_id] == 0:
                held -= sizes[node_id]
        return peak

    def _order(self) -> list[int]:
        """The order the executor runs the nodes in (the nodes it never runs left out)."""
        graph = self.graph
        reads = self.reads
        waiting = [len(r) for r in reads]
        readers: list[list[int]] = [[] for _ in graph.nodes]
        for node_id, node_reads in enumerate(reads):
            for read in node_reads:
                readers[read].append(node_id)
        events: dict[tuple, list[int]] = {}
        for node in graph.nodes:
            phase = GETTER_PHASES.get(node.op) or SETTER_PHASES.get(node.op)
            if phase is not None:
                events.setdefault((node.args[0], phase, node.args[2]), []).append(node.id)
        event_of = {node_id: key for key, ids in events.items() for node_id in ids}
        order: list[int] = []
        heap: list[int] = []

        def drain(active: tuple | None) -> None:
            while heap:
                node_id = heapq.heappop(heap)
                order.append(node_id)
                for reader in readers[node_id]:
                    waiting[reader] -= 1
                    if waiting[reader] == 0 and event_of.get(reader, active) == active:
                        heapq.heappush(heap, reader)

        for node in graph.nodes:
            if not reads[node.id] and node.id not in event_of:
                heapq.heappush(heap, node.id)
        drain(None)
        for key in sorted(events, key=self._event_rank):
            for node_id in events[key]:
                if waiting[node_id] == 0:
                    heapq.heappush(heap, node_id)
            drain(key)
        return order

    def _event_rank(self, key: tuple) -> tuple[int, int]:
        path, phase, step = key
        record = self._record(0, step).modules.get(path)
        if record is None:
            return (step, 1 << 30)
        return (step, record.pre_event if phase == "pre" else record.post_event)


def _signature(op: str, args: tuple, kwargs: dict) -> tuple | None:
    """What an operation's result depends on, as a dictionary key; None when it changes its operand in place or
    takes a value that cannot be a key."""
    if op.endswith("_") or op.startswith("i") or op == "setitem":
        return None
    try:
        return (op, _key(args), tuple((name, _key(value)) for name, value in kwargs.items()))
    except TypeError:
        return None


def _key(value: Any) -> Any:
    """A hashable stand-in for a meta operand: a tensor's shape, strides and dtype, a constant itself (nesting is
    bounded by the document's depth)."""
    if isinstance(value, torch.Tensor):
        return (value.shape, value.stride(), value.dtype)
    if value is None or value is Ellipsis or isinstance(value, (bool, int, float, str, torch.dtype, torch.device)):
        return (type(value), value)
    if isinstance(value, slice):
        return (slice, _key(value.start), _key(value.stop), _key(value.step))
    if isinstance(value, (tuple, list)):
        return (type(value), *(_key(item) for item in value))
    raise TypeError("not a key")


def _fresh_meta(leaf: Any) -> Any:
    if isinstance(leaf, torch.Tensor):
        return torch.empty_strided(leaf.shape, leaf.stride(), dtype=leaf.dtype, device="meta")
    return leaf


def _size(count: int) -> str:
    return f"{count / 1e9:.2f} GB" if count >= 1e9 else f"{count / 1e6:.1f} MB"

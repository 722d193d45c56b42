"""What a server checks in a request before it runs anything: its sizes (before the schema), allowlisted operations
and options with their values, module paths that exist, references, token ids, and its limits."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any, TypeGuard, cast

import torch

from ..errors import ProtocolError
from ..ir.gradients import GRADIENT_READERS, gradient_target
from ..ir.graph import CONDITION, Graph, Node, Ref, iter_refs, node_condition, several_sequences_problem
from ..ir.options import new_tokens_problem, option_problem
from ..ir.session import MAX_BLOCKS, SESSION_VALUE, Request, imported
from ..loading.inner_ops import inner_operations, split_path
from ..operations import CONTROL_OPS, GRADIENT_OPS, MODEL_READS, MODULE_EVENTS, OPERATIONS, UNCONDITIONAL
from .limits import MAX_DIMENSIONS, Limits, cut, quote

TRACE_OPTIONS = frozenset({"output_attentions", "output_hidden_states", "use_cache", "logits_to_keep"})
GENERATE_OPTIONS = TRACE_OPTIONS | frozenset(
    {
        "max_new_tokens",
        "min_new_tokens",
        "do_sample",
        "temperature",
        "top_k",
        "top_p",
        "min_p",
        "typical_p",
        "epsilon_cutoff",
        "eta_cutoff",
        "repetition_penalty",
        "no_repeat_ngram_size",
        "length_penalty",
        "eos_token_id",
        "bad_words_ids",
        "suppress_tokens",
        "begin_suppress_tokens",
        "renormalize_logits",
        "remove_invalid_values",
        "forced_bos_token_id",
        "forced_eos_token_id",
        "num_beams",
        "num_return_sequences",
        "seed",
    }
)
_MODULE_VALUE_EVENTS = MODULE_EVENTS - {"module.call"}


def check_sizes(document: Any, limits: Limits) -> None:
    """The limits a request document can be held to before its schema is checked: the number of blocks and nodes
    (all blocks' together), and each block's prompts, tokens and new tokens. Anything not shaped as expected is left
    to the schema."""
    if not isinstance(document, dict):
        return
    blocks = document.get("blocks")
    if isinstance(blocks, list):
        if len(blocks) > MAX_BLOCKS:
            raise ProtocolError(f"the session has {len(blocks)} blocks, over the limit of {MAX_BLOCKS}")
        blocks = [block for block in blocks if isinstance(block, dict)]
    else:
        blocks = [document]
    nodes = sum(len(block["nodes"]) for block in blocks if isinstance(block.get("nodes"), list))
    if nodes > limits.max_nodes:
        raise ProtocolError(f"the graph has {nodes} nodes, over this server's limit of {limits.max_nodes}")
    for block in blocks:
        _check_block_sizes(block, limits)


def _check_block_sizes(block: dict, limits: Limits) -> None:
    invokes = block.get("invokes")
    if isinstance(invokes, list):
        rows = [row for invoke in invokes if isinstance(invoke, list) for row in invoke]
        if len(rows) > limits.max_batch_size:
            raise ProtocolError(
                f"the batch has {len(rows)} prompts, over this server's limit of {limits.max_batch_size}"
            )
        longest = max((len(row) for row in rows if isinstance(row, list)), default=0)
        if longest > limits.max_prompt_tokens:
            raise ProtocolError(
                f"a prompt has {longest} tokens, over this server's limit of {limits.max_prompt_tokens}"
            )
    options = block.get("options")
    steps = options.get("max_new_tokens") if isinstance(options, dict) else None
    if _is_int(steps) and steps > limits.max_new_tokens:
        raise ProtocolError(f"max_new_tokens={steps} is over this server's limit of {limits.max_new_tokens}")


def validate_request(request: Request, meta_model: torch.nn.Module, limits: Limits) -> None:
    """Raise ProtocolError naming the first thing in `request` (a graph, or a session's graphs) that the server will
    not run on `meta_model`; in a session, the block it is in."""
    if isinstance(request, Graph):
        validate_graph(request, meta_model, limits)
        return
    if request.nodes > limits.max_nodes:
        raise ProtocolError(f"the session has {request.nodes} nodes, over this server's limit of {limits.max_nodes}")
    for index, graph in enumerate(request.graphs):
        with in_block(index):
            validate_graph(graph, meta_model, limits, request.graphs[:index])


@contextmanager
def in_block(index: int) -> Iterator[None]:
    """ProtocolErrors raised inside name block `index` of a session."""
    try:
        yield
    except ProtocolError as error:
        raise ProtocolError(f"block {index + 1} of the session: {error}") from None


def validate_graph(graph: Graph, meta_model: torch.nn.Module, limits: Limits, earlier: Sequence[Graph] = ()) -> None:
    """Raise ProtocolError naming the first thing in `graph` that the server will not run on `meta_model`; `earlier`
    are the blocks before it in its session, whose nodes its `session.value` nodes may read."""
    _check_size(graph, limits)
    vocabulary = cast(Any, meta_model).get_input_embeddings().num_embeddings
    _check_inputs(graph, vocabulary, limits)
    steps = _check_options(graph, limits, vocabulary)
    for node in graph.nodes:
        _check_node(node, graph, meta_model, steps, earlier)
    _check_gradients(graph)


def _check_gradients(graph: Graph) -> None:
    """At most one backward pass, in a trace; gradients only of module values and trainable tensors, with shapes."""
    backward = [node for node in graph.nodes if node.op == "backward"]
    if len(backward) > 1:
        raise ProtocolError(f"{where(backward[1])}: a graph takes at most one backward pass")
    if backward and graph.kind != "trace":
        raise ProtocolError(f"{where(backward[0])}: a backward pass is taken in a trace, not in a generation")
    for node in graph.nodes:
        if node.op == "backward" and (len(node.args) != 2 or not isinstance(node.args[0], Ref)):
            raise ProtocolError(f"{where(node)}: backward takes (loss, gradient)")
        if node.op == "trainable" and (len(node.args) != 1 or not isinstance(node.args[0], torch.Tensor)):
            raise ProtocolError(f"{where(node)}: trainable takes one tensor")
        if node.op not in GRADIENT_READERS:
            continue
        if not backward or node.id < backward[0].id:
            raise ProtocolError(f"{where(node)}: a gradient is read or set only after the backward pass is recorded")
        arity = 1 if node.op == "grad" else 2
        if len(node.args) != arity or not isinstance(node.args[0], Ref):
            raise ProtocolError(
                f"{where(node)}: {node.op} takes the value whose gradient it is"
                + (" and the new gradient" if arity == 2 else "")
            )
        if gradient_target(graph.nodes, node.args[0].id) is None:
            raise ProtocolError(f"{where(node)}: a gradient is taken only of a module value or a trainable tensor")
        shapes = node.kwargs.get("shapes")
        if not isinstance(shapes, list) or len(shapes) != 1 or not _is_shape(shapes[0]) or shapes[0] is None:
            raise ProtocolError(f"{where(node)}: a gradient node needs `shapes`, the traced shape of its value")


def _check_size(graph: Graph, limits: Limits) -> None:
    if len(graph.nodes) > limits.max_nodes:
        raise ProtocolError(f"the graph has {len(graph.nodes)} nodes, over this server's limit of {limits.max_nodes}")
    if graph.batch_size > limits.max_batch_size:
        raise ProtocolError(
            f"the batch has {graph.batch_size} prompts, over this server's limit of {limits.max_batch_size}"
        )


def _check_inputs(graph: Graph, vocabulary: int, limits: Limits) -> None:
    for index, invoke in enumerate(graph.invokes):
        if invoke.length > limits.max_prompt_tokens:
            raise ProtocolError(
                f"invoke {index} has a prompt of {invoke.length} tokens, over this server's limit of "
                f"{limits.max_prompt_tokens}"
            )
        for row in invoke.rows:
            if any(token >= vocabulary for token in row):
                raise ProtocolError(f"invoke {index} has a token id at or past the model's vocabulary ({vocabulary})")
    if graph.pad_token_id >= vocabulary:
        raise ProtocolError(f"pad_token_id {graph.pad_token_id} is past the model's vocabulary ({vocabulary})")


def _check_options(graph: Graph, limits: Limits, vocabulary: int) -> int:
    """Check the options and their values; returns how many generation steps the run has."""
    allowed = GENERATE_OPTIONS if graph.kind == "generate" else TRACE_OPTIONS
    for key, value in graph.options.items():
        if key not in allowed:
            raise ProtocolError(f"the option {quote(key)} is not allowed for a {graph.kind} on this server")
        problem = option_problem(key, value, vocabulary)
        if problem:
            raise ProtocolError(f"the option {key}={quote(value, 80)}: {problem}")
    if graph.kind != "generate":
        return 1
    several = several_sequences_problem(graph.options)
    if several is not None:
        raise ProtocolError(several[0].rstrip("."))
    if graph.forward_rows > limits.max_batch_size:
        raise ProtocolError(
            f"the batch has {graph.forward_rows} rows with its beams or sequences, over this server's limit of "
            f"{limits.max_batch_size}"
        )
    steps = graph.options.get("max_new_tokens")
    if not _is_int(steps) or steps < 1:
        raise ProtocolError("a generate request needs max_new_tokens, a positive integer")
    if steps > limits.max_new_tokens:
        raise ProtocolError(f"max_new_tokens={steps} is over this server's limit of {limits.max_new_tokens}")
    problem = new_tokens_problem(graph.options)
    if problem is not None:
        raise ProtocolError(problem)
    return steps


def _check_node(node: Node, graph: Graph, meta_model: torch.nn.Module, steps: int, earlier: Sequence[Graph]) -> None:
    at = where(node)
    known = (OPERATIONS, MODULE_EVENTS, GRADIENT_OPS, MODEL_READS, CONTROL_OPS)
    if node.op == SESSION_VALUE:
        _check_import(node, earlier)
    elif not any(node.op in names for names in known):
        raise ProtocolError(f"{at}: `{cut(node.op, 60)}` is not an operation this server allows")
    for ref in iter_refs((node.args, node.kwargs)):
        if not 0 <= ref.id < node.id:
            raise ProtocolError(f"{at}: it reads node {ref.id}, which is not an earlier node")
    if node.op == "stop" and (node.args or graph.kind != "trace"):
        raise ProtocolError(f"{at}: stop takes no arguments and ends a trace's forward pass")
    if node.op == "cond" and len(node.args) != 1:
        raise ProtocolError(f"{at}: cond takes one predicate")
    _check_condition(node, graph)
    if node.op == "module.weight":
        _check_weight(node, meta_model)
    if node.op not in MODULE_EVENTS:
        return
    path = node.args[0] if node.args else None
    if not isinstance(path, str):
        raise ProtocolError(f"{at}: a module event's first argument is the module's path")
    _module_at(at, path, meta_model)
    if node.op in ("module.call", "module.skip") and split_path(path) is not None:
        raise ProtocolError(f"{at}: an inner operation cannot be called or skipped, only read and set")
    if node.op == "module.call":
        if len(node.args) != 3 or not isinstance(node.args[1], tuple) or not isinstance(node.args[2], dict):
            raise ProtocolError(f"{at}: module.call takes (path, args, kwargs)")
        return
    if len(node.args) < 3 or not _is_int(node.args[1]) or not _is_int(node.args[2]):
        raise ProtocolError(f"{at}: a module event takes (path, invoke, step, ...)")
    invoke, step = node.args[1], node.args[2]
    if not 0 <= invoke < len(graph.invokes):
        raise ProtocolError(f"{at}: invoke {invoke} does not exist (the request has {len(graph.invokes)})")
    if not 0 <= step < steps:
        raise ProtocolError(f"{at}: step {step} does not exist (the run has {steps})")
    shapes = node.kwargs.get("shapes")
    if not isinstance(shapes, list) or not all(_is_shape(shape) for shape in shapes):
        raise ProtocolError(f"{at}: a module event needs `shapes`, the traced shape of each leaf of its value")
    if (node.op.startswith("module.set_") or node.op == "module.skip") and len(node.args) != 4:
        raise ProtocolError(f"{at}: a module setter takes (path, invoke, step, value)")
    if node.op == "module.skip" and not path:
        raise ProtocolError(f"{at}: the whole model cannot be skipped")


def _check_import(node: Node, earlier: Sequence[Graph]) -> None:
    """A `session.value` node reads a node of an earlier block of its session."""
    at = where(node)
    found = imported(node)
    if not earlier:
        raise ProtocolError(f"{at}: it reads an earlier block of a session, and this request has none before it")
    if found is None or not all(_is_int(part) for part in found):
        raise ProtocolError(f"{at}: session.value takes (block, node), two integers")
    block, read = found
    if not 0 <= block < len(earlier):
        raise ProtocolError(f"{at}: block {block} is not an earlier block of the session (there are {len(earlier)})")
    if not 0 <= read < len(earlier[block].nodes):
        raise ProtocolError(f"{at}: block {block} has no node {read} (it has {len(earlier[block].nodes)})")


def _check_condition(node: Node, graph: Graph) -> None:
    if CONDITION not in node.kwargs:
        return
    at = where(node)
    condition = node_condition(node)
    if condition is None or not 0 <= condition < node.id or graph.nodes[condition].op != "cond":
        raise ProtocolError(f"{at}: its condition must refer to an earlier cond node")
    if node.op in UNCONDITIONAL:
        raise ProtocolError(f"{at}: {node.op} cannot run under a condition")


def _module_at(at: str, path: str, meta_model: torch.nn.Module) -> torch.nn.Module:
    """The module at `path` (the owner, for an inner operation's path), or a ProtocolError at `at` saying the model
    has none."""
    inner = split_path(path)
    try:
        module = meta_model.get_submodule(inner[0] if inner is not None else path)
    except AttributeError:
        raise ProtocolError(f"{at}: the model has no module `{cut(path)}`") from None
    if inner is not None and inner[1] not in {operation.name for operation in inner_operations(module)}:
        raise ProtocolError(f"{at}: `{cut(inner[0])}` has no inner operation `{cut(inner[1])}`")
    return module


def _check_weight(node: Node, meta_model: torch.nn.Module) -> None:
    at = where(node)
    if len(node.args) != 2 or not all(isinstance(arg, str) for arg in node.args):
        raise ProtocolError(f"{at}: module.weight takes (path, name)")
    path, name = node.args
    module = _module_at(at, path, meta_model)
    own = dict(module.named_parameters(recurse=False)) | dict(module.named_buffers(recurse=False))
    if name not in own:
        raise ProtocolError(f"{at}: `{cut(path)}` has no weight or buffer `{cut(name)}`")


_LARGEST_SIZE = 2**40


def where(node: Node) -> str:
    """A node as messages name it: its index, operation and the user's line that recorded it."""
    text = f"node {node.id} (`{cut(node.op, 60)}`"
    if node.source is not None:
        text += f", recorded at line {node.source.lineno}"
    return text + ")"


def _is_int(value: Any) -> TypeGuard[int]:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_shape(shape: Any) -> bool:
    if shape is None:
        return True
    sizes_fit = isinstance(shape, list) and len(shape) <= MAX_DIMENSIONS
    return sizes_fit and all(_is_int(size) and 0 <= size <= _LARGEST_SIZE for size in shape)

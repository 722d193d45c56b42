"""What a server checks in a decoded graph before it runs anything: allowlisted operations and options, module
paths that exist, references, token ids, and its limits."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, TypeGuard, cast

import torch

from ..errors import ProtocolError
from ..ir.graph import Graph, Node, iter_refs
from ..operations import MODULE_EVENTS, OPERATIONS

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
    }
)
_MODULE_VALUE_EVENTS = MODULE_EVENTS - {"module.call"}


@dataclass(frozen=True)
class Limits:
    """What one request may ask of a server."""

    max_nodes: int = 20_000
    max_new_tokens: int = 512
    max_batch_size: int = 64
    max_prompt_tokens: int = 8192
    max_result_bytes: int = 2 * 1024**3


def validate_graph(graph: Graph, meta_model: torch.nn.Module, limits: Limits) -> None:
    """Raise ProtocolError naming the first thing in `graph` that the server will not run on `meta_model`."""
    _check_size(graph, limits)
    _check_inputs(graph, cast(Any, meta_model).get_input_embeddings().num_embeddings, limits)
    steps = _check_options(graph, limits)
    for node in graph.nodes:
        _check_node(node, graph, meta_model, steps)
    output_bytes = (
        graph.batch_size * (max(i.length for i in graph.invokes) + steps) * 8 if graph.kind == "generate" else 0
    )
    if graph.saved_bytes + output_bytes > limits.max_result_bytes:
        raise ProtocolError(
            f"the saved values would be {_megabytes(graph.saved_bytes + output_bytes)}, over this server's limit of "
            f"{_megabytes(limits.max_result_bytes)}; save less (for example one position: `.output[:, -1]`)"
        )


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


def _check_options(graph: Graph, limits: Limits) -> int:
    """Check the options; returns how many generation steps the run has."""
    allowed = GENERATE_OPTIONS if graph.kind == "generate" else TRACE_OPTIONS
    for key in graph.options:
        if key not in allowed:
            raise ProtocolError(f"the option {key!r} is not allowed for a {graph.kind} on this server")
    for key in ("num_beams", "num_return_sequences"):
        if graph.options.get(key) not in (None, 1):
            raise ProtocolError(f"{key} must be 1: it changes the batch during generation")
    if graph.kind != "generate":
        return 1
    steps = graph.options.get("max_new_tokens")
    if not _is_int(steps) or steps < 1:
        raise ProtocolError("a generate request needs max_new_tokens, a positive integer")
    if steps > limits.max_new_tokens:
        raise ProtocolError(f"max_new_tokens={steps} is over this server's limit of {limits.max_new_tokens}")
    return steps


def _check_node(node: Node, graph: Graph, meta_model: torch.nn.Module, steps: int) -> None:
    where = _where(node)
    if node.op not in OPERATIONS and node.op not in MODULE_EVENTS:
        raise ProtocolError(f"{where}: `{node.op}` is not an operation this server allows")
    for ref in iter_refs((node.args, node.kwargs)):
        if not 0 <= ref.id < node.id:
            raise ProtocolError(f"{where}: it reads node {ref.id}, which is not an earlier node")
    if node.op not in MODULE_EVENTS:
        return
    path = node.args[0] if node.args else None
    if not isinstance(path, str):
        raise ProtocolError(f"{where}: a module event's first argument is the module's path")
    try:
        meta_model.get_submodule(path)
    except AttributeError:
        raise ProtocolError(f"{where}: the model has no module `{path}`") from None
    if node.op == "module.call":
        if len(node.args) != 3 or not isinstance(node.args[1], tuple) or not isinstance(node.args[2], dict):
            raise ProtocolError(f"{where}: module.call takes (path, args, kwargs)")
        return
    if len(node.args) < 3 or not _is_int(node.args[1]) or not _is_int(node.args[2]):
        raise ProtocolError(f"{where}: a module event takes (path, invoke, step, ...)")
    invoke, step = node.args[1], node.args[2]
    if not 0 <= invoke < len(graph.invokes):
        raise ProtocolError(f"{where}: invoke {invoke} does not exist (the request has {len(graph.invokes)})")
    if not 0 <= step < steps:
        raise ProtocolError(f"{where}: step {step} does not exist (the run has {steps})")
    shapes = node.kwargs.get("shapes")
    if not isinstance(shapes, list) or not all(_is_shape(shape) for shape in shapes):
        raise ProtocolError(f"{where}: a module event needs `shapes`, the traced shape of each leaf of its value")
    if node.op.startswith("module.set_") and len(node.args) != 4:
        raise ProtocolError(f"{where}: a module setter takes (path, invoke, step, value)")


def _where(node: Node) -> str:
    text = f"node {node.id} (`{node.op}`"
    if node.source is not None:
        text += f", recorded at line {node.source.lineno}"
    return text + ")"


def _is_int(value: Any) -> TypeGuard[int]:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_shape(shape: Any) -> bool:
    return shape is None or (isinstance(shape, list) and all(_is_int(size) and size >= 0 for size in shape))


def _megabytes(count: int) -> str:
    return f"{count / 1e6:.1f} MB"

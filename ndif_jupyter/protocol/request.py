"""A run request on the wire: the graph (or a session's graphs) as a JSON document, checked against the schema, plus
its tensors."""

from __future__ import annotations

from typing import Any

import torch

from ..ir.graph import Graph, Invoke, Node
from ..ir.session import Request, Session
from ..ir.source import Source
from .container import pack, unpack
from .origin import Origin
from .schema import FORMAT_VERSION, check_document
from .values import TensorTable, decode_value, encode_value

REQUEST_FORMAT = "ndif.request"


def encode_request(request: Request, model: str, origin: Origin | None = None) -> bytes:
    """The message that asks a server to run `request` (a block's graph, or a session's graphs in order) on its model
    named `model`, sent from `origin` when known. A session's blocks share one container."""
    table = TensorTable()
    document: dict[str, Any] = {"format": REQUEST_FORMAT, "version": FORMAT_VERSION, "model": model}
    if origin is not None and origin.document():
        document["origin"] = origin.document()
    if isinstance(request, Session):
        document["blocks"] = [_block_document(graph, table) for graph in request.graphs]
    else:
        document.update(_block_document(request, table))
    return pack(document, table.tensors)


def decode_request(data: bytes | bytearray) -> tuple[str, Request]:
    """The model name and the request; ProtocolError naming the problem when it is malformed."""
    document, tensors = unpack(data)
    check_document(document, "request")
    return document["model"], request_from_document(document, tensors)


def request_from_document(document: dict[str, Any], tensors: dict[str, torch.Tensor]) -> Request:
    """The request of a document that follows the schema (and so has a bounded depth): a session when it has
    `blocks`, else one block's graph."""
    if "blocks" in document:
        return Session(
            [_graph_from_block(block, tensors, f"blocks[{index}].") for index, block in enumerate(document["blocks"])]
        )
    return _graph_from_block(document, tensors, "")


def _block_document(graph: Graph, table: TensorTable) -> dict[str, Any]:
    return {
        "kind": graph.kind,
        "options": encode_value(dict(graph.options), table)["dict"],
        "pad_token_id": graph.pad_token_id,
        "invokes": [invoke.rows for invoke in graph.invokes],
        "saved_bytes": graph.saved_bytes,
        "nodes": [_encode_node(node, table) for node in graph.nodes],
    }


def _graph_from_block(block: dict[str, Any], tensors: dict[str, torch.Tensor], prefix: str) -> Graph:
    options = decode_value({"dict": block["options"]}, tensors, f"{prefix}options")
    nodes = []
    for index, entry in enumerate(block["nodes"]):
        where = f"{prefix}nodes[{index}]"
        source = entry.get("source")
        nodes.append(
            Node(
                index,
                entry["op"],
                tuple(decode_value(entry["args"], tensors, f"{where}.args")),
                decode_value({"dict": entry["kwargs"]}, tensors, f"{where}.kwargs"),
                Source(source["file"], source["line"], source.get("text", "")) if source else None,
                entry["saved"],
            )
        )
    return Graph(
        block["kind"],
        nodes,
        [Invoke([list(row) for row in rows]) for rows in block["invokes"]],
        options,
        block["pad_token_id"],
        block["saved_bytes"],
    )


def _encode_node(node: Node, table: TensorTable) -> dict[str, Any]:
    entry: dict[str, Any] = {
        "op": node.op,
        "args": encode_value(list(node.args), table),
        "kwargs": encode_value(dict(node.kwargs), table)["dict"],
        "saved": node.saved,
    }
    if node.source is not None:
        entry["source"] = {"file": node.source.filename, "line": node.source.lineno, "text": node.source.line}
    return entry

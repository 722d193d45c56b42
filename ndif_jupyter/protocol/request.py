"""A run request on the wire: the graph as a JSON document (checked against the schema) plus its tensors."""

from __future__ import annotations

from typing import Any

import torch

from ..ir.graph import Graph, Invoke, Node
from ..ir.source import Source
from .container import pack, unpack
from .schema import FORMAT_VERSION, check_document
from .values import TensorTable, decode_value, encode_value

REQUEST_FORMAT = "ndif.request"


def encode_request(graph: Graph, model: str) -> bytes:
    """The message that asks a server to run `graph` on its model named `model`."""
    table = TensorTable()
    document = {
        "format": REQUEST_FORMAT,
        "version": FORMAT_VERSION,
        "model": model,
        "kind": graph.kind,
        "options": encode_value(dict(graph.options), table)["dict"],
        "pad_token_id": graph.pad_token_id,
        "invokes": [invoke.rows for invoke in graph.invokes],
        "saved_bytes": graph.saved_bytes,
        "nodes": [_encode_node(node, table) for node in graph.nodes],
    }
    return pack(document, table.tensors)


def decode_request(data: bytes | bytearray) -> tuple[str, Graph]:
    """The model name and the graph of a request; ProtocolError naming the problem when it is malformed."""
    document, tensors = unpack(data)
    check_document(document, "request")
    return document["model"], graph_from_document(document, tensors)


def graph_from_document(document: dict[str, Any], tensors: dict[str, torch.Tensor]) -> Graph:
    """The graph of a request document that follows the schema (and so has a bounded depth)."""
    options = decode_value({"dict": document["options"]}, tensors, "options")
    nodes = []
    for index, entry in enumerate(document["nodes"]):
        where = f"nodes[{index}]"
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
        document["kind"],
        nodes,
        [Invoke([list(row) for row in rows]) for rows in document["invokes"]],
        options,
        document["pad_token_id"],
        document["saved_bytes"],
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

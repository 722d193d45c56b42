"""A run's result on the wire: saved values and output ids as tensors in the container, the rest as JSON."""

from __future__ import annotations

from pathlib import Path

from ..errors import ProtocolError
from ..ir.result import ExecutionResult
from .container import pack, pack_to_file, unpack
from .schema import FORMAT_VERSION, check_document
from .values import TensorTable, decode_value, encode_value

RESULT_FORMAT = "ndif.result"


def _document(result: ExecutionResult) -> tuple[dict, dict]:
    table = TensorTable("s")
    document = {
        "format": RESULT_FORMAT,
        "version": FORMAT_VERSION,
        "saved": {str(node_id): encode_value(value, table) for node_id, value in result.saved.items()},
        "output_ids": encode_value(result.output_ids, table),
        "missing": {str(node_id): reason for node_id, reason in result.missing.items()},
        "forward_calls": result.forward_calls,
        "seconds": result.seconds,
    }
    return document, table.tensors


def encode_result(result: ExecutionResult) -> bytes:
    """The message that carries `result` back."""
    return pack(*_document(result))


def write_result(result: ExecutionResult, path: Path) -> int:
    """Write the message of `result` to `path`; returns its size in bytes."""
    return pack_to_file(*_document(result), path)


def result_bytes(result: ExecutionResult) -> int:
    """The bytes of the tensors a result carries (what a server's result limit counts)."""
    return sum(tensor.numel() * tensor.element_size() for tensor in _document(result)[1].values())


def check_result_size(result: ExecutionResult, limit: int) -> None:
    """Refuse a result whose tensors are over a server's `limit` of bytes (checked after the run, whatever was
    declared before it)."""
    size = result_bytes(result)
    if size > limit:
        raise ProtocolError(
            f"the result is {size / 1e6:.1f} MB, over this server's limit of {limit / 1e6:.1f} MB; save less"
        )


def decode_result(data: bytes | bytearray | memoryview) -> ExecutionResult:
    """The ExecutionResult a result message carries."""
    document, tensors = unpack(data)
    check_document(document, "result")
    saved = {int(key): decode_value(value, tensors, f"saved.{key}") for key, value in document["saved"].items()}
    return ExecutionResult(
        saved,
        decode_value(document["output_ids"], tensors, "output_ids"),
        {int(key): reason for key, reason in document["missing"].items()},
        document["forward_calls"],
        document["seconds"],
    )

"""A run's result on the wire: saved values and output ids as tensors in the container, the rest as JSON; a session's
result holds one such part per block."""

from __future__ import annotations

from pathlib import Path

from ..errors import ProtocolError
from ..ir.result import ExecutionResult, RunResult, SessionResult
from .container import pack, pack_to_file, unpack
from .schema import FORMAT_VERSION, check_document
from .values import TensorTable, decode_value, encode_value

RESULT_FORMAT = "ndif.result"


def _document(result: RunResult) -> tuple[dict, dict]:
    table = TensorTable("s")
    document: dict = {"format": RESULT_FORMAT, "version": FORMAT_VERSION}
    if isinstance(result, SessionResult):
        document["blocks"] = [_block_document(block, table) for block in result.results]
    else:
        document.update(_block_document(result, table))
    return document, table.tensors


def _block_document(result: ExecutionResult, table: TensorTable) -> dict:
    return {
        "saved": {str(node_id): encode_value(value, table) for node_id, value in result.saved.items()},
        "output_ids": encode_value(result.output_ids, table),
        "missing": {str(node_id): reason for node_id, reason in result.missing.items()},
        "forward_calls": result.forward_calls,
        "seconds": result.seconds,
    }


def encode_result(result: RunResult) -> bytes:
    """The message that carries `result` back."""
    return pack(*_document(result))


def write_result(result: RunResult, path: Path) -> int:
    """Write the message of `result` to `path`; returns its size in bytes."""
    return pack_to_file(*_document(result), path)


def result_bytes(result: RunResult) -> int:
    """The bytes of the tensors a result carries (what a server's result limit counts)."""
    return sum(tensor.numel() * tensor.element_size() for tensor in _document(result)[1].values())


def check_result_size(result: RunResult, limit: int) -> None:
    """Refuse a result whose tensors are over a server's `limit` of bytes (checked after the run, whatever was
    declared before it)."""
    size = result_bytes(result)
    if size > limit:
        raise ProtocolError(
            f"the result is {size / 1e6:.1f} MB, over this server's limit of {limit / 1e6:.1f} MB; save less"
        )


def decode_result(data: bytes | bytearray | memoryview) -> RunResult:
    """The result a result message carries: a block's, or a session's."""
    document, tensors = unpack(data)
    check_document(document, "result")
    if "blocks" in document:
        return SessionResult(
            [_block_result(block, tensors, f"blocks[{index}].") for index, block in enumerate(document["blocks"])]
        )
    return _block_result(document, tensors, "")


def _block_result(block: dict, tensors: dict, prefix: str) -> ExecutionResult:
    saved = {int(key): decode_value(value, tensors, f"{prefix}saved.{key}") for key, value in block["saved"].items()}
    return ExecutionResult(
        saved,
        decode_value(block["output_ids"], tensors, f"{prefix}output_ids"),
        {int(key): reason for key, reason in block["missing"].items()},
        block["forward_calls"],
        block["seconds"],
    )

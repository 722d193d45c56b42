"""The binary container of every message: a safetensors file whose metadata entry `ndif` holds the JSON document.

safetensors is an 8-byte little-endian header length, a JSON header (each tensor's dtype, shape and byte range,
plus string metadata), then the raw tensor bytes. Readers exist for many languages, and it carries no code.
Writing and reading are done here, so that a tensor's bytes are copied once on the way out (into the message or
the file) and not at all on the way in (tensors are views of the received buffer).
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from ..errors import ProtocolError
from .bounds import load_json
from .limits import MAX_DIMENSIONS, MAX_STRING, MAX_TENSORS, quote

METADATA_KEY = "ndif"
CONTENT_TYPE = "application/vnd.ndif+safetensors"
DTYPE_CODES = {
    torch.float64: "F64",
    torch.float32: "F32",
    torch.float16: "F16",
    torch.bfloat16: "BF16",
    torch.int64: "I64",
    torch.int32: "I32",
    torch.int16: "I16",
    torch.int8: "I8",
    torch.uint8: "U8",
    torch.bool: "BOOL",
}
_CODE_DTYPES = {code: dtype for dtype, code in DTYPE_CODES.items()}
_LARGEST_SIZE = 2**40


def pack(document: dict[str, Any], tensors: dict[str, torch.Tensor]) -> bytes:
    """One message: `document` as JSON in the metadata, `tensors` by name."""
    header, ordered = _layout(document, tensors)
    return b"".join([header, *(_bytes_of(tensor) for tensor in ordered)])


def pack_to_file(document: dict[str, Any], tensors: dict[str, torch.Tensor], path: Path) -> int:
    """As `pack`, written to `path` through a temporary file (a reader never sees half of it); returns its size."""
    header, ordered = _layout(document, tensors)
    partial = path.with_name(path.name + ".partial")
    with open(partial, "wb") as handle:
        handle.write(header)
        for tensor in ordered:
            handle.write(_bytes_of(tensor))
    partial.replace(path)
    return path.stat().st_size


def unpack(
    data: bytes | bytearray | memoryview,
    max_items: int = 10_000_000,
    first: Callable[[Any], None] | None = None,
) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    """The JSON document and the tensors of a message (views of `data` when it is writable); ProtocolError when it
    is not one. Nothing in it is parsed without a bound: `max_items` caps the values of the document; `first`
    checks the parsed document before its bounds are walked (see `bounds.load_json`)."""
    buffer = data if isinstance(data, bytearray) else bytearray(data)
    if len(buffer) < 8:
        raise ProtocolError("the body is not a safetensors container: it is shorter than its 8-byte header length")
    header_length = int.from_bytes(buffer[:8], "little")
    if header_length > len(buffer) - 8:
        raise ProtocolError("the body is not a safetensors container: its header length is past its end")
    header = load_json(
        bytes(buffer[8 : 8 + header_length]), "the safetensors header", MAX_TENSORS * 8 + 16, max_string=header_length
    )
    if not isinstance(header, dict):
        raise ProtocolError("the safetensors header must be a JSON object")
    if any(len(name) > MAX_STRING for name in header):
        raise ProtocolError(f"the container names a tensor with more than {MAX_STRING} characters")
    metadata = header.pop("__metadata__", None)
    if not isinstance(metadata, dict) or not isinstance(metadata.get(METADATA_KEY), str):
        raise ProtocolError(f"the safetensors metadata has no {METADATA_KEY!r} entry holding the JSON document")
    if len(header) > MAX_TENSORS:
        raise ProtocolError(f"the container has {len(header)} tensors; at most {MAX_TENSORS} are allowed")
    document = load_json(metadata[METADATA_KEY], f"the {METADATA_KEY!r} document", max_items, first=first)
    if not isinstance(document, dict):
        raise ProtocolError(f"the {METADATA_KEY!r} metadata entry must be a JSON object")
    start = 8 + header_length
    tensors = {name: _tensor(name, entry, buffer, start) for name, entry in header.items()}
    return document, tensors


def _layout(document: dict[str, Any], tensors: dict[str, torch.Tensor]) -> tuple[bytes, list[torch.Tensor]]:
    """The header bytes, and the tensors in storage order (largest elements first, so every tensor is aligned)."""
    prepared = {name: _prepared(name, tensor) for name, tensor in tensors.items()}
    order = sorted(prepared, key=lambda name: -prepared[name].element_size())
    header: dict[str, Any] = {"__metadata__": {METADATA_KEY: json.dumps(document, allow_nan=False)}}
    offset = 0
    for name in order:
        tensor = prepared[name]
        size = tensor.numel() * tensor.element_size()
        header[name] = {
            "dtype": DTYPE_CODES[tensor.dtype],
            "shape": list(tensor.shape),
            "data_offsets": [offset, offset + size],
        }
        offset += size
    raw = json.dumps(header, separators=(",", ":")).encode()
    raw += b" " * (-len(raw) % 8)
    return len(raw).to_bytes(8, "little") + raw, [prepared[name] for name in order]


def _prepared(name: str, tensor: torch.Tensor) -> torch.Tensor:
    if tensor.dtype not in DTYPE_CODES:
        raise ProtocolError(f"the tensor {name!r} has dtype {tensor.dtype}, which the container cannot carry")
    return tensor.detach().to("cpu").contiguous()


def _bytes_of(tensor: torch.Tensor) -> memoryview:
    return memoryview(tensor.reshape(-1).view(torch.uint8).numpy())  # type: ignore[arg-type]  # an ndarray is a buffer


def _integer(value: Any) -> int:
    if not isinstance(value, int) or isinstance(value, bool):
        raise TypeError("not an integer")
    return value


def _tensor(name: str, entry: Any, buffer: bytearray, start: int) -> torch.Tensor:
    try:
        dtype = _CODE_DTYPES[entry["dtype"]]
        shape = [_integer(size) for size in entry["shape"]]
        begin, end = (_integer(offset) for offset in entry["data_offsets"])
    except (KeyError, TypeError, ValueError):
        raise ProtocolError(f"the tensor {quote(name)} has no valid dtype, shape and data_offsets") from None
    if len(shape) > MAX_DIMENSIONS or not all(0 <= size <= _LARGEST_SIZE for size in shape):
        raise ProtocolError(
            f"the tensor {quote(name)} has shape {quote(str(shape))}: at most {MAX_DIMENSIONS} dimensions, each at "
            f"most {_LARGEST_SIZE}"
        )
    element = torch.empty((), dtype=dtype).element_size()
    count = math.prod(shape)
    if end - begin != count * element or not 0 <= begin <= end <= len(buffer) - start:
        raise ProtocolError(
            f"the tensor {quote(name)}: its shape, dtype and byte range do not agree with the container"
        )
    if count == 0:
        return torch.empty(shape, dtype=dtype)
    offset = start + begin
    if offset % element:
        return torch.frombuffer(buffer[offset : offset + count * element], dtype=dtype).reshape(shape)
    return torch.frombuffer(buffer, dtype=dtype, count=count, offset=offset).reshape(shape)

"""The binary container of every message: a safetensors file whose metadata entry `ndif` holds the JSON document.

safetensors is an 8-byte little-endian header length, a JSON header (each tensor's dtype, shape and byte range,
plus string metadata), then the raw tensor bytes. Readers exist for many languages, and it carries no code.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load, save, save_file

from ..errors import ProtocolError

METADATA_KEY = "ndif"
CONTENT_TYPE = "application/vnd.ndif+safetensors"


def pack(document: dict[str, Any], tensors: dict[str, torch.Tensor]) -> bytes:
    """One message: `document` as JSON in the metadata, `tensors` by name."""
    return save(_storable(tensors), metadata={METADATA_KEY: json.dumps(document, allow_nan=False)})


def pack_to_file(document: dict[str, Any], tensors: dict[str, torch.Tensor], path: Path) -> None:
    """As `pack`, written to `path` (through a temporary file, so a reader never sees half of it)."""
    partial = path.with_name(path.name + ".partial")
    save_file(_storable(tensors), str(partial), metadata={METADATA_KEY: json.dumps(document, allow_nan=False)})
    partial.replace(path)


def unpack(data: bytes) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    """The JSON document and the tensors of a message; ProtocolError when it is not one."""
    if len(data) < 8:
        raise ProtocolError("the body is not a safetensors container: it is shorter than its 8-byte header length")
    header_length = int.from_bytes(data[:8], "little")
    if header_length > len(data) - 8:
        raise ProtocolError("the body is not a safetensors container: its header length is past its end")
    try:
        header = json.loads(data[8 : 8 + header_length])
    except ValueError as error:
        raise ProtocolError(f"the safetensors header is not JSON: {error}") from None
    metadata = header.get("__metadata__") if isinstance(header, dict) else None
    if not isinstance(metadata, dict) or METADATA_KEY not in metadata:
        raise ProtocolError(f"the safetensors metadata has no {METADATA_KEY!r} entry holding the JSON document")
    try:
        document = json.loads(metadata[METADATA_KEY])
    except ValueError as error:
        raise ProtocolError(f"the {METADATA_KEY!r} metadata entry is not JSON: {error}") from None
    if not isinstance(document, dict):
        raise ProtocolError(f"the {METADATA_KEY!r} metadata entry must be a JSON object")
    try:
        tensors = load(data)
    except (SafetensorError, ValueError, RuntimeError) as error:
        raise ProtocolError(f"the tensors of the container cannot be read: {error}") from None
    return document, tensors


def _storable(tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """CPU, contiguous, no two sharing memory (safetensors refuses shared storage)."""
    seen: set[int] = set()
    storable = {}
    for name, tensor in tensors.items():
        tensor = tensor.detach().to("cpu").contiguous()
        pointer = tensor.untyped_storage().data_ptr()
        if pointer in seen and tensor.numel():
            tensor = tensor.clone()
        seen.add(pointer)
        storable[name] = tensor
    return storable

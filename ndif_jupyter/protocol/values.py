"""Graph values as JSON: constants, containers, node references and tensors (by name, their bytes kept apart).

Plain JSON stands for itself: null, true/false, integers, strings, and arrays (Python lists). A number with a
fraction or an exponent is a float. Everything else is an object with exactly one key that says what it is:
`{"tuple": [...]}`, `{"dict": {...}}`, `{"ref": 3}`, `{"tensor": "t0"}`, `{"slice": [start, stop, step]}`,
`{"float": "nan" | "inf" | "-inf"}`, `{"complex": [re, im]}`, `{"dtype": "float32"}`, `{"device": "cpu"}`,
`{"ellipsis": true}`.
"""

from __future__ import annotations

import math
from typing import Any

import torch

from ..errors import ProtocolError
from ..ir.graph import Ref
from .limits import cut, quote

DTYPES = {
    "bool": torch.bool,
    "uint8": torch.uint8,
    "int8": torch.int8,
    "int16": torch.int16,
    "int32": torch.int32,
    "int64": torch.int64,
    "float16": torch.float16,
    "bfloat16": torch.bfloat16,
    "float32": torch.float32,
    "float64": torch.float64,
}
DTYPE_NAMES = {dtype: name for name, dtype in DTYPES.items()}
_SPECIAL_FLOATS = {"nan": math.nan, "inf": math.inf, "-inf": -math.inf}


class TensorTable:
    """The tensors met while encoding, each named once (`t0`, `t1`, ...) for the binary container."""

    def __init__(self, prefix: str = "t"):
        self.prefix = prefix
        self.tensors: dict[str, torch.Tensor] = {}
        self._names: dict[int, str] = {}

    def name(self, tensor: torch.Tensor) -> str:
        if tensor.dtype not in DTYPE_NAMES:
            raise ProtocolError(f"tensors of dtype {tensor.dtype} cannot travel; convert to one of {sorted(DTYPES)}")
        key = id(tensor)
        if key not in self._names:
            name = f"{self.prefix}{len(self.tensors)}"
            self._names[key] = name
            self.tensors[name] = tensor
        return self._names[key]


def encode_value(value: Any, table: TensorTable) -> Any:
    """`value` as JSON, its tensors added to `table`."""
    if value is None or isinstance(value, (bool, int, str)):
        return value
    if isinstance(value, float):
        if math.isfinite(value):
            return value
        return {"float": "nan" if math.isnan(value) else ("inf" if value > 0 else "-inf")}
    if isinstance(value, list):
        return [encode_value(item, table) for item in value]
    if isinstance(value, tuple):
        return {"tuple": [encode_value(item, table) for item in value]}
    if isinstance(value, dict):
        if not all(isinstance(key, str) for key in value):
            raise ProtocolError("only dictionaries with string keys can travel")
        return {"dict": {key: encode_value(item, table) for key, item in value.items()}}
    if isinstance(value, Ref):
        return {"ref": value.id}
    if isinstance(value, torch.Tensor):
        return {"tensor": table.name(value)}
    if isinstance(value, slice):
        return {"slice": [encode_value(part, table) for part in (value.start, value.stop, value.step)]}
    if isinstance(value, complex):
        return {"complex": [value.real, value.imag]}
    if isinstance(value, torch.dtype):
        if value not in DTYPE_NAMES:
            raise ProtocolError(f"the dtype {value} cannot travel")
        return {"dtype": DTYPE_NAMES[value]}
    if isinstance(value, torch.device):
        return {"device": str(value)}
    if value is Ellipsis:
        return {"ellipsis": True}
    raise ProtocolError(f"a value of type {type(value).__name__} cannot travel")


def decode_value(data: Any, tensors: dict[str, torch.Tensor], where: str = "value") -> Any:
    """The value a JSON document stands for; `where` names the place in errors."""
    if data is None or isinstance(data, (bool, int, float, str)):
        return data
    if isinstance(data, list):
        return [decode_value(item, tensors, f"{where}[{i}]") for i, item in enumerate(data)]
    if not isinstance(data, dict) or len(data) != 1:
        raise ProtocolError(f"{cut(where)}: an object value must have exactly one key saying what it is")
    ((tag, content),) = data.items()
    if tag == "tuple" and isinstance(content, list):
        return tuple(decode_value(item, tensors, f"{where}[{i}]") for i, item in enumerate(content))
    if tag == "dict" and isinstance(content, dict):
        return {key: decode_value(item, tensors, f"{where}.{key}") for key, item in content.items()}
    if tag == "ref" and isinstance(content, int) and not isinstance(content, bool):
        return Ref(content)
    if tag == "tensor" and isinstance(content, str):
        if content not in tensors:
            raise ProtocolError(f"{cut(where)}: the tensor {quote(content)} is not in the request's tensors")
        return tensors[content]
    if tag == "slice" and isinstance(content, list) and len(content) == 3:
        return slice(*(decode_value(part, tensors, where) for part in content))
    if tag == "float" and content in _SPECIAL_FLOATS:
        return _SPECIAL_FLOATS[content]
    if tag == "complex" and isinstance(content, list) and len(content) == 2:
        return complex(*content)
    if tag == "dtype" and content in DTYPES:
        return DTYPES[content]
    if tag == "device" and isinstance(content, str):
        try:
            return torch.device(content)
        except RuntimeError:
            raise ProtocolError(f"{cut(where)}: {quote(content)} is not a device") from None
    if tag == "ellipsis" and content is True:
        return Ellipsis
    raise ProtocolError(f"{cut(where)}: {quote(tag, 40)} with {quote(str(content), 40)} is not a value of the format")

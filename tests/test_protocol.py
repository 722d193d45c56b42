"""The wire format: values, requests and results round-trip exactly, follow the documented JSON Schemas, and carry
nothing but data."""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

import pytest
import torch
from jsonschema import Draft202012Validator

from ndif_jupyter import Model
from ndif_jupyter.errors import ProtocolError
from ndif_jupyter.execution.executor import execute
from ndif_jupyter.execution.session import execute_session
from ndif_jupyter.ir.graph import Ref
from ndif_jupyter.ir.result import ExecutionResult, SessionResult
from ndif_jupyter.ir.session import Session
from ndif_jupyter.protocol.container import unpack
from ndif_jupyter.protocol.origin import Origin
from ndif_jupyter.protocol.request import decode_request, encode_request
from ndif_jupyter.protocol.result import decode_result, encode_result
from ndif_jupyter.protocol.schema import check_document, schema
from ndif_jupyter.protocol.values import TensorTable, decode_value, encode_value

DOC = Path(__file__).parent.parent / "docs" / "protocol.md"
PROMPT = "The Eiffel Tower is in the city of"


@pytest.mark.parametrize(
    "value",
    [
        None,
        True,
        0,
        -3,
        2.5,
        "text",
        [1, [2.0, "x"]],
        (1, (2,)),
        {"a": (1, None)},
        Ref(4),
        slice(None, -1, 2),
        slice(Ref(1), None, None),
        Ellipsis,
        torch.float16,
        torch.bfloat16,
        torch.device("cpu"),
        complex(1, -2),
        (Ellipsis, slice(None), 3),
        float("inf"),
        float("-inf"),
    ],
)
def test_values_round_trip(value):
    table = TensorTable()
    data = json.loads(json.dumps(encode_value(value, table), allow_nan=False))
    back = decode_value(data, table.tensors)
    assert back == value and type(back) is type(value)


def test_nan_and_tensors_round_trip():
    table = TensorTable()
    tensor = torch.arange(6, dtype=torch.int32).reshape(2, 3)
    data = encode_value({"nan": float("nan"), "t": tensor, "again": tensor}, table)
    assert data["dict"]["t"] == data["dict"]["again"] == {"tensor": "t0"}, "one tensor is stored once"
    back = decode_value(json.loads(json.dumps(data)), table.tensors)
    assert math.isnan(back["nan"]) and torch.equal(back["t"], tensor)


@pytest.mark.parametrize("value", [{1, 2}, {1: "a"}, object(), torch.zeros(2, dtype=torch.complex64), print])
def test_what_is_not_data_cannot_travel(value):
    with pytest.raises(ProtocolError):
        encode_value(value, TensorTable())


@pytest.mark.parametrize(
    "data",
    [
        {"tuple": [1], "dict": {}},
        {"code": "import os"},
        {"ref": "3"},
        {"tensor": "t9"},
        {"dtype": "object"},
        {"float": "1e999"},
    ],
)
def test_decoding_refuses_what_the_format_does_not_define(data):
    with pytest.raises(ProtocolError):
        decode_value(data, {})


def _block(model: Model):
    with model.generate(max_new_tokens=2) as block:
        with block.invoke(["Hello world", "The quick brown fox"]):
            h = model.transformer.h[0].output
            h[:, -1] = h[:, -1] * 2 + torch.ones(64)
            kept = model.transformer.h[1].output.save()
            probs = model.lm_head.output[..., :5].softmax(-1).save()
        with block.invoke("hi"):
            model.transformer.h[2].mlp.output = model.transformer.h[2].mlp.output * 0.5
            first = model.transformer.h[3].output.t(0).save()
    return block, {kept.node_id: kept.value, probs.node_id: probs.value, first.node_id: first.value}


def test_a_request_round_trips_and_runs_to_the_same_values(gpt2: Model):
    block, local = _block(gpt2)
    graph = block.graph()
    name, decoded = decode_request(encode_request(graph, gpt2.name))
    assert name == gpt2.name
    assert [(n.op, n.saved) for n in decoded.nodes] == [(n.op, n.saved) for n in graph.nodes]
    assert decoded.invokes == graph.invokes and decoded.options == graph.options
    assert decoded.saved_bytes == graph.saved_bytes == sum(v.numel() * v.element_size() for v in local.values())
    assert [n.source for n in decoded.nodes] == [n.source for n in graph.nodes]
    result = execute(decoded, gpt2.local_model)
    for node_id, value in local.items():
        assert torch.equal(result.saved[node_id], value)
    assert torch.equal(result.output_ids, block.output)


def test_a_result_round_trips_exactly():
    result = ExecutionResult(
        {0: torch.randn(2, 3), 4: (torch.ones(2, dtype=torch.bfloat16), None, 3), 7: torch.tensor(True)},
        torch.tensor([[1, 2, 3]]),
        {9: "the module never ran"},
        3,
        0.25,
    )
    back = decode_result(encode_result(result))
    assert torch.equal(back.saved[0], result.saved[0]) and back.saved[7].item() is True
    assert torch.equal(back.saved[4][0], result.saved[4][0]) and back.saved[4][1:] == (None, 3)
    assert back.saved[4][0].dtype == torch.bfloat16
    assert torch.equal(back.output_ids, result.output_ids)
    assert (back.missing, back.forward_calls, back.seconds) == ({9: "the module never ran"}, 3, 0.25)


def test_documents_follow_the_schemas_independently_checked(gpt2: Model):
    block, _ = _block(gpt2)
    request, _ = unpack(encode_request(block.graph(), gpt2.name))
    Draft202012Validator(schema("request")).validate(request)
    result, _ = unpack(encode_result(execute(block.graph(), gpt2.local_model)))
    Draft202012Validator(schema("result")).validate(result)
    Draft202012Validator.check_schema(schema("request"))
    Draft202012Validator.check_schema(schema("result"))


def _session(model: Model) -> tuple[Session, torch.Tensor]:
    """Two blocks using one constant, the second reading an unsaved value of the first."""
    shared = torch.linspace(0, 1, 64)
    with model.session() as session:
        with model.trace(PROMPT):
            hidden = model.transformer.h[0].output[0, -1] + shared
        with model.generate(max_new_tokens=2) as generator:
            with generator.invoke("Hello world"):
                model.transformer.h[1].output[:, -1] += hidden * shared
                last = model.transformer.h[2].output.save()
        blocks = [block.graph() for block in session.blocks]
    return Session(blocks), last.value


def test_a_session_round_trips_and_runs_to_the_same_values(gpt2: Model):
    session, last = _session(gpt2)
    data = encode_request(session, gpt2.name)
    document, tensors = unpack(data)
    assert sorted(document) == ["blocks", "format", "model", "version"] and len(document["blocks"]) == 2
    assert len(tensors) == 2, "each block holds the constant as it was when the block recorded it"
    Draft202012Validator(schema("request")).validate(document)
    name, decoded = decode_request(data)
    assert name == gpt2.name and isinstance(decoded, Session)
    for mine, theirs in zip(decoded.graphs, session.graphs, strict=True):
        assert [(n.op, n.args[:3], n.saved) for n in mine.nodes if n.op.startswith(("module", "session"))] == [
            (n.op, n.args[:3], n.saved) for n in theirs.nodes if n.op.startswith(("module", "session"))
        ]
    result = execute_session(decoded, gpt2.local_model)
    back = decode_result(encode_result(result))
    assert isinstance(back, SessionResult) and len(back.results) == 2
    Draft202012Validator(schema("result")).validate(unpack(encode_result(result))[0])
    assert torch.equal(back.results[1].saved[max(back.results[1].saved)], last)
    assert back.forward_calls == result.forward_calls == 3


def test_a_document_is_either_one_block_or_a_session(gpt2: Model):
    session, _ = _session(gpt2)
    document, _ = unpack(encode_request(session, gpt2.name))
    one, _ = unpack(encode_request(session.graphs[0], gpt2.name))
    for mixed in ({**document, "kind": "trace"}, {**one, "blocks": document["blocks"]}, {**document, "blocks": []}):
        with pytest.raises(ProtocolError, match="does not follow the format"):
            from ndif_jupyter.protocol.schema import check_document

            check_document(mixed, "request")


def test_a_request_carries_its_origin_in_both_forms_and_none_when_unknown(gpt2: Model):
    origin = Origin("work/sidebar.ipynb", "5f3a-b2_c")
    session, _ = _session(gpt2)
    for request in (session.graphs[0], session):
        document, _ = unpack(encode_request(request, gpt2.name, origin))
        assert document["origin"] == {"notebook": "work/sidebar.ipynb", "cell": "5f3a-b2_c"}
        Draft202012Validator(schema("request")).validate(document)
        check_document(document, "request")
        assert Origin.from_document(document) == origin
    document, _ = unpack(encode_request(session.graphs[0], gpt2.name))
    assert "origin" not in document and Origin.from_document(document) is None
    notebook_only, _ = unpack(encode_request(session, gpt2.name, Origin(notebook="a.ipynb")))
    assert notebook_only["origin"] == {"notebook": "a.ipynb"}


@pytest.mark.parametrize(
    "origin, message",
    [
        ({"notebook": "n" * 1025}, "origin/notebook: must be shorter than or equal to 1024 characters"),
        ({"notebook": ""}, "origin/notebook: must be longer than or equal to 1 characters"),
        ({"notebook": "a\nb.ipynb"}, "origin/notebook: must match pattern"),
        ({"notebook": ["a.ipynb"]}, "origin/notebook: must be string"),
        ({"cell": 7}, "origin/cell: must be string"),
        ({"cell": "c" * 65}, "origin/cell: must match pattern"),
        ({"cell": "a cell"}, "origin/cell: must match pattern"),
        ({"cell": "abc", "owner": "root"}, "origin: must not contain {'owner'} properties"),
        ("sidebar.ipynb", "origin: must be object"),
    ],
)
def test_a_malformed_origin_is_refused_naming_the_field(gpt2: Model, origin, message):
    session, _ = _session(gpt2)
    for request in (session.graphs[0], session):
        document, _ = unpack(encode_request(request, gpt2.name))
        with pytest.raises(ProtocolError, match="does not follow the format") as caught:
            check_document({**document, "origin": origin}, "request")
        assert message in str(caught.value) and len(str(caught.value)) < 300


def test_a_kernel_sends_only_the_origin_fields_the_schema_allows():
    assert Origin.sendable("/home/a/x.ipynb", "5f3a") == Origin("/home/a/x.ipynb", "5f3a")
    assert Origin.sendable("n" * 1025, "5f3a") == Origin("", "5f3a")
    assert Origin.sendable("x.ipynb", "not a cell id") == Origin("x.ipynb", "")
    assert Origin.sendable("", "") is None


def test_the_documented_schemas_and_examples_are_the_ones_in_use():
    text = DOC.read_text()
    blocks = re.findall(r"```json\n(.*?)\n```", text, re.S)
    documented = [json.loads(block) for block in blocks if '"$schema"' in block]
    assert documented == [schema("request"), schema("result")]
    request_example = json.loads(next(block for block in blocks if '"format": "ndif.request"' in block))
    Draft202012Validator(schema("request")).validate(request_example)
    result_example = json.loads(next(block for block in blocks if '"format": "ndif.result"' in block))
    Draft202012Validator(schema("result")).validate(result_example)


def test_a_container_holds_only_json_and_tensor_bytes(gpt2: Model):
    block, _ = _block(gpt2)
    data = encode_request(block.graph(), gpt2.name)
    header_length = int.from_bytes(data[:8], "little")
    header = json.loads(data[8 : 8 + header_length])
    assert set(header) - {"__metadata__"} == {"t0"}, "the one constant tensor of the block, torch.ones(64)"
    assert all(entry["dtype"] in ("F32", "I64") for name, entry in header.items() if name != "__metadata__")
    assert b"pickle" not in data and b"__reduce__" not in data


def test_the_container_is_safetensors_both_ways():
    from safetensors.torch import load, save

    from ndif_jupyter.protocol.container import pack

    tensors = {
        "a": torch.randn(3, 5),
        "b": torch.arange(7, dtype=torch.int16),
        "c": torch.tensor(True),
        "d": torch.ones(2, 3, dtype=torch.bfloat16),
        "e": torch.zeros(0, 4),
        "f": torch.arange(3),
    }
    ours = pack({"x": 1}, tensors)
    read_by_library = load(ours)
    assert all(torch.equal(read_by_library[name], tensor) for name, tensor in tensors.items())
    document, read_by_us = unpack(save(tensors, metadata={"ndif": json.dumps({"y": [2]})}))
    assert document == {"y": [2]}
    assert all(
        torch.equal(read_by_us[name], tensor) and read_by_us[name].dtype == tensor.dtype
        for name, tensor in tensors.items()
    )
    header_length = int.from_bytes(ours[:8], "little")
    assert header_length % 8 == 0, "tensor data starts 8-byte aligned"


def test_received_tensors_are_views_of_the_received_buffer():
    from ndif_jupyter.protocol.container import pack

    buffer = bytearray(pack({}, {"a": torch.randn(1000)}))
    _, tensors = unpack(buffer)
    tensors["a"][0] = 123.0
    _, again = unpack(buffer)
    assert again["a"][0].item() == 123.0, "no copy was made"


@pytest.mark.parametrize(
    "header, message",
    [
        ({"__metadata__": {"ndif": "{}"}, "a": {"dtype": "F32", "shape": [4], "data_offsets": [0, 8]}}, "do not agree"),
        (
            {"__metadata__": {"ndif": "{}"}, "a": {"dtype": "C64", "shape": [1], "data_offsets": [0, 8]}},
            "no valid dtype",
        ),
        (
            {"__metadata__": {"ndif": "{}"}, "a": {"dtype": "F32", "shape": [4], "data_offsets": [0, 16000]}},
            "do not agree",
        ),
        ({"__metadata__": {"ndif": "[1]"}}, "must be a JSON object"),
        ({"__metadata__": {"other": "{}"}}, "has no 'ndif' entry"),
    ],
)
def test_a_broken_container_is_refused_with_the_reason(header, message):
    raw = json.dumps(header).encode()
    data = len(raw).to_bytes(8, "little") + raw + bytes(16)
    with pytest.raises(ProtocolError, match=message):
        unpack(data)

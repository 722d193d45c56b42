"""Hypothesis strategies that draw request bodies for fuzzing a server's checks: real requests recorded from tiny
models, mutations of them at every level (JSON values, the graph, options, inputs, the container's header, raw
bytes), graphs generated from the request schema, and deliberate size cases.

`fuzz_target(folder, ...)` loads the tiny checkpoints in the folders and records real requests from them, once per
set of folders; `request_bodies(target, limits)` draws from every kind of body, sized around `limits`.
"""

from __future__ import annotations

import copy
import functools
import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from hypothesis import strategies as st

from ndif_jupyter import Model
from ndif_jupyter.ir.graph import Graph
from ndif_jupyter.ir.nested import leaf_shapes
from ndif_jupyter.ir.session import Session
from ndif_jupyter.loading.loaded import LoadedModel
from ndif_jupyter.loading.shapes import ModuleRecord
from ndif_jupyter.operations import CONTROL_OPS, GRADIENT_OPS, MODEL_READS, MODULE_EVENTS, OPERATIONS
from ndif_jupyter.protocol.container import METADATA_KEY, pack, unpack
from ndif_jupyter.protocol.limits import MAX_DEPTH, MAX_DIMENSIONS, MAX_STRING, Limits
from ndif_jupyter.protocol.request import REQUEST_FORMAT, encode_request
from ndif_jupyter.protocol.schema import FORMAT_VERSION
from ndif_jupyter.protocol.validation import GENERATE_OPTIONS, TRACE_OPTIONS
from ndif_jupyter.protocol.values import DTYPES

PROMPT = "The Eiffel Tower is in the city of"
OTHER_PROMPTS = ("Hello world", "The quick brown fox jumps over the lazy dog.")

# fmt: off
NOT_ALLOWED_OPS = (
    "eval", "exec", "__import__", "getattr", "setattr", "os.system", "builtins.open", "subprocess.run", "torch.load",
    "torch.save", "torch.nonzero", "torch.unique", "torch.empty", "tensor.numpy", "tensor.tolist", "tensor.item",
    "tensor.backward", "tensor.register_hook", "tensor.data_ptr", "tensor.storage", "tensor.__reduce_ex__",
    "tensor.__setattr__", "tensor.", "torch.", "module.forward", "module.parameters", "module.set_weight", "ADD",
    " add", "add\x00", "add\u202e", "\ud800", "", "o" * 5000,
)
BAD_MODULE_PATHS = (
    "", ".", "..", "h.99", "transformer.h.99", "model.layers.-1", "transformer..h", "transformer.h.0.",
    "transformer.h.01", "__class__", "transformer.__class__", "transformer.forward", "transformer.h.__len__",
    "transformer.h.0.attn.c_attn.weight", "transformer.h.0.attn.bias", "model.layers.0.self_attn.q_proj.weight",
    "lm_head.weight", "model.rotary_emb.inv_freq", "lm_head\ud800", "\x1b[2J", "p" * 5000,
)
ODD_TEXTS = ("\ud800", "a\udfffb", "a\u202eb", "\x1b[31m", "\x00", "line\nbreak", "é" * 10, "🙂", "\\", "`")
"""Names a message may quote: lone surrogates (not UTF-8 text), bidirectional and terminal controls, a NUL."""
NOT_A_DTYPE_CODE = ("F8_E4M3", "F8_E5M2", "C64", "U16", "U32", "U64", "I4", "f32", "", "F32 ", 3, None, ["F32"])
OUTSIDE_OPTIONS = (
    "max_length", "streamer", "logits_processor", "stopping_criteria", "generation_config", "output_scores",
    "return_dict_in_generate", "past_key_values", "input_ids", "attention_mask", "labels", "assistant_model",
    "__class__", "",
)
HUGE_INTEGERS = (2**31, 2**32, 2**53 + 1, 2**62, 2**63 - 1, 2**63, 2**64, 10**30, -(2**63) - 1, -(2**64))
EDGE_INTEGERS = (-1, 0, 1, 2, 3, 7, 8, 9, 63, 64, 65, 127, 128, 129, *HUGE_INTEGERS)
EDGE_FLOATS = (0.0, -0.0, 0.5, 1.0, 2.0, 3.0, 1e-300, 1e300, 1.7976931348623157e308, -1e308, 5e-324)
DEPTHS = (MAX_DEPTH - 8, MAX_DEPTH - 1, MAX_DEPTH, MAX_DEPTH + 1, 100, 200)
RAW_JSON = (
    "NaN", "Infinity", "-Infinity", "1e999", "-1e999", "1E400", "9" * 5000, "-0", "0.0", "3.000",
    '"\\ud800"', '"\\udfff\\ud800"', '"\\u0000"', '"\\u202e"',
    '{"ref": 0, "ref": 1}', '{"tensor": "t0", "tensor": "t0"}', '{"dict": {"a": 1, "a": {"ref": 0}}}',
    "[" * 1100 + "]" * 1100, "[" * 20_000 + "]" * 20_000, '{"a":' * 2000 + "0" + "}" * 2000,
)
"""JSON text no encoder writes but a parser may take: special and huge numbers, lone surrogates, repeated keys,
nesting far past the depth limit."""
NOT_JSON = ("[1,", "tru", "'x'", "{", "}", "[1 2]", '{"a" 1}', "\x00", "nul", "", "0x10", "+1", ".5", "01")
ODD_SHAPES: tuple[Any, ...] = (
    None, [], [0, 2**64], [-1], [2**62, 2**62], [1, 1, 1, 1], [1, 7], [1] * MAX_DIMENSIONS,
    [1] * (MAX_DIMENSIONS + 1), [1.0, 2.0, 64.0], [True, 2, 64], ["1", "2", "64"], [[1]], 7,
)
ODD_SHAPE_LISTS: tuple[Any, ...] = (
    [], None, [None], "shape", {"ref": 0}, [[1, 2, 3]] * 3, [[1] * (MAX_DIMENSIONS + 1)],
)
ODD_HEADER_SHAPES: tuple[Any, ...] = (
    [0, 2**64], [2**64], [2**40, 2**40], [2**41], [-1], [-4, -1], [], [0], [1] * (MAX_DIMENSIONS + 1), [1.5],
    [True], "4", None, [10**30],
)
ODD_DATA_OFFSETS: tuple[Any, ...] = (
    [0, 2**64], [0, 2**63], [5, 3], [-8, 0], [0], [], None, [0, 10**9], [1, 5], [0.0, 16.0], "0,16", [-(2**64), 0],
)
OPERANDS: tuple[Any, ...] = (
    -1, 0, 1, 2, 3, 0.5, -2.0, True, None, {"float": "nan"}, {"tensor": "t0"}, {"tensor": "t1"}, {"tensor": "t2"},
    {"tuple": [{"slice": [None, None, None]}, -1]}, {"tuple": [0, {"slice": [1, None, 2]}]},
    {"tuple": [{"ellipsis": True}, 0]}, {"slice": [None, 2, None]}, [0, 1], {"dtype": "float32"}, {"dtype": "int64"},
)
"""Arguments of generated operations besides the nodes they read: numbers, the generated tensors, indices, dtypes."""
OPERATION_KEYWORDS: tuple[dict[str, Any], ...] = (
    {}, {}, {}, {"dim": -1}, {"dim": 0}, {"dim": 1}, {"dim": -1, "keepdim": True}, {"dtype": {"dtype": "float16"}},
)
# fmt: on


# ----- the models and the requests recorded from them -----
@dataclass(frozen=True)
class CapturedRequest:
    """A real request body recorded from a tiny model, and what it records."""

    title: str
    model: str
    body: bytes


@dataclass
class ServedModel:
    """A model a fuzzed server serves: its name, its size facts and its module paths."""

    name: str
    model: Model
    vocabulary: int
    hidden: int
    positions: int
    module_paths: tuple[str, ...]
    called_paths: tuple[str, ...]
    prompts: list[tuple[int, ...]] = field(default_factory=list)
    _shapes: dict[tuple, list | None] = field(default_factory=dict)

    @property
    def loaded(self) -> LoadedModel:
        return self.model.loaded

    def event_shapes(self, op: str, path: str, rows: int, length: int, step: int, kind: str) -> list | None:
        """The `shapes` a kernel would record for a module event on an invoke of `rows` x `length` at `step`."""
        key = (op, path, rows, length, min(step, 1), kind)
        if key not in self._shapes:
            options: dict[str, Any] = {}
            if kind == "generate" and self.loaded.shapes.takes("logits_to_keep"):
                options["logits_to_keep"] = 1
            record = self.loaded.shapes.step(rows, length, min(step, 1), options).modules.get(path)
            self._shapes[key] = None if record is None or record.post_event < 0 else _event_shapes(op, record)
        return self._shapes[key]


def _event_shapes(op: str, record: ModuleRecord) -> list:
    if op in ("module.output", "module.set_output"):
        return leaf_shapes(record.output)
    if op in ("module.inputs", "module.set_inputs"):
        return leaf_shapes((record.args, record.kwargs))
    first = record.args[0] if record.args else next(iter(record.kwargs.values()), None)
    return leaf_shapes(first)


class FuzzTarget:
    """The served models and the real requests recorded from them, which every strategy here starts from."""

    def __init__(self, models: dict[str, ServedModel], captured: tuple[CapturedRequest, ...]):
        self.models = models
        self.captured = captured

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(self.models)

    def served(self, name: str) -> LoadedModel | None:
        """What admission asks: the loaded model a request names, or None when it is not served."""
        served = self.models.get(name)
        return served.loaded if served is not None else None


@functools.cache
def fuzz_target(*folders: Path) -> FuzzTarget:
    """The tiny GPT-2 or Llama checkpoints in `folders`, and real requests recorded from them (each recording on
    one of the models in turn)."""
    models = {}
    for folder in folders:
        model = Model(str(folder))
        models[model.name] = _served_model(model)
    served = list(models.values())
    captured = []
    for index, (title, recording) in enumerate(RECORDINGS):
        recorder = served[index % len(served)]
        body = _record(recorder.model, recording)
        captured.append(CapturedRequest(title, recorder.name, body))
        document = unpack(body)[0]
        for block in document.get("blocks", [document]):
            for invoke in block["invokes"]:
                recorder.prompts.extend(tuple(row) for row in invoke if tuple(row) not in recorder.prompts)
    return FuzzTarget(models, tuple(captured))


def _served_model(model: Model) -> ServedModel:
    meta_model: Any = model.loaded.meta_model
    config = model.config
    record = model.loaded.shapes.step(1, len(model.tokenizer(PROMPT)["input_ids"]), 0, {})
    called = tuple(path for path, entry in record.modules.items() if entry.post_event >= 0)
    return ServedModel(
        name=model.name,
        model=model,
        vocabulary=meta_model.get_input_embeddings().num_embeddings,
        hidden=int(config.hidden_size),
        positions=int(getattr(config, "max_position_embeddings", None) or config.n_positions),
        module_paths=tuple(path for path, _ in meta_model.named_modules()),
        called_paths=called,
    )


class _Recorded(Exception):
    """Leaves a block once its graph is taken: a recorded request is only encoded, never run here."""


class _Parts:
    """The parts of a GPT-2 or a Llama that the recordings use, by their place in either tree."""

    def __init__(self, model: Model):
        self.model = model
        self.gpt2 = hasattr(model.config, "n_layer")
        self.layers: Any = model.transformer.h if self.gpt2 else model.model.layers
        self.norm: Any = model.transformer.ln_f if self.gpt2 else model.model.norm
        self.hidden = int(model.config.hidden_size)


Recording = tuple[str, dict[str, Any], Callable[[_Parts, Any], None]]


def _record(model: Model, recording: Recording) -> bytes:
    kind, options, body = recording
    request: Graph | Session | None = None
    try:
        if kind == "session":
            with model.session() as session:
                body(_Parts(model), session)
                request = Session([block.graph() for block in session.blocks])
                raise _Recorded
        with model.trace(**options) if kind == "trace" else model.generate(**options) as block:
            body(_Parts(model), block)
            request = block.graph()
            raise _Recorded
    except _Recorded:
        pass
    assert request is not None
    return encode_request(request, model.name)


def _saving_outputs(parts: _Parts, block: Any) -> None:
    with block.invoke(PROMPT):
        for layer in parts.layers:
            layer.output.save()
        parts.model.lm_head.output.save()


def _several_invokes(parts: _Parts, block: Any) -> None:
    with block.invoke(PROMPT):
        parts.layers[1].output[:, -1].save()
    with block.invoke(list(OTHER_PROMPTS)):
        parts.layers[1].output.mean(dim=1).save()
        parts.layers[2].mlp.input.save()


def _steps_of_a_generation(parts: _Parts, block: Any) -> None:
    with block.invoke(PROMPT) as invoker:
        parts.layers[-1].output.save()
        for _ in range(2):
            invoker.next()
            parts.layers[-1].output.save()
            parts.model.lm_head.output.argmax(-1).save()


def _output_edits(parts: _Parts, block: Any) -> None:
    with block.invoke(PROMPT):
        hidden = parts.layers[1].output
        hidden[:, -1] = 0
        parts.layers[2].output += 1
        mlp = parts.layers[3].mlp
        mlp.output = mlp.output * 2 + 1
        parts.model.lm_head.output[:, -1].save()


def _logit_lens(parts: _Parts, block: Any) -> None:
    with block.invoke(PROMPT):
        for index in (1, 3):
            logits = parts.model.lm_head(parts.norm(parts.layers[index].output))
            probs: Any = torch.softmax(logits[:, -1], dim=-1)
            probs.topk(5)[1].save()
            probs.argmax(dim=-1).save()


def _indexing(parts: _Parts, block: Any) -> None:
    with block.invoke(PROMPT):
        hidden = parts.layers[0].output
        hidden[:, 1:4, ::2].save()
        hidden[0, -1, 3].save()
        hidden[..., 0].save()
        hidden[:, torch.tensor([0, 2])].save()
        hidden[0][torch.tensor([1, 0]), 5:9].save()


def _softmax_topk_argmax(parts: _Parts, block: Any) -> None:
    with block.invoke(PROMPT) as invoker:
        logits = parts.model.lm_head.output
        log_probs: Any = torch.log_softmax(logits, dim=-1)
        log_probs[:, -1].save()
        top: Any = torch.topk(logits[0, -1], 3)
        top[0].save()
        logits.argmax(-1).save()
        invoker.next()
        parts.model.lm_head.output.softmax(-1).amax(dim=-1).save()


def _constant_tensors(parts: _Parts, block: Any) -> None:
    with block.invoke(PROMPT):
        hidden = parts.layers[1].output
        parts.layers[1].output = hidden + torch.ones(parts.hidden) * 0.5
        parts.norm.input = torch.zeros(parts.hidden)
        parts.model.lm_head.output[:, -1].save()


def _gradients_skip_and_weights(parts: _Parts, block: Any) -> None:
    with block.invoke(PROMPT):
        early = parts.layers[0].output
        weights = block.trainable(torch.full((parts.hidden, 2), 0.01, requires_grad=True))
        parts.layers[1].skip(parts.layers[1].input)
        steered = parts.layers[2].output[:, -1] @ weights
        loss = parts.model.lm_head.output[0, -1].log_softmax(-1)[3] + steered.sum()
        parts.model.lm_head.weight[:4].sum().save()
    with loss.backward():
        early.grad.save()
        early.grad = early.grad * 2


def _cache_and_stop(parts: _Parts, block: Any) -> None:
    with block.invoke(PROMPT):
        block.cache(modules=[parts.layers[0], parts.layers[1].mlp])
        block.stop()


def _conditions_and_logs(parts: _Parts, block: Any) -> None:
    with block.invoke(PROMPT):
        for step in block.steps:
            norm = parts.layers[0].output.norm()
            with block.cond(norm > 1.0):
                parts.layers[1].output[:, -1] = 0
                with block.cond(norm.item() < 1e6):
                    parts.layers[2].output.sum().save()
            block.log("step", step, parts.model.lm_head.output[0, -1, :4].tolist())


def _inner_operations_in_beams(parts: _Parts, block: Any) -> None:
    attention = parts.layers[1].attn if parts.gpt2 else parts.layers[1].self_attn
    with block.invoke(PROMPT):
        for _ in block.steps:
            first = next(iter(attention.ops))
            first.output[0].save()
            first.inputs[0][1].save()


def _a_session(parts: _Parts, session: Any) -> None:
    model = parts.model
    with model.trace(PROMPT):
        direction = parts.layers[0].output[0, -1]
        top = model.lm_head.output[0, -1].argmax()
    with model.generate(max_new_tokens=2) as generator:
        with generator.invoke(OTHER_PROMPTS[0]):
            for _ in generator.steps:
                parts.layers[1].output[:, -1] += direction
            parts.layers[2].output.save()
            model.lm_head.output[0, -1, top].save()


RECORDINGS: tuple[tuple[str, Recording], ...] = (
    ("a trace saving every layer's output", ("trace", {}, _saving_outputs)),
    ("a trace of two invokes", ("trace", {}, _several_invokes)),
    ("a generation saving values at each step", ("generate", {"max_new_tokens": 3}, _steps_of_a_generation)),
    ("a generation with softmax, topk and argmax", ("generate", {"max_new_tokens": 2}, _softmax_topk_argmax)),
    ("a logit lens calling modules", ("trace", {}, _logit_lens)),
    ("a trace editing outputs", ("trace", {}, _output_edits)),
    ("a trace indexing with slices, ints and tensors", ("trace", {}, _indexing)),
    ("a trace adding constant tensors", ("trace", {}, _constant_tensors)),
    ("a trace with gradients, a trainable, a skip and a weight", ("trace", {}, _gradients_skip_and_weights)),
    ("a trace caching modules and stopping early", ("trace", {}, _cache_and_stop)),
    ("a generation with conditions, numbers and logs", ("generate", {"max_new_tokens": 2}, _conditions_and_logs)),
    (
        "a beam search reading inner operations",
        ("generate", {"max_new_tokens": 2, "num_beams": 2}, _inner_operations_in_beams),
    ),
    ("a session whose generation reads a trace's values", ("session", {}, _a_session)),
)
"""Recorded on the served models in turn: with a GPT-2 and a Llama, each has a generation and a multi-prompt invoke."""


# ----- JSON values -----
@functools.cache
def json_values(depth: int = 3) -> st.SearchStrategy[Any]:
    """Any JSON value a document may hold where a value goes: plain and tagged values of the format, broken tagged
    values, edge numbers, long strings, and nesting around the document's depth limit."""
    plain = st.one_of(
        st.none(),
        st.booleans(),
        st.sampled_from(EDGE_INTEGERS),
        st.integers(),
        st.sampled_from(EDGE_FLOATS),
        st.floats(allow_nan=False, allow_infinity=False),
        st.text(max_size=12),
        st.sampled_from(["x" * 300, "é" * 2000, "\x00", "\ud800", "\u202e", "t0", "cpu", "float32", "..."]),
    )
    leaves = st.one_of(plain, tagged_values(plain), nested_values())
    if depth <= 0:
        return leaves
    return st.recursive(
        leaves,
        lambda children: st.one_of(
            st.lists(children, max_size=4),
            st.dictionaries(st.sampled_from(["dict", "tuple", "ref", "a", "shapes", "dim"]), children, max_size=3),
            st.builds(lambda items: {"tuple": items}, st.lists(children, max_size=4)),
            st.builds(lambda items: {"dict": items}, st.dictionaries(st.text(max_size=4), children, max_size=3)),
            st.builds(lambda parts: {"slice": parts}, st.lists(children, min_size=3, max_size=3)),
        ),
        max_leaves=8,
    )


def tagged_values(plain: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    """Tagged values of the format, good and broken: refs, tensors, slices, dtypes, special floats and the rest."""
    return st.one_of(
        st.builds(lambda n: {"ref": n}, st.one_of(st.sampled_from(EDGE_INTEGERS), plain)),
        st.builds(lambda name: {"tensor": name}, st.sampled_from(["t0", "t1", "t2", "t9", "", "s0", "x" * 300])),
        st.builds(lambda parts: {"slice": parts}, st.lists(plain, min_size=0, max_size=4)),
        st.builds(lambda name: {"dtype": name}, st.sampled_from([*DTYPES, "float8", "complex64", "", "torch.float32"])),
        st.builds(lambda name: {"float": name}, st.sampled_from(["nan", "inf", "-inf", "NaN", "1.5", ""])),
        st.builds(lambda parts: {"complex": parts}, st.lists(plain, min_size=0, max_size=3)),
        st.builds(lambda name: {"device": name}, st.sampled_from(["cpu", "cuda", "cuda:99", "meta", "mps", "tpu", ""])),
        st.builds(lambda flag: {"ellipsis": flag}, plain),
        st.builds(lambda items: {"tuple": items}, st.lists(plain, max_size=3)),
        st.builds(lambda items: {"dict": items}, st.dictionaries(st.text(max_size=4), plain, max_size=3)),
        st.sampled_from([{}, {"ref": 0, "tensor": "t0"}, {"unknown": 1}, {"tuple": 5}, {"dict": []}]),
    )


def nested_values() -> st.SearchStrategy[Any]:
    """Lists or objects nested around the document's depth limit, and far past it."""
    return st.builds(_nested, st.sampled_from(DEPTHS), st.booleans())


def _nested(depth: int, as_objects: bool) -> Any:
    value: Any = 0
    for _ in range(depth):
        value = {"tuple": [value]} if as_objects else [value]
    return value


# ----- the request being mutated -----
@dataclass
class _Request:
    """A request being changed: its document, its tensors, raw JSON spliced in, and edits of its header."""

    document: Any
    tensors: dict[str, torch.Tensor]
    served: ServedModel
    splices: dict[str, str] = field(default_factory=dict)
    header_edits: list[Callable[[dict[str, Any]], None]] = field(default_factory=list)

    def block(self) -> Any:
        """The document of a one-block request, or a session's last block (which reads the others)."""
        blocks = self.document.get("blocks") if isinstance(self.document, dict) else None
        return blocks[-1] if isinstance(blocks, list) and blocks else self.document

    def nodes(self) -> list[Any]:
        block = self.block()
        nodes = block.get("nodes") if isinstance(block, dict) else None
        return nodes if isinstance(nodes, list) else []

    def splice(self, raw: str) -> str:
        """A marker that stands for `raw` JSON text in the document once packed."""
        marker = f"@raw{len(self.splices)}@"
        self.splices[marker] = raw
        return marker

    def body(self) -> bytes:
        packed = pack(self.document, self.tensors)
        if not self.splices and not self.header_edits:
            return packed
        length = int.from_bytes(packed[:8], "little")
        header = json.loads(packed[8 : 8 + length])
        text = header["__metadata__"][METADATA_KEY]
        for marker, raw in self.splices.items():
            text = text.replace(json.dumps(marker), raw)
        header["__metadata__"][METADATA_KEY] = text
        for edit in self.header_edits:
            edit(header)
        return _container(header, packed[8 + length :])


def _container(header: Any, data: bytes) -> bytes:
    raw = json.dumps(header, separators=(",", ":"), allow_nan=True).encode()
    raw += b" " * (-len(raw) % 8)
    return len(raw).to_bytes(8, "little") + raw + data


def _from_body(body: bytes, target: FuzzTarget, model: str) -> _Request:
    document, tensors = unpack(body)
    return _Request(document, {name: tensor.clone() for name, tensor in tensors.items()}, target.models[model])


def _paths(value: Any) -> list[tuple]:
    """The path to every value in `value`, the deepest first and `value` itself last (a strategy's simplest
    choice, the first, is then a value inside the graph rather than the whole document)."""
    paths: list[tuple] = []
    stack: list[tuple[tuple, Any]] = [((), value)]
    while stack:
        path, current = stack.pop()
        paths.append(path)
        children: Iterator[tuple[Any, Any]]
        if isinstance(current, dict):
            children = iter(current.items())
        elif isinstance(current, list):
            children = enumerate(current)
        else:
            continue
        stack.extend(((*path, key), child) for key, child in children)
    return sorted(paths, key=len, reverse=True)


def _replaced(value: Any, path: tuple, new: Any) -> Any:
    if not path:
        return new
    parent = value
    for key in path[:-1]:
        parent = parent[key]
    parent[path[-1]] = new
    return value


# ----- mutations of the document -----
Mutation = Callable[[st.DrawFn, _Request, Limits], None]


def replace_any_value(draw: st.DrawFn, request: _Request, limits: Limits) -> None:
    path = draw(st.sampled_from(_paths(request.document)))
    request.document = _replaced(request.document, path, draw(json_values()))


def splice_raw_json(draw: st.DrawFn, request: _Request, limits: Limits) -> None:
    path = draw(st.sampled_from(_paths(request.document)))
    raw = draw(st.sampled_from(RAW_JSON + NOT_JSON))
    request.document = _replaced(request.document, path, request.splice(raw))


def delete_a_key(draw: st.DrawFn, request: _Request, limits: Limits) -> None:
    paths = [path for path in _paths(request.document) if path and isinstance(path[-1], str)]
    if paths:
        path = draw(st.sampled_from(paths))
        parent = request.document
        for key in path[:-1]:
            parent = parent[key]
        del parent[path[-1]]


def add_a_key(draw: st.DrawFn, request: _Request, limits: Limits) -> None:
    places = [path for path in _paths(request.document) if _at(request.document, path, dict) is not None]
    if not places:
        return
    path = draw(st.sampled_from(places))
    key = draw(st.sampled_from(["extra", "source", "saved", "dim", "shapes", "tuple", "", "x" * 300]))
    _at(request.document, path, dict)[key] = draw(json_values(depth=1))


def _at(value: Any, path: tuple, kind: type) -> Any:
    for key in path:
        value = value[key]
    return value if isinstance(value, kind) else None


def change_the_node_list(draw: st.DrawFn, request: _Request, limits: Limits) -> None:
    nodes = request.nodes()
    if not nodes:
        return
    how = draw(
        st.sampled_from(["duplicate", "shuffle", "truncate", "drop", "reverse", "over the limit", "at the limit"])
    )
    if how == "duplicate":
        index = draw(st.integers(0, len(nodes) - 1))
        nodes.insert(draw(st.integers(0, len(nodes))), json.loads(json.dumps(nodes[index])))
    elif how == "shuffle":
        order = draw(st.permutations(range(len(nodes))))
        nodes[:] = [nodes[index] for index in order]
    elif how == "truncate":
        del nodes[draw(st.integers(0, len(nodes) - 1)) :]
    elif how == "drop":
        del nodes[draw(st.integers(0, len(nodes) - 1))]
    elif how == "reverse":
        nodes.reverse()
    else:
        count = limits.max_nodes + (1 if how == "over the limit" else 0)
        nodes[:] = [nodes[index % len(nodes)] for index in range(count)]


def change_an_op(draw: st.DrawFn, request: _Request, limits: Limits) -> None:
    nodes = [node for node in request.nodes() if isinstance(node, dict)]
    if nodes:
        node = draw(st.sampled_from(nodes))
        node["op"] = draw(
            st.one_of(
                st.sampled_from(sorted(OPERATIONS)),
                st.sampled_from(sorted(MODULE_EVENTS | GRADIENT_OPS | MODEL_READS | CONTROL_OPS)),
                st.sampled_from(NOT_ALLOWED_OPS),
            )
        )


def _event_nodes(request: _Request) -> list[dict]:
    return [
        node
        for node in request.nodes()
        if isinstance(node, dict) and _is_event(node.get("op")) and isinstance(node.get("args"), list)
    ]


def _is_event(op: Any) -> bool:
    return isinstance(op, str) and op in MODULE_EVENTS


def change_a_module_path(draw: st.DrawFn, request: _Request, limits: Limits) -> None:
    nodes = [node for node in _event_nodes(request) if node["args"]]
    if not nodes:
        return
    node = draw(st.sampled_from(nodes))
    paths = st.one_of(st.sampled_from(request.served.module_paths), st.sampled_from(BAD_MODULE_PATHS), json_values(0))
    node["args"][0] = draw(paths)


def give_an_odd_name(draw: st.DrawFn, request: _Request, limits: Limits) -> None:
    """An op, a module path, an option or a keyword argument named with text a message should not quote as is."""
    odd = draw(st.sampled_from(ODD_TEXTS))
    nodes = [node for node in request.nodes() if isinstance(node, dict)]
    place = draw(st.sampled_from(["op", "path", "option", "keyword"]))
    events = [node for node in _event_nodes(request) if node["args"]]
    if place == "op" and nodes:
        draw(st.sampled_from(nodes))["op"] = odd
    elif place == "path" and events:
        draw(st.sampled_from(events))["args"][0] = draw(st.sampled_from([odd, f"transformer.h.{odd}", f"{odd}.0"]))
    elif place == "option" and isinstance(request.block(), dict) and isinstance(request.block().get("options"), dict):
        request.block()["options"][odd] = True
    elif nodes and isinstance(kwargs := draw(st.sampled_from(nodes)).get("kwargs"), dict):
        kwargs[odd] = 1


def change_an_invoke_or_step(draw: st.DrawFn, request: _Request, limits: Limits) -> None:
    nodes = [node for node in _event_nodes(request) if node["op"] != "module.call" and len(node["args"]) >= 3]
    if nodes:
        node = draw(st.sampled_from(nodes))
        position = draw(st.sampled_from([1, 2]))
        node["args"][position] = draw(
            st.one_of(
                st.sampled_from([-1, 0, 1, 2, 3, limits.max_new_tokens - 1, limits.max_new_tokens, 2**31, 2**63]),
                st.sampled_from([True, False, 1.0, "0", None, [0], {"ref": 0}]),
            )
        )


def change_the_shapes(draw: st.DrawFn, request: _Request, limits: Limits) -> None:
    nodes = [node for node in _event_nodes(request) if isinstance(node.get("kwargs"), dict)]
    if not nodes:
        return
    node = draw(st.sampled_from(nodes))
    shapes = node["kwargs"].get("shapes")
    if not isinstance(shapes, list) or not shapes or draw(st.integers(0, 5)) == 0:
        node["kwargs"]["shapes"] = draw(st.sampled_from(ODD_SHAPE_LISTS))
        return
    index = draw(st.integers(0, len(shapes) - 1))
    shape = shapes[index]
    sizes = [dim for dim, size in enumerate(shape) if type(size) is int] if isinstance(shape, list) else []
    change_a_size = draw(st.booleans())
    if sizes and change_a_size:
        dim = draw(st.sampled_from(sizes))
        size = shape[dim]
        shape[dim] = draw(
            st.sampled_from([0, -1, size + 1, max(size - 1, 0), size * 2, 2**40, 2**40 + 1, 2**62, 2**64])
        )
    else:
        shapes[index] = draw(st.sampled_from(ODD_SHAPES))


def change_an_option(draw: st.DrawFn, request: _Request, limits: Limits) -> None:
    document = request.block()
    if not isinstance(document, dict):
        return
    if draw(st.integers(0, 6)) == 0:
        document["kind"] = draw(st.sampled_from(["trace", "generate", "Trace", "", "backward", None]))
    options = document.get("options")
    if not isinstance(options, dict):
        return
    key = draw(st.one_of(st.sampled_from(sorted(GENERATE_OPTIONS)), st.sampled_from(OUTSIDE_OPTIONS)))
    vocabulary = request.served.vocabulary
    if draw(st.integers(0, 9)) == 0:
        options.pop(key, None)
        return
    steps = limits.max_new_tokens
    # fmt: off
    odd_values = [
        43, [43], [[43]], [], [[]], [[43], []], [[vocabulary]], [vocabulary], [-1], vocabulary, vocabulary - 1, -1, 0,
        1, 2, steps, steps + 1, 10**9, 0.0, 0.5, 1.0, 1.5, 1e308, True, False, None, "greedy", {"float": "nan"},
        {"float": "inf"}, {"tensor": "t0"}, {"ref": 0}, {"dict": {"a": 1}}, [0] * 70_000,
    ]
    # fmt: on
    options[key] = draw(st.one_of(st.sampled_from(odd_values), json_values(depth=1)))


def change_the_inputs(draw: st.DrawFn, request: _Request, limits: Limits) -> None:
    document = request.block()
    if not isinstance(document, dict):
        return
    vocabulary = request.served.vocabulary
    token = st.sampled_from([vocabulary - 1, vocabulary, vocabulary + 1, 0, -1, 2**63, 2**64, True, 1.5, 3.0, None])
    invokes = document.get("invokes")
    rows = (
        [row for invoke in invokes if isinstance(invoke, list) for row in invoke] if isinstance(invokes, list) else []
    )
    rows = [row for row in rows if isinstance(row, list)]
    how = draw(st.sampled_from(["token", "pad", "more rows", "long prompt", "empty", "many invokes"]))
    if how == "token" and rows:
        row = draw(st.sampled_from(rows))
        if row:
            row[draw(st.integers(0, len(row) - 1))] = draw(token)
    elif how == "pad":
        document["pad_token_id"] = draw(token)
    elif how == "more rows" and rows and isinstance(invokes, list) and isinstance(invokes[0], list):
        extra = limits.max_batch_size + draw(st.sampled_from([-1, 0, 1])) - len(rows)
        invokes[0].extend(list(rows[0]) for _ in range(max(extra, 0)))
    elif how == "long prompt" and rows:
        row = draw(st.sampled_from(rows))
        positions = request.served.positions
        wanted = draw(
            st.sampled_from([limits.max_prompt_tokens + 1, limits.max_prompt_tokens, positions, positions + 1])
        )
        row[:] = [row[index % len(row)] if row else 1 for index in range(wanted)]
    elif how == "empty":
        document["invokes"] = draw(st.sampled_from([[], [[]], [[[]]], [[[0]], []], None, [[[0]]] * 3]))
    elif how == "many invokes" and isinstance(invokes, list) and invokes:
        invokes.extend(json.loads(json.dumps(invokes[0])) for _ in range(draw(st.integers(1, limits.max_batch_size))))


def change_a_tensor_reference(draw: st.DrawFn, request: _Request, limits: Limits) -> None:
    paths = _paths(request.document)
    tagged = [path for path in paths if "tensor" in (_at(request.document, path, dict) or {})]
    arguments = [path for path in paths if len(path) >= 4 and path[0] == "nodes" and path[2] == "args"]
    if not tagged and not arguments:
        return
    path = draw(st.sampled_from(tagged or arguments))
    name = draw(st.sampled_from(["t0", "t1", "t9", "", "__metadata__", "x" * 300, *request.tensors]))
    request.document = _replaced(request.document, path, {"tensor": name})


def change_a_tensor(draw: st.DrawFn, request: _Request, limits: Limits) -> None:
    if not request.tensors or draw(st.integers(0, 4)) == 0:
        request.tensors[draw(st.sampled_from(["t0", "t9", "extra"]))] = draw(small_tensors(request.served))
        return
    name = draw(st.sampled_from(sorted(request.tensors)))
    tensor = request.tensors[name]
    how = draw(st.sampled_from(["values", "dtype", "shape", "empty", "scalar"]))
    if how == "values" and tensor.numel():
        flat = tensor.reshape(-1).clone()
        flat[draw(st.integers(0, flat.numel() - 1))] = draw(st.sampled_from(_extreme_values(tensor.dtype)))
        request.tensors[name] = flat.reshape(tensor.shape)
    elif how == "dtype":
        request.tensors[name] = tensor.to(draw(st.sampled_from(sorted(DTYPES.values(), key=str))))
    elif how == "shape":
        request.tensors[name] = tensor.reshape(1, *tensor.shape)
    elif how == "empty" or not tensor.numel():
        request.tensors[name] = tensor.reshape(-1)[:0]
    else:
        request.tensors[name] = tensor.reshape(-1)[:1].reshape(())


def _extreme_values(dtype: torch.dtype) -> list[Any]:
    """Values of `dtype` that break careless code: out-of-range indices, the type's ends, NaN and infinities."""
    if dtype == torch.bool:
        return [True, False]
    if dtype.is_floating_point:
        return [float("nan"), float("inf"), -float("inf"), torch.finfo(dtype).max, 1e6, -1.0]
    ends = torch.iinfo(dtype)
    return [ends.max, ends.min, -1, 0, min(10**6, ends.max)]


def small_tensors(served: ServedModel) -> st.SearchStrategy[torch.Tensor]:
    """Constants a request may carry: the model's width in floats, token ids, masks, scalars, odd dtypes."""
    hidden = served.hidden
    # fmt: off
    return st.sampled_from([
        torch.ones(hidden), torch.zeros(1, 1, hidden), torch.arange(hidden, dtype=torch.float16), torch.tensor([0, 2]),
        torch.tensor([[1, 2, 3]]), torch.tensor([served.vocabulary]), torch.tensor([True, False]), torch.tensor(3.0),
        torch.ones(2, 3, dtype=torch.bfloat16), torch.arange(6, dtype=torch.uint8),
    ])
    # fmt: on


DOCUMENT_MUTATIONS: tuple[Mutation, ...] = (
    replace_any_value,
    replace_any_value,
    splice_raw_json,
    delete_a_key,
    add_a_key,
    change_the_node_list,
    change_an_op,
    change_a_module_path,
    give_an_odd_name,
    change_an_invoke_or_step,
    change_the_shapes,
    change_the_shapes,
    change_an_option,
    change_an_option,
    change_the_inputs,
    change_a_tensor_reference,
    change_a_tensor,
)


# ----- mutations of the container's header -----
def change_the_header(draw: st.DrawFn, request: _Request, limits: Limits) -> None:
    if not request.tensors:
        request.tensors["t0"] = torch.arange(4, dtype=torch.float32)
    name = draw(st.sampled_from(sorted(request.tensors)))
    how = draw(st.sampled_from(["dtype", "shape", "offsets", "drop a key", "not an object", "extra entry", "metadata"]))
    value: Any
    if how == "dtype":
        value = draw(st.sampled_from((*NOT_A_DTYPE_CODE, "F64", "I8", "BOOL", "BF16")))
        request.header_edits.append(lambda header: header[name].__setitem__("dtype", value))
    elif how == "shape":
        value = draw(st.sampled_from(ODD_HEADER_SHAPES))
        request.header_edits.append(lambda header: header[name].__setitem__("shape", value))
    elif how == "offsets":
        value = draw(st.sampled_from(ODD_DATA_OFFSETS))
        request.header_edits.append(lambda header: header[name].__setitem__("data_offsets", value))
    elif how == "drop a key":
        key = draw(st.sampled_from(["dtype", "shape", "data_offsets"]))
        request.header_edits.append(lambda header: header[name].pop(key, None))
    elif how == "not an object":
        value = draw(st.sampled_from([5, [], "x", None, True]))
        request.header_edits.append(lambda header: header.__setitem__(name, value))
    elif how == "extra entry":
        extra = draw(st.sampled_from(["t9", "x" * (MAX_STRING + 1), "", "é"]))
        entry = {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]}
        request.header_edits.append(lambda header: header.__setitem__(extra, entry))
    else:
        value = draw(st.sampled_from([None, 5, [], {}, {METADATA_KEY: 5}, {METADATA_KEY: None}, {"other": "{}"}]))
        request.header_edits.append(lambda header: header.__setitem__("__metadata__", value))


# ----- mutations of the bytes -----
@st.composite
def mutated_bytes(draw: st.DrawFn, body: bytes) -> bytes:
    """`body` with a few bytes flipped, cut, added, or its header length changed."""
    data = bytearray(body)
    how = draw(st.sampled_from(["flip", "truncate", "extend", "header length", "tiny"]))
    if how == "flip" and data:
        for _ in range(draw(st.integers(1, 4))):
            data[draw(st.integers(0, len(data) - 1))] ^= draw(st.integers(1, 255))
    elif how == "truncate":
        del data[draw(st.integers(min(8, len(data)), len(data))) :]
    elif how == "extend":
        data += draw(st.binary(min_size=1, max_size=64))
    elif how == "header length":
        length = int.from_bytes(data[:8], "little")
        new = draw(st.sampled_from([0, 1, 7, length - 1, length + 1, len(data) - 8, len(data), 2**63, 2**64 - 1]))
        data[:8] = max(new, 0).to_bytes(8, "little")
    else:
        data = bytearray(draw(st.binary(max_size=8)))
    return bytes(data)


# ----- generated graphs -----
@st.composite
def generated_requests(draw: st.DrawFn, target: FuzzTarget, limits: Limits) -> _Request:
    """A document built from the schema's structure and the format's table of module events, on a served model:
    plausible inputs, options, module events with the shapes a kernel records, allowlisted operations on earlier
    nodes and constants; many follow every rule, some do not."""
    served = target.models[draw(st.sampled_from(target.names))]
    kind = draw(st.sampled_from(["trace", "trace", "generate"]))
    steps = draw(st.integers(1, 2)) if kind == "generate" else 1
    if kind == "generate" and draw(st.integers(0, 15)) == 0:
        steps = draw(st.sampled_from([limits.max_new_tokens, limits.max_new_tokens + 1]))
    token = st.integers(0, served.vocabulary - 1)
    invokes = draw(st.lists(st.lists(prompt_rows(served), min_size=1, max_size=2), min_size=1, max_size=2))
    options: dict[str, Any] = {"max_new_tokens": steps} if kind == "generate" else {}
    if draw(st.integers(0, 3 if kind == "generate" else 9)) == 0:
        options.update(draw(option_values(kind, served)))
    generator = torch.Generator().manual_seed(draw(st.integers(0, 2**16)))
    tensors = {
        "t0": torch.randn(served.hidden, generator=generator),
        "t1": torch.tensor([0, 1]),
        "t2": torch.randn(1, 1, served.hidden, generator=generator),
        "t3": torch.randint(0, served.vocabulary, (1, 3), generator=generator),
    }
    nodes: list[dict[str, Any]] = []
    values: list[int] = []
    for _ in range(draw(st.integers(1, 8))):
        node = draw(generated_nodes(served, kind, invokes, steps, values))
        if node["op"] not in ("module.set_output", "module.set_input", "module.set_inputs"):
            values.append(len(nodes))
        nodes.append(node)
    document = {
        "format": REQUEST_FORMAT,
        "version": FORMAT_VERSION,
        "model": served.name,
        "kind": kind,
        "options": options,
        "pad_token_id": draw(st.one_of(st.just(served.loaded.pad_token_id), token)),
        "invokes": invokes,
        "saved_bytes": draw(st.integers(0, 10**6)),
        "nodes": nodes,
    }
    return _Request(copy.deepcopy(document), tensors, served)


@st.composite
def prompt_rows(draw: st.DrawFn, served: ServedModel) -> list[int]:
    """A prompt of a recorded request with some of its tokens replaced: real lengths, whose shapes a server has
    mostly worked out already (a new length costs it fake forward passes)."""
    row = list(draw(st.sampled_from(served.prompts)))
    for _ in range(draw(st.integers(0, 2))):
        row[draw(st.integers(0, len(row) - 1))] = draw(st.integers(0, served.vocabulary - 1))
    return row


def option_values(kind: str, served: ServedModel) -> st.SearchStrategy[dict[str, Any]]:
    """A few options with values inside what a server allows (mostly)."""
    plausible: dict[str, st.SearchStrategy[Any]] = {
        "use_cache": st.booleans(),
        "output_attentions": st.just(False),
        "output_hidden_states": st.booleans(),
        "logits_to_keep": st.integers(0, 1),
        "do_sample": st.booleans(),
        "temperature": st.sampled_from([0.5, 1.0, 1.5]),
        "top_k": st.integers(0, 50),
        "top_p": st.sampled_from([0.5, 0.9, 1.0]),
        "min_p": st.sampled_from([0.0, 0.1]),
        "repetition_penalty": st.sampled_from([1.0, 1.2]),
        "no_repeat_ngram_size": st.integers(0, 3),
        "eos_token_id": st.integers(0, served.vocabulary - 1),
        "bad_words_ids": st.lists(st.lists(st.integers(0, served.vocabulary - 1), min_size=1, max_size=2), min_size=1),
        "suppress_tokens": st.lists(st.integers(0, served.vocabulary - 1), max_size=3),
        "min_new_tokens": st.integers(0, 2),
        "num_beams": st.just(1),
    }
    allowed = sorted(key for key in plausible if key in (GENERATE_OPTIONS if kind == "generate" else TRACE_OPTIONS))
    return st.sampled_from(allowed).flatmap(lambda key: plausible[key].map(lambda value: {key: value}))


def generated_nodes(
    served: ServedModel, kind: str, invokes: list, steps: int, values: list[int]
) -> st.SearchStrategy[dict[str, Any]]:
    """One node reading only the nodes in `values` (earlier nodes that have a value)."""
    return st.sampled_from(["get", "get", "get", "set", "call", "op", "op", "op", "op"]).flatmap(
        lambda category: _node_of(category, served, kind, invokes, steps, values)
    )


def _node_of(
    category: str, served: ServedModel, kind: str, invokes: list, steps: int, values: list[int]
) -> st.SearchStrategy[dict[str, Any]]:
    if category in ("get", "set") or (category != "op" and not values):
        return _event_node(category, served, kind, invokes, steps, values)
    if category == "call" and values:
        return _call_node(served, values)
    return _operation_node(served, values)


@st.composite
def _event_node(
    draw: st.DrawFn, category: str, served: ServedModel, kind: str, invokes: list, steps: int, values: list[int]
) -> dict[str, Any]:
    if category == "set":
        op = draw(st.sampled_from(["module.set_output", "module.set_output", "module.set_input", "module.set_inputs"]))
    else:
        op = draw(st.sampled_from(["module.output", "module.output", "module.output", "module.input", "module.inputs"]))
    invoke = draw(st.integers(0, len(invokes) - 1))
    step = draw(st.integers(0, steps - 1))
    path = draw(st.sampled_from(served.called_paths))
    rows = invokes[invoke]
    shapes = served.event_shapes(op, path, len(rows), max(len(row) for row in rows), step, kind)
    args: list[Any] = [path, invoke, step]
    if category == "set":
        args.append(draw(_operand(served, values, prefer_ref=True)))
    node = {"op": op, "args": args, "kwargs": {"shapes": shapes if shapes is not None else []}, "saved": False}
    if category == "get":
        node["saved"] = draw(st.booleans())
    return _with_source(draw, node)


@st.composite
def _call_node(draw: st.DrawFn, served: ServedModel, values: list[int]) -> dict[str, Any]:
    path = draw(st.sampled_from(served.called_paths))
    argument = draw(st.one_of(st.builds(lambda n: {"ref": n}, st.sampled_from(values)), st.just({"tensor": "t3"})))
    node: dict[str, Any] = {"op": "module.call", "args": [path, {"tuple": [argument]}, {"dict": {}}], "kwargs": {}}
    node["saved"] = draw(st.booleans())
    return _with_source(draw, node)


@st.composite
def _operation_node(draw: st.DrawFn, served: ServedModel, values: list[int]) -> dict[str, Any]:
    op = draw(st.sampled_from(sorted(OPERATIONS)))
    first: Any = {"ref": draw(st.sampled_from(values))} if values else {"tensor": "t2"}
    extra = draw(st.lists(_operand(served, values), max_size=2)) if draw(st.booleans()) else []
    kwargs = draw(st.sampled_from(OPERATION_KEYWORDS))
    node = {"op": op, "args": [first, *extra], "kwargs": kwargs, "saved": draw(st.booleans())}
    return _with_source(draw, node)


def _operand(served: ServedModel, values: list[int], prefer_ref: bool = False) -> st.SearchStrategy[Any]:
    constants = st.sampled_from(OPERANDS)
    if not values:
        return constants
    refs = st.builds(lambda n: {"ref": n}, st.sampled_from(values))
    return st.one_of(refs, refs, constants) if prefer_ref else st.one_of(refs, constants, constants)


def _with_source(draw: st.DrawFn, node: dict[str, Any]) -> dict[str, Any]:
    if draw(st.integers(0, 3)) == 0:
        node["source"] = {"file": "<cell>", "line": draw(st.integers(0, 500)), "text": "h = model.layers[0].output"}
    return node


# ----- what the strategies give -----
@st.composite
def captured_bodies(draw: st.DrawFn, target: FuzzTarget) -> bytes:
    """A real request as a kernel sends it."""
    return draw(st.sampled_from(target.captured)).body


@st.composite
def generated_bodies(draw: st.DrawFn, target: FuzzTarget, limits: Limits) -> bytes:
    """A graph generated from the schema, packed."""
    return draw(generated_requests(target, limits)).body()


@st.composite
def mutated_bodies(draw: st.DrawFn, target: FuzzTarget, limits: Limits) -> bytes:
    """A recorded or generated request changed by one to three mutations of its document, sometimes its header,
    sometimes its bytes."""
    if draw(st.integers(0, 4)):
        captured = draw(st.sampled_from(target.captured))
        request = _from_body(captured.body, target, captured.model)
    else:
        request = draw(generated_requests(target, limits))
    for _ in range(draw(st.integers(1, 3))):
        draw(st.sampled_from(DOCUMENT_MUTATIONS))(draw, request, limits)
        # Values drawn from constant pools are shared between examples: never change one in place.
        request.document = copy.deepcopy(request.document)
    if draw(st.integers(0, 5)) == 0:
        change_the_header(draw, request, limits)
    body = request.body()
    if draw(st.integers(0, 7)) == 0:
        body = draw(mutated_bytes(body))
    return body


@st.composite
def size_cases(draw: st.DrawFn, target: FuzzTarget, limits: Limits) -> bytes:
    """Bodies around the size limits: over and at the body's limit, a string at the longest, many values, nesting
    far too deep, a header of many tensors."""
    captured = draw(st.sampled_from(target.captured))
    request = _from_body(captured.body, target, captured.model)
    case = draw(
        st.sampled_from(
            ["big tensor", "trailing bytes", "at the limit", "long string", "many values", "deep", "big header"]
        )
    )
    limit = limits.max_request_bytes
    if case == "big tensor":
        request.tensors["big"] = torch.zeros(limit // 4 + draw(st.integers(1, 1000)))
    elif case == "long string":
        text = "x" * (MAX_STRING + draw(st.integers(-1, 1)))
        request.block()["nodes"][0]["source"] = {"file": "<cell>", "line": 1, "text": text}
    elif case == "many values":
        request.block()["options"]["extra"] = [0] * (limits.max_document_items + draw(st.integers(-10, 10)))
    elif case == "deep":
        request.block()["nodes"][0]["args"].append(request.splice("[" * 200_000 + "]" * 200_000))
    elif case == "big header":
        entries = {f"e{index}": {"dtype": "F32", "shape": [0], "data_offsets": [0, 0]} for index in range(10_000)}
        request.header_edits.append(lambda header: header.update(entries))
    body = request.body()
    if case == "trailing bytes":
        body += bytes(limit - len(body) + draw(st.integers(1, 1000)))
    elif case == "at the limit":
        body += b" " * (limit - len(body))
    return body


@st.composite
def request_bodies(draw: st.DrawFn, target: FuzzTarget, limits: Limits) -> bytes:
    """Any of the bodies above: a few real requests as sent, mostly mutations and generated graphs, and now and
    then a body around the size limits."""
    roll = draw(st.integers(0, 99))
    if roll < 5:
        return draw(captured_bodies(target))
    if roll < 55:
        return draw(mutated_bodies(target, limits))
    if roll < 95:
        return draw(generated_bodies(target, limits))
    return draw(size_cases(target, limits))


def describe_body(body: bytes, limit: int = 3000) -> str:
    """A body as a report shows it: its size, and its header and document as text (cut to `limit` characters)."""
    length = int.from_bytes(body[:8], "little") if len(body) >= 8 else None
    if length is None or length > len(body) - 8:
        return f"{len(body)} bytes: {body[:limit]!r}"
    header = body[8 : 8 + length].decode("utf-8", "replace")
    if len(header) > limit:
        header = f"{header[:limit]}… ({len(header)} characters)"
    return f"{len(body)} bytes, header of {length}: {header}"

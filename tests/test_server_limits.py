"""Hostile and careless requests against a real `jupyter server` process: each is refused cheaply (a short 4xx) or
ends as a clean job error, and the server goes on answering within its memory bound."""

from __future__ import annotations

import http.client
import json
import threading
import time
from collections.abc import Iterator

import pytest
import torch

from ndif_jupyter.ir.graph import Graph, Invoke, Node, Ref
from ndif_jupyter.ir.result import SessionResult
from ndif_jupyter.ir.session import MAX_BLOCKS, Session
from ndif_jupyter.protocol.container import CONTENT_TYPE, pack, unpack
from ndif_jupyter.protocol.request import encode_request
from ndif_jupyter.protocol.result import decode_result
from ndif_testing.jupyter_process import JupyterServerProcess

pytestmark = [pytest.mark.server, pytest.mark.slow]

MB = 1024**2
LIMITS = {
    "max_nodes": 4000,
    "max_new_tokens": 1500,
    "max_batch_size": 8,
    "max_prompt_tokens": 64,
    "max_result_bytes": 8 * MB,
    "max_request_bytes": 16 * MB,
    "max_memory_bytes": 256 * MB,
    "max_job_seconds": 20.0,
    "max_queued_jobs": 50,
    "max_queued_per_user": 4,
}
PROMPT_IDS = [[5, 6, 7, 8, 9, 10, 11, 12]]


@pytest.fixture(scope="module")
def served(gpt2_dir, llama_dir, tmp_path_factory) -> Iterator[JupyterServerProcess]:
    responses = tmp_path_factory.mktemp("responses")
    config = {
        "NDIFServer": {"models": [str(gpt2_dir), str(llama_dir)], "response_path": str(responses), **LIMITS},
    }
    with JupyterServerProcess(config) as server:
        status, _, _ = post(server, encode_request(_output_graph(), str(gpt2_dir)))
        assert status == 202
        server.warm_bytes = server.resident_bytes()  # type: ignore[attr-defined]
        yield server


def post(
    server: JupyterServerProcess, body: bytes, declared: int | None = None, filler: int = 0, send: bool = True
) -> tuple[int, dict[str, str], dict]:
    """POST a job body (or `filler` zero bytes of it) the way any HTTP client may: the status, headers and JSON."""
    connection = http.client.HTTPConnection("127.0.0.1", server.port, timeout=300)
    connection.putrequest("POST", server.base_url + "ndif/api/jobs")
    connection.putheader("Authorization", f"token {server.token}")
    connection.putheader("Content-Type", CONTENT_TYPE)
    connection.putheader("Content-Length", str(declared if declared is not None else len(body) + filler))
    connection.endheaders()
    if send:
        connection.send(body)
        chunk = bytes(MB)
        for start in range(0, filler, MB):
            connection.send(chunk[: min(MB, filler - start)])
    response = connection.getresponse()
    answer = response.read()
    connection.close()
    return response.status, dict(response.getheaders()), json.loads(answer or b"{}")


def wait_finished(server: JupyterServerProcess, job_id: str) -> dict:
    for _ in range(120):
        job = server.get(f"ndif/api/jobs/{job_id}?wait=5&until=finished")
        if job["status"] in ("done", "error", "cancelled"):
            return job
    raise AssertionError(f"job {job_id} did not finish")


def refused(server: JupyterServerProcess, body: bytes, status: int = 400) -> str:
    """The message of a refusal, checked to be short, with the server still answering and nothing queued."""
    before = len(server.get("ndif/api/jobs")["jobs"])
    started = time.monotonic()
    got, _, document = post(server, body)
    elapsed = time.monotonic() - started
    assert got == status, document
    message = document["message"]
    assert 0 < len(message.encode()) < 1024
    assert "/tmp/" not in message and "site-packages" not in message
    assert len(server.get("ndif/api/jobs")["jobs"]) == before, "nothing was queued"
    assert elapsed < 30, f"a refusal took {elapsed:.1f} s"
    return message


def _graph(nodes: list[Node], kind: str = "trace", rows=None, **options) -> Graph:
    if kind == "generate":
        options.setdefault("max_new_tokens", 2)
    return Graph(kind, nodes, [Invoke(rows or PROMPT_IDS)], options, 0)  # type: ignore[arg-type]


def _output_graph() -> Graph:
    return _graph([Node(0, "module.output", ("transformer.h.0", 0, 0), {"shapes": [[1, 8, 64]]}, saved=True)])


def _hidden(path: str = "transformer.h.0") -> Node:
    return Node(0, "module.output", (path, 0, 0), {"shapes": [[1, 8, 64]]})


def _body(graph: Graph, model_dir) -> bytes:
    return encode_request(graph, str(model_dir))


def _edited(body: bytes, change) -> bytes:
    document, tensors = unpack(body)
    change(document, tensors)
    return pack(document, tensors)


# ----- 500s from tiny inputs -----
def test_deeply_nested_arguments_are_refused_not_500(served, gpt2_dir):
    body = _body(_graph([_hidden(), Node(1, "getitem", (Ref(0), 0), saved=True)]), gpt2_dir)

    def nest(levels: int, tag: str | None):
        def change(document, tensors):
            value: object = 0
            for _ in range(levels):
                value = [value] if tag is None else {tag: [value]}
            document["nodes"][1]["args"][1] = value

        return change

    for levels, tag in ((163, None), (98, "tuple"), (900, None)):
        message = refused(served, _edited(body, nest(levels, tag)))
        assert "nested more than 48 levels deep" in message
    raw = b"[" * 100_000 + b"]" * 100_000
    document = json.dumps({"format": "ndif.request"}).encode()
    header = json.dumps({"__metadata__": {"ndif": (document[:-1] + b', "x": ' + raw + b"}").decode()}}).encode()
    message = refused(served, len(header).to_bytes(8, "little") + header)
    assert "nested more than 48 levels deep" in message


def test_a_tensor_with_an_overflowing_shape_is_refused(served, gpt2_dir):
    body = _body(_graph([_hidden(), Node(1, "add", (Ref(0), torch.zeros(2)), saved=True)]), gpt2_dir)
    length = int.from_bytes(body[:8], "little")
    header = json.loads(body[8 : 8 + length])
    header["t0"]["shape"] = [0, 2**64]
    raw = json.dumps(header).encode()
    message = refused(served, len(raw).to_bytes(8, "little") + raw + body[8 + length :])
    assert "at most 16 dimensions, each at most" in message


# ----- limits that could be walked around -----
def test_a_module_call_counts_against_the_prompt_and_batch_limits(served, gpt2_dir):
    for shape, limit in (((1, 12_000), "over this server's limit of 64"), ((64, 2048), "limit of 8 prompts")):
        ids = torch.zeros(shape, dtype=torch.long)
        graph = _graph([Node(0, "module.call", ("transformer", (ids,), {})), Node(1, "getitem", (Ref(0), 0))])
        graph.nodes[1].saved = True
        assert limit in refused(served, _body(graph, gpt2_dir))


def test_chained_intermediates_over_the_memory_limit_never_allocate(served, gpt2_dir):
    before = served.peak_resident_bytes()
    nodes = [
        _hidden(),
        Node(1, "tensor.repeat", (Ref(0), 1, 1024, 1024)),  # 2 GiB
        Node(2, "mul", (Ref(1), 2.0)),  # 2 GiB more
        Node(3, "tensor.sum", (Ref(2),), saved=True),  # 4 bytes saved
    ]
    message = refused(served, _body(_graph(nodes), gpt2_dir))
    assert "node 1 (`tensor.repeat`)" in message and "over this server's limit of 268.4 MB" in message
    assert served.peak_resident_bytes() - before < 64 * MB


def test_saving_over_the_result_limit_is_refused_before_running_whatever_is_declared(served, gpt2_dir):
    nodes = [_hidden(), Node(1, "tensor.repeat", (Ref(0), 1, 64, 512), saved=True)]  # 64 MiB
    graph = _graph(nodes)
    graph.saved_bytes = 0
    message = refused(served, _body(graph, gpt2_dir))
    assert "the saved values would be 67.1 MB, over this server's limit of 8.4 MB" in message


@pytest.mark.parametrize(
    "options, problem",
    [
        ({"bad_words_ids": 43}, "bad_words_ids=43: it must be a list of non-empty lists of token ids"),
        ({"temperature": -1.0}, "temperature=-1.0: it must be between"),
        ({"eos_token_id": [10**9]}, "token ids must be integers from 0 to"),
        ({"do_sample": "yes"}, "do_sample='yes': it must be true or false"),
        ({"max_new_tokens": 200}, "past the model's 128"),
        ({"seed": -1}, "seed=-1: it must be an integer of at least 0"),
        ({"seed": 2**63}, "it must be below 2**63"),
        ({"num_beams": 2, "num_return_sequences": 3}, "more than num_beams=2"),
        ({"num_beams": 9}, "the batch has 9 rows with its beams or sequences, over this server's limit of 8"),
        ({"num_return_sequences": 2}, "without beams or sampling"),
        ({"max_new_tokens": 2, "min_new_tokens": 5}, "min_new_tokens=5 is more than max_new_tokens=2"),
    ],
)
def test_option_values_and_positions_are_checked_before_queueing(served, gpt2_dir, options, problem):
    graph = _graph([_hidden()], "generate", **options)
    assert problem in refused(served, _body(graph, gpt2_dir))


def test_indices_out_of_range_are_refused_or_fail_the_job_cleanly(served, gpt2_dir):
    constant = _graph([_hidden(), Node(1, "getitem", (Ref(0), (slice(None), 100)), saved=True)])
    assert "index 100 is out of range for dimension 1 of size 8" in refused(served, _body(constant, gpt2_dir))
    embedding = _graph([Node(0, "module.call", ("transformer.wte", (torch.tensor([[10**6]]),), {}), saved=True)])
    assert "out of range for the embedding's vocabulary" in refused(served, _body(embedding, gpt2_dir))
    computed = _graph(
        [
            _hidden(),
            Node(1, "tensor.argmax", (Ref(0), -1)),  # values only the run knows
            Node(2, "add", (Ref(1), 1000)),
            Node(3, "getitem", (Ref(0), (0, Ref(2))), saved=True),
        ]
    )
    status, _, job = post(served, _body(computed, gpt2_dir))
    assert status == 202
    job = wait_finished(served, job["id"])
    assert job["status"] == "error" and job["error"]["phase"] == "running"
    assert "is out of range for dimension 1 of size 8" in job["error"]["message"]


# ----- work before any limit -----
def test_a_body_over_the_limit_gets_413_and_is_never_held(served, gpt2_dir):
    body = _body(_graph([_hidden()]), gpt2_dir)
    before = served.resident_bytes()
    status, _, document = post(served, body, filler=100 * MB)
    assert status == 413 and "over this server's limit of 16.8 MB" in document["message"]
    assert served.peak_resident_bytes() < max(before, served.warm_bytes) + 3 * LIMITS["max_request_bytes"] + 64 * MB
    status, _, document = post(served, b"", declared=600 * 1024**3, send=False)
    assert status == 413 and "the request is 644245.1 MB" in document["message"]
    assert served.get("ndif/api/models")["models"]


def test_too_many_nodes_are_refused_at_the_cost_of_reading_them(served, gpt2_dir):
    nodes = [_hidden()] + [Node(i, "add", (Ref(i - 1), 1.0)) for i in range(1, 30_000)]
    nodes[-1].saved = True
    body = _body(_graph(nodes), gpt2_dir)
    assert len(body) < LIMITS["max_request_bytes"]
    started = time.monotonic()
    message = refused(served, body)
    assert "the graph has 30000 nodes, over this server's limit of 4000" in message
    print(f"refused {len(body) / 1e6:.1f} MB of 30,000 nodes in {time.monotonic() - started:.2f} s")


def test_many_requests_at_once_neither_starve_the_api_nor_queue_without_bound(served, llama_dir):
    long = _graph(
        [Node(0, "module.output", ("model.layers.0", 0, 0), {"shapes": [[1, 8, 64]]}, saved=True)],
        "generate",
        max_new_tokens=1500,
    )
    body = encode_request(long, str(llama_dir))
    answers: list[tuple[int, dict, dict]] = []

    def send() -> None:
        answers.append(post(served, body))

    senders = [threading.Thread(target=send) for _ in range(10)]
    for sender in senders:
        sender.start()
    started = time.monotonic()
    assert served.get("api/status") is not None
    api_seconds = time.monotonic() - started
    for sender in senders:
        sender.join()
    statuses = sorted(status for status, _, _ in answers)
    assert set(statuses) <= {202, 429} and statuses.count(202) <= LIMITS["max_queued_per_user"], statuses
    busy = [(headers, document) for status, headers, document in answers if status == 429]
    assert busy and all(headers.get("Retry-After", "").isdigit() for headers, _ in busy)
    assert all(len(document["message"]) < 300 for _, document in busy)
    assert api_seconds < 5
    for status, _, job in answers:
        if status == 202:
            cancelled = served.request("DELETE", f"ndif/api/jobs/{job['id']}")
            if cancelled:  # 202 with the job; a job that finished before this DELETE is removed instead (204)
                assert wait_finished(served, job["id"])["status"] in ("cancelled", "done")


# ----- stopping runaway work -----
def _busy_trace(model_dir, matmuls: int) -> bytes:
    weight = torch.randn(1024, 1024) / 32
    nodes = [_hidden()]
    nodes.append(Node(1, "tensor.reshape", (Ref(0), 512)))
    nodes.append(Node(2, "tensor.repeat", (Ref(1), 2048, 2)))  # 2048 × 1024
    for _ in range(matmuls):
        nodes.append(Node(len(nodes), "matmul", (Ref(len(nodes) - 1), weight)))
    nodes.append(Node(len(nodes), "tensor.sum", (Ref(len(nodes) - 1),), saved=True))
    return _body(_graph(nodes), model_dir)


def _cancel_seconds(server: JupyterServerProcess, body: bytes, running_step: int = 0) -> float:
    status, _, job = post(server, body)
    assert status == 202
    for _ in range(300):
        job = server.get(f"ndif/api/jobs/{job['id']}?wait=1")
        if job["status"] == "running" and job["phase"] == "running" and job["step"] >= running_step:
            break
    assert job["status"] == "running", job
    time.sleep(0.5)
    started = time.monotonic()
    server.request("DELETE", f"ndif/api/jobs/{job['id']}")
    job = wait_finished(server, job["id"])
    elapsed = time.monotonic() - started
    assert job["status"] == "cancelled", job
    return elapsed


def test_cancel_stops_a_busy_trace_and_a_generation(served, gpt2_dir, llama_dir, test_output):
    trace_seconds = _cancel_seconds(served, _busy_trace(gpt2_dir, 3000))
    generation = _graph(
        [Node(0, "module.output", ("model.layers.0", 0, 0), {"shapes": [[1, 8, 64]]}, saved=True)],
        "generate",
        max_new_tokens=1500,
    )
    generation_seconds = _cancel_seconds(served, encode_request(generation, str(llama_dir)), running_step=3)
    assert trace_seconds < 5 and generation_seconds < 5
    (test_output / "cancel-seconds.json").write_text(
        json.dumps({"busy_trace": round(trace_seconds, 3), "generation": round(generation_seconds, 3)})
    )


def test_a_job_over_the_time_limit_ends_with_its_own_error(served, gpt2_dir):
    status, _, job = post(served, _busy_trace(gpt2_dir, 3000))
    assert status == 202
    job = wait_finished(served, job["id"])
    assert job["status"] == "error" and job["error"]["type"] == "RunTimedOut", job
    assert "limit of 20 s a job" in job["error"]["message"] and job["error"]["phase"] == "running"
    assert job["run_seconds"] < LIMITS["max_job_seconds"] + 10


# ----- no amplification -----
def test_a_huge_string_gives_a_short_message_and_short_log_lines(served, gpt2_dir):
    logged = served.log_path.stat().st_size
    body = _body(_graph([_hidden(), Node(1, "x" * (10 * MB), (Ref(0),), saved=True)]), gpt2_dir)
    message = refused(served, body)
    assert "holds a string of 10485760 characters; the longest allowed is 16384" in message
    time.sleep(0.5)
    assert served.log_path.stat().st_size - logged < 4096


@pytest.mark.parametrize(
    ("origin", "problem"),
    [
        ({"notebook": "n" * (2 * MB)}, "holds a string of 2097152 characters; the longest allowed is 16384"),
        ({"notebook": {"nested": [[[["x.ipynb"]]]]}}, "origin/notebook"),
        ({"notebook": "a\u0000b.ipynb"}, "origin/notebook"),
        ({"notebook": "x.ipynb", "owner": "root"}, "origin"),
        ({"cell": "../../etc/passwd"}, "origin/cell"),
        ({"cell": "c" * 65}, "origin/cell"),
        ("x.ipynb", "origin"),
    ],
    ids=["huge", "nested", "control character", "another key", "cell path", "long cell", "not an object"],
)
def test_a_hostile_origin_is_refused_short_and_a_fair_one_is_only_shown(served, gpt2_dir, origin, problem):
    """`origin` is display only, and bounded like every other field; a fair one is listed with the job and changes
    nothing else (the job's owner stays the token's user)."""
    body = _body(_output_graph(), gpt2_dir)
    message = refused(served, _edited(body, lambda document, tensors: document.__setitem__("origin", origin)))
    assert problem in message
    fair = {"notebook": "work/x.ipynb", "cell": "a1-b2"}
    status, _, job = post(served, _edited(body, lambda document, tensors: document.__setitem__("origin", fair)))
    assert status == 202, job
    finished = wait_finished(served, job["id"])
    assert finished["status"] == "done" and finished["origin"] == fair
    assert finished["owner"] == served.get("ndif/api/models")["user"]["name"]


def test_the_server_stays_within_its_memory_bound(served):
    bound = served.warm_bytes + 3 * LIMITS["max_request_bytes"] + LIMITS["max_memory_bytes"] + 256 * MB
    assert served.peak_resident_bytes() < bound, (served.peak_resident_bytes(), bound)
    assert served.get("ndif/api/models")["models"]


def _loss_nodes() -> list[Node]:
    """Layer 0's output, and a loss from it: the start of a gradient graph."""
    return [_hidden(), Node(1, "tensor.sum", (Ref(0),), {})]


@pytest.mark.parametrize(
    ("nodes", "kind", "problem"),
    [
        (
            [*_loss_nodes(), Node(2, "backward", (Ref(1), None)), Node(3, "backward", (Ref(1), None))],
            "trace",
            "at most one backward pass",
        ),
        (
            [*_loss_nodes(), Node(2, "grad", (Ref(0),), {"shapes": [[1, 8, 64]]}), Node(3, "backward", (Ref(1), None))],
            "trace",
            "only after the backward pass",
        ),
        ([*_loss_nodes(), Node(2, "backward", (Ref(1), None))], "generate", "not in a generation"),
        (
            [*_loss_nodes(), Node(2, "backward", (Ref(1), None)), Node(3, "grad", (Ref(1),), {"shapes": [[]]})],
            "trace",
            "only of a module value or a trainable",
        ),
        (
            [*_loss_nodes(), Node(2, "backward", (Ref(1), None)), Node(3, "grad", (Ref(0),), {"shapes": [[9, 9]]})],
            "trace",
            "declared shape",
        ),
        ([_hidden(), Node(1, "module.weight", ("lm_head", "secret"))], "trace", "no weight or buffer"),
        ([_hidden(), Node(1, "module.skip", ("", 0, 0, 1.0), {"shapes": [None]})], "trace", "cannot be skipped"),
        ([_hidden(), Node(1, "stop", (1,))], "trace", "stop takes no arguments"),
        ([_hidden(), Node(1, "trainable", ("not a tensor",))], "trace", "trainable takes one tensor"),
        ([_hidden(), Node(1, "tensor.sum", (Ref(0),), {"condition": Ref(0)})], "trace", "an earlier cond node"),
        (
            [Node(0, "module.output", ("transformer.h.0.attn.ops.os_system", 0, 0), {"shapes": [[1]]})],
            "trace",
            "has no inner operation `os_system`",
        ),
        (
            [
                _hidden(),
                Node(1, "module.skip", ("transformer.h.0.attn.ops.attention_interface", 0, 0, 1.0), {"shapes": [None]}),
            ],
            "trace",
            "cannot be called or skipped",
        ),
        ([_hidden(), Node(1, "cond", (Ref(0), Ref(0)))], "trace", "cond takes one predicate"),
        ([_hidden(), Node(1, "cond", (Ref(0),))], "trace", "a condition must be one value"),
        (
            [*_loss_nodes(), Node(2, "cond", (Ref(1),)), Node(3, "backward", (Ref(1), None), {"condition": Ref(2)})],
            "trace",
            "backward cannot run under a condition",
        ),
        (
            [_hidden(), Node(1, "tensor.repeat", (Ref(0), 200, 1, 1)), Node(2, "tensor.tolist", (Ref(1),))],
            "trace",
            "past the 65,536",
        ),
    ],
)
def test_malformed_gradient_skip_stop_and_weight_graphs_are_refused(served, gpt2_dir, nodes, kind, problem):
    assert problem in refused(served, _body(_graph(nodes, kind), gpt2_dir))


def test_a_gradient_job_sent_by_hand_runs_and_gives_the_gradient(served, gpt2_dir):
    nodes = [
        *_loss_nodes(),
        Node(2, "backward", (Ref(1), None)),
        Node(3, "grad", (Ref(0),), {"shapes": [[1, 8, 64]]}, saved=True),
    ]
    for _ in range(2):  # the second sees nothing the first left behind
        status, _, document = post(served, _body(_graph(nodes), gpt2_dir))
        assert status == 202, document
        job = wait_finished(served, document["id"])
        assert job["status"] == "done", job
        result = decode_result(served.request("GET", f"ndif/api/jobs/{document['id']}/result"))
        assert torch.equal(result.saved[3], torch.ones(1, 8, 64)), "the gradient of a sum is one everywhere"


# ----- sessions -----


def _session(*blocks: list[Node]) -> Session:
    return Session([_graph(nodes) for nodes in blocks])


@pytest.mark.parametrize(
    ("request_of", "problem"),
    [
        (lambda: _graph([_hidden(), Node(1, "session.value", (0, 0))]), "this request has none before it"),
        (lambda: _session([_hidden()], [_hidden(), Node(1, "session.value", (1, 0))]), "is not an earlier block"),
        (lambda: _session([_hidden()], [Node(0, "session.value", (0, 5))]), "block 0 has no node 5"),
        (lambda: _session([_hidden()], [Node(0, "session.value", ("0", 0))]), "two integers"),
        (lambda: _session(*[[_hidden()]] * (MAX_BLOCKS + 1)), "over the limit of 64"),
        (
            lambda: _session(
                [_hidden(), Node(1, "tensor.repeat", (Ref(0), 1, 200, 256))],
                [Node(0, "session.value", (0, 1)), Node(1, "mul", (Ref(0), 2))],
            ),
            "block 2 of the session: node 1 (`mul`): the graph's values would take 314.6 MB here",
        ),
    ],
)
def test_malformed_or_too_costly_sessions_are_refused(served, gpt2_dir, request_of, problem):
    assert problem in refused(served, _body(request_of(), gpt2_dir))


def test_a_session_sent_by_hand_is_one_job_whose_blocks_read_each_other(served, gpt2_dir):
    layer = [Node(0, "module.output", ("transformer.h.0", 0, 0), {"shapes": [[1, 8, 64]]})]
    first = [*layer, Node(1, "tensor.repeat", (Ref(0), 1, 200, 256))]
    second = [Node(0, "session.value", (0, 1)), Node(1, "tensor.sum", (Ref(0),), saved=True)]
    third = [
        Node(0, "session.value", (0, 0)),
        Node(1, "module.set_output", ("transformer.h.1", 0, 0, Ref(0)), {"shapes": [[1, 8, 64]]}),
        Node(2, "module.output", ("transformer.h.1", 0, 0), {"shapes": [[1, 8, 64]]}, saved=True),
    ]
    status, _, job = post(served, _body(_session(first, second, third), gpt2_dir))
    assert status == 202, job
    assert (job["kind"], job["steps"]) == ("session", 3)
    assert wait_finished(served, job["id"])["status"] == "done"
    result = decode_result(served.request("GET", f"ndif/api/jobs/{job['id']}/result"))
    assert isinstance(result, SessionResult) and [len(block.saved) for block in result.results] == [0, 1, 1]
    patched = result.results[2].saved[2]
    assert torch.equal(result.results[1].saved[1], patched.repeat(1, 200, 256).sum())

"""The server extension's REST API in a Jupyter server (pytest-jupyter): every endpoint, authentication,
authorization, validation, cancelling, results equal to the same graph run in the kernel, and the rules per user: jobs
belong to the server's one user, another owner's job is unknown, places in the fair queue, stored results capped."""

from __future__ import annotations

import asyncio
import json
import os
import sys

import pytest
import torch
from jupyter_server.auth import Authorizer
from tornado.httpclient import HTTPClientError

from ndif_jupyter import ExecutionError, Model
from ndif_jupyter.client import SERVER_TOKEN_ENV, SERVER_URL_ENV
from ndif_jupyter.errors import NDIFError
from ndif_jupyter.protocol.container import CONTENT_TYPE, pack, unpack
from ndif_jupyter.protocol.origin import Origin
from ndif_jupyter.protocol.request import encode_request
from ndif_jupyter.protocol.result import decode_result

PROMPT = "The Eiffel Tower is in the city of"
pytestmark = [pytest.mark.usefixtures("ndif_client_environment"), pytest.mark.server]


class Recorded(Exception):
    """Leaves a block once its graph is taken, so that the graph is only sent, never run in the kernel."""


class DenyNDIF(Authorizer):
    """Lets the user do anything but use the `ndif` resource."""

    def is_authorized(self, handler, user, action, resource):
        return resource != "ndif"


@pytest.fixture
def ndif_settings(gpt2_dir, llama_dir, tmp_path):
    return {
        "models": [str(gpt2_dir), str(llama_dir)],
        "response_path": str(tmp_path / "responses"),
        "max_new_tokens": 600,
        "max_batch_size": 4,
        "max_nodes": 200,
        "max_result_bytes": 4_000_000,
    }


@pytest.fixture
def jp_server_config(ndif_settings):
    return {"ServerApp": {"jpserver_extensions": {"ndif_server": True}}, "NDIFServer": ndif_settings}


def recorded(model: Model, kind: str = "trace", **options):
    """Run a small block in the kernel; returns the graph that ran and the values it saved (the local truth)."""
    with model.trace(**options) if kind == "trace" else model.generate(**options) as block:
        with block.invoke(PROMPT):
            layers = model.transformer.h if hasattr(model.config, "n_layer") else model.model.layers
            first = layers[0].output.save()
            layers[1].output[:, -1] = 0
            last = (layers[-1].output * 2).save()
    return block.graph(), {first.node_id: first.value, last.node_id: last.value}, block


async def post_job(jp_fetch, body: bytes):
    response = await jp_fetch("ndif", "api", "jobs", method="POST", body=body, headers={"Content-Type": CONTENT_TYPE})
    assert response.code == 202
    job = json.loads(response.body)
    assert response.headers["Location"].endswith(job["id"])
    return job


async def wait_done(jp_fetch, job_id: str) -> dict:
    for _ in range(600):
        response = await jp_fetch("ndif", "api", "jobs", job_id, params={"wait": "2"})
        job = json.loads(response.body)
        if job["status"] in ("done", "error", "cancelled"):
            return job
    raise AssertionError(f"job {job_id} did not finish")


async def test_models_lists_each_served_model_with_its_module_tree(jp_fetch, server, gpt2_dir, gpt2):
    response = await jp_fetch("ndif", "api", "models")
    document = json.loads(response.body)
    assert document["backend"] == "local"
    assert document["limits"]["max_new_tokens"] == 600
    entry = next(model for model in document["models"] if model["name"] == str(gpt2_dir))
    assert entry["class"] == "GPT2LMHeadModel" and entry["loaded"] is False
    assert entry["parameters"] == sum(p.numel() for p in gpt2.loaded.meta_model.parameters())
    transformer = next(child for child in entry["modules"]["children"] if child["name"] == "transformer")
    blocks = next(child for child in transformer["children"] if child["name"] == "h")
    assert [block["name"] for block in blocks["children"]] == ["0", "1", "2", "3"]
    assert blocks["children"][0]["class"] == "GPT2Block"


async def test_a_job_gives_the_values_of_the_same_graph_run_locally(jp_fetch, server, gpt2):
    graph, local, block = recorded(gpt2, "generate", max_new_tokens=3)
    job = await post_job(jp_fetch, encode_request(graph, gpt2.name))
    assert job["status"] in ("queued", "running") and job["steps"] == 3
    job = await wait_done(jp_fetch, job["id"])
    assert job["status"] == "done", job
    assert job["step"] == 3 and job["run_seconds"] > 0 and job["queued_seconds"] >= 0
    response = await jp_fetch("ndif", "api", "jobs", job["id"], "result")
    assert response.headers["Content-Type"] == CONTENT_TYPE
    assert int(response.headers["Content-Length"]) == len(response.body) == job["result_bytes"]
    result = decode_result(response.body)
    assert set(result.saved) == set(local)
    for node_id, value in local.items():
        assert torch.equal(result.saved[node_id], value)
    assert torch.equal(result.output_ids, block.output)
    listing = json.loads((await jp_fetch("ndif", "api", "jobs")).body)["jobs"]
    assert [entry["id"] for entry in listing] == [job["id"]]
    assert listing[0]["owner"]
    models = json.loads((await jp_fetch("ndif", "api", "models")).body)["models"]
    assert next(m for m in models if m["name"] == gpt2.name)["loaded"] is True


async def test_device_map_server_runs_a_block_on_the_server(jp_fetch, server, gpt2, llama):
    def blocks():
        runs = []
        for model, layers in ((gpt2, lambda: gpt2.transformer.h), (llama, lambda: llama.model.layers)):
            with model.generate(max_new_tokens=2, device_map="server") as remote:
                with remote.invoke(PROMPT):
                    here = layers()[2].output.save()
            with model.generate(max_new_tokens=2) as local:
                with local.invoke(PROMPT):
                    there = layers()[2].output.save()
            runs.append((remote.output, local.output, here.value, there.value))
        return runs

    for remote_ids, local_ids, remote_value, local_value in await asyncio.to_thread(blocks):
        assert torch.equal(remote_ids, local_ids) and torch.equal(remote_value, local_value)


async def test_an_error_while_running_comes_back_with_the_users_line(jp_fetch, server, gpt2):
    def block():
        with gpt2.trace(PROMPT, device_map="server"):
            h = gpt2.transformer.h[1].output
            far = (h[0, :1, 0] * 0 + 100).long()
            h[:, far].save()  # out of range only with real values

    with pytest.raises(ExecutionError) as caught:
        await asyncio.to_thread(block)
    assert "index 100 is out of range for dimension 1" in str(caught.value)
    assert caught.value.source is not None and "out of range only with real values" in caught.value.source.line
    jobs = json.loads((await jp_fetch("ndif", "api", "jobs")).body)["jobs"]
    assert jobs[-1]["status"] == "error" and jobs[-1]["error"]["type"] == "ExecutionError"
    assert jobs[-1]["error"]["phase"] == "running"


async def test_a_constant_index_out_of_range_is_refused_before_anything_runs(jp_fetch, server, gpt2):
    def block():
        with gpt2.trace(PROMPT, device_map="server"):
            gpt2.transformer.h[1].output[:, torch.tensor([100])].save()

    jobs_before = json.loads((await jp_fetch("ndif", "api", "jobs")).body)["jobs"]
    with pytest.raises(NDIFError, match=r"refused the graph: .*recorded at line \d+\): index 100 is out of range"):
        await asyncio.to_thread(block)
    assert json.loads((await jp_fetch("ndif", "api", "jobs")).body)["jobs"] == jobs_before


@pytest.mark.parametrize("headers", [{"Authorization": ""}, {"Authorization": "token wrong"}])
async def test_every_endpoint_needs_authentication(jp_fetch, server, headers):
    endpoints = [("models",), ("jobs",), ("jobs", "0" * 32), ("jobs", "0" * 32, "result")]
    for parts in endpoints:
        with pytest.raises(HTTPClientError) as caught:
            await jp_fetch("ndif", "api", *parts, headers=dict(headers))
        assert caught.value.code == 401, parts
    with pytest.raises(HTTPClientError) as caught:
        await jp_fetch("ndif", "api", "jobs", method="POST", body=b"x", headers=dict(headers))
    assert caught.value.code == 401
    with pytest.raises(HTTPClientError) as caught:
        await jp_fetch("ndif", "api", "jobs", "0" * 32, method="DELETE", headers=dict(headers))
    assert caught.value.code == 401


@pytest.mark.parametrize(
    "jp_server_config",
    [
        {
            "ServerApp": {"jpserver_extensions": {"ndif_server": True}, "authorizer_class": DenyNDIF},
        }
    ],
)
async def test_a_user_without_the_ndif_permission_gets_403(jp_fetch, jp_serverapp, gpt2):
    for parts in (("models",), ("jobs",)):
        with pytest.raises(HTTPClientError) as caught:
            await jp_fetch("ndif", "api", *parts)
        assert caught.value.code == 403
    graph, _, _ = recorded(gpt2)
    with pytest.raises(HTTPClientError) as caught:
        await jp_fetch("ndif", "api", "jobs", method="POST", body=encode_request(graph, gpt2.name))
    assert caught.value.code == 403
    allowed = await jp_fetch("api", "status")
    assert allowed.code == 200, "the rest of the server is untouched"


def _container_with_metadata(text: str) -> bytes:
    header = json.dumps({"__metadata__": {"ndif": text}}).encode()
    return len(header).to_bytes(8, "little") + header


def _edited(data: bytes, change) -> bytes:
    document, tensors = unpack(data)
    change(document)
    return pack(document, tensors)


def _set_op(index: int, op: str):
    def change(document):
        document["nodes"][index]["op"] = op

    return change


def _set_path(path: str):
    def change(document):
        document["nodes"][0]["args"][0] = path

    return change


def _set(key: str, value):
    def change(document):
        document[key] = value

    return change


def _set_option(key: str, value):
    def change(document):
        document["options"][key] = value

    return change


def _forward_ref(document):
    document["nodes"][1]["args"][0] = {"ref": 5}


@pytest.mark.parametrize(
    "change, message",
    [
        (_set_op(1, "os.system"), "`os.system` is not an operation this server allows"),
        (_set_op(1, 42), "nodes/1/op: must be string"),
        (_set_path("transformer.h.9"), "the model has no module `transformer.h.9`"),
        (_set("model", "gpt2-xl"), "the model 'gpt2-xl' is not served here"),
        (_set("version", 7), "format version 7 is not supported"),
        (_set_option("max_new_tokens", 601), "max_new_tokens=601 is over this server's limit of 600"),
        (_set_option("custom_generate", "org/code"), "the option 'custom_generate' is not allowed"),
        (_set("invokes", [[[1, 2]]] * 5), "the batch has 5 prompts, over this server's limit of 4"),
        (_set("invokes", [[[10**6]]]), "past the model's vocabulary"),
        (_forward_ref, "it reads node 5, which is not an earlier node"),
        (_set("origin", {"notebook": "n" * 1025}), "origin/notebook: must be shorter than or equal to 1024 characters"),
        (_set("origin", {"cell": ["abc"]}), "origin/cell: must be string"),
        (_set("origin", {"cell": "abc", "user": "root"}), "origin: must not contain {'user'} properties"),
    ],
)
async def test_a_request_outside_the_rules_gets_400_naming_the_problem(jp_fetch, server, gpt2, change, message):
    graph, _, _ = recorded(gpt2, "generate", max_new_tokens=2)
    with pytest.raises(HTTPClientError) as caught:
        await jp_fetch("ndif", "api", "jobs", method="POST", body=_edited(encode_request(graph, gpt2.name), change))
    assert caught.value.code == 400
    assert message in json.loads(caught.value.response.body)["message"]
    assert json.loads((await jp_fetch("ndif", "api", "jobs")).body)["jobs"] == [], "nothing was queued"
    assert (await jp_fetch("ndif", "api", "models")).code == 200, "the server goes on serving"


@pytest.mark.parametrize(
    "body, message",
    [
        (b"", "shorter than its 8-byte header length"),
        (b"\xff" * 64, "header length is past its end"),
        (pack({"format": "ndif.request"}, {}), "the request names no model"),
        (pack({"format": "ndif.request", "model": "x"}, {}), "the model 'x' is not served here"),
        (b"\x02\x00\x00\x00\x00\x00\x00\x00{}", "has no 'ndif' entry"),
        (_container_with_metadata("{not json"), "the 'ndif' document is not JSON"),
        (b"\x05\x00\x00\x00\x00\x00\x00\x00{oops", "the safetensors header is not JSON"),
    ],
)
async def test_a_malformed_body_gets_400(jp_fetch, server, body, message):
    with pytest.raises(HTTPClientError) as caught:
        await jp_fetch("ndif", "api", "jobs", method="POST", body=body)
    assert caught.value.code == 400
    assert message in json.loads(caught.value.response.body)["message"]


async def test_a_job_saving_over_the_limit_is_refused_before_it_runs(jp_fetch, server, gpt2):
    with gpt2.trace(PROMPT) as block:
        gpt2.transformer.h[0].output[0].repeat(1, 1, 4000).save()
    graph = block.graph()
    graph.saved_bytes = 0  # what a request declares is not what the server counts
    with pytest.raises(HTTPClientError) as caught:
        await jp_fetch("ndif", "api", "jobs", method="POST", body=encode_request(graph, gpt2.name))
    assert caught.value.code == 400
    message = json.loads(caught.value.response.body)["message"]
    assert "the saved values would be 8.2 MB, over this server's limit of 4.0 MB" in message, message
    assert json.loads((await jp_fetch("ndif", "api", "jobs")).body)["jobs"] == [], "nothing was queued"


async def test_too_many_nodes_are_refused(jp_fetch, server, gpt2):
    with gpt2.trace(PROMPT) as block:
        h = gpt2.transformer.h[0].output
        for _ in range(200):
            h = h + 1
        h.save()
    with pytest.raises(HTTPClientError) as caught:
        await jp_fetch("ndif", "api", "jobs", method="POST", body=encode_request(block.graph(), gpt2.name))
    assert (
        "the graph has 201 nodes, over this server's limit of 200" in json.loads(caught.value.response.body)["message"]
    )


def long_generation(llama: Model) -> bytes:
    """The request of a 600-token generation, recorded without running it in the test process."""
    with pytest.raises(Recorded):
        with llama.generate(max_new_tokens=600) as long_block:
            with long_block.invoke(PROMPT):
                llama.model.layers[0].output.save()
            long_graph = long_block.graph()
            raise Recorded
    return encode_request(long_graph, llama.name)


async def test_cancel_a_running_job_and_a_queued_one_while_the_api_answers(jp_fetch, server, llama):
    body = long_generation(llama)
    running = await post_job(jp_fetch, body)
    queued = await post_job(jp_fetch, body)
    for _ in range(200):
        job = json.loads((await jp_fetch("ndif", "api", "jobs", running["id"], params={"wait": "1"})).body)
        if job["status"] == "running" and job["step"] >= 2:
            break
    assert job["status"] == "running"
    models = await jp_fetch("ndif", "api", "models")
    assert models.code == 200, "the API answers while a job runs"
    second = json.loads((await jp_fetch("ndif", "api", "jobs", queued["id"])).body)
    assert second["status"] == "queued", "jobs of one model run one at a time"
    cancelled = await jp_fetch("ndif", "api", "jobs", queued["id"], method="DELETE")
    assert cancelled.code == 202 and json.loads(cancelled.body)["status"] == "cancelled"
    await jp_fetch("ndif", "api", "jobs", running["id"], method="DELETE")
    job = await wait_done(jp_fetch, running["id"])
    assert job["status"] == "cancelled" and job["step"] < 600
    with pytest.raises(HTTPClientError) as caught:
        await jp_fetch("ndif", "api", "jobs", running["id"], "result")
    assert caught.value.code == 409


async def test_jobs_waiting_past_the_servers_cap_are_refused_with_retry_after(jp_fetch, server, llama):
    body = long_generation(llama)
    server.max_queued_jobs = 1  # one waiting job per served model
    jobs = [await post_job(jp_fetch, body)]
    while (
        json.loads((await jp_fetch("ndif", "api", "jobs", jobs[0]["id"], params={"wait": "1"})).body)["status"]
        == "queued"
    ):
        pass
    jobs.append(await post_job(jp_fetch, body))  # waits while the first runs
    with pytest.raises(HTTPClientError) as caught:
        await jp_fetch("ndif", "api", "jobs", method="POST", body=body)
    assert caught.value.code == 429 and caught.value.response.headers["Retry-After"] == "5"
    message = json.loads(caught.value.response.body)["message"]
    assert "1 jobs are waiting for this model, its limit (max_queued_jobs)" in message
    for job in jobs:
        deleted = await jp_fetch("ndif", "api", "jobs", job["id"], method="DELETE")
        if deleted.code == 202:  # 204 when it had already finished, and was removed
            assert (await wait_done(jp_fetch, job["id"]))["status"] == "cancelled"


async def test_a_finished_job_is_removed_by_delete(jp_fetch, server, gpt2):
    graph, _, _ = recorded(gpt2)
    job = await wait_done(jp_fetch, (await post_job(jp_fetch, encode_request(graph, gpt2.name)))["id"])
    assert server.core.store.result_path(job["id"]).is_file()
    removed = await jp_fetch("ndif", "api", "jobs", job["id"], method="DELETE")
    assert removed.code == 204
    assert not server.core.store.result_path(job["id"]).exists()
    with pytest.raises(HTTPClientError) as caught:
        await jp_fetch("ndif", "api", "jobs", job["id"])
    assert caught.value.code == 404


async def test_results_stay_on_disk_for_a_later_server(jp_fetch, server, gpt2, tmp_path):
    from ndif_server.jobs import JobStore

    graph, local, _ = recorded(gpt2)
    job = await wait_done(jp_fetch, (await post_job(jp_fetch, encode_request(graph, gpt2.name)))["id"])
    later = JobStore(server.core.store.folder)
    assert later.get(job["id"]).status == "done"
    result = decode_result(later.result_path(job["id"]).read_bytes())
    assert all(torch.equal(result.saved[node_id], value) for node_id, value in local.items())


async def test_only_the_newest_finished_jobs_are_kept(jp_fetch, server, gpt2):
    server.core.store.keep = 2
    graph, _, _ = recorded(gpt2)
    ids = []
    for _ in range(4):
        ids.append(
            (await wait_done(jp_fetch, (await post_job(jp_fetch, encode_request(graph, gpt2.name)))["id"]))["id"]
        )
    kept = [job["id"] for job in json.loads((await jp_fetch("ndif", "api", "jobs")).body)["jobs"]]
    assert kept == ids[1:], "two finished jobs are kept, plus the one just made"
    assert not server.core.store.result_path(ids[0]).exists()


async def test_a_waiting_kernel_shows_a_progress_line(jp_fetch, server, llama, capsys, monkeypatch):
    """On a terminal the line is rewritten on stdout (in a kernel it is one display, updated: `test_gateway.py`)."""
    from ndif_jupyter.client import ServerClient

    monkeypatch.setattr(sys.stdout, "isatty", lambda: True)
    with llama.generate(max_new_tokens=20) as block:
        with block.invoke(PROMPT):
            llama.model.layers[0].output.save()
    client = ServerClient(os.environ[SERVER_URL_ENV], os.environ[SERVER_TOKEN_ENV], quiet_seconds=0)
    result = await asyncio.to_thread(client.run, block.graph(), llama.name)
    assert torch.equal(result.output_ids, block.output)
    line = capsys.readouterr().out
    assert "\rndif server: job " in line and " done in " in line and line.endswith("\n")


@pytest.mark.kernel
async def test_ndif_models_lists_what_the_server_serves(jp_fetch, server, ip, capsys, gpt2_dir):
    await asyncio.to_thread(ip.run_line_magic, "ndif", "models")
    out = capsys.readouterr().out
    assert "Served by the Jupyter server (for --server; backend local):" in out
    assert f"{gpt2_dir}: GPT2LMHeadModel" in out and "not loaded yet" in out


async def status_of(jp_fetch, *path: str, method: str = "GET") -> int:
    try:
        return (await jp_fetch("ndif", "api", *path, method=method)).code
    except HTTPClientError as error:
        return error.code


async def test_jobs_belong_to_the_servers_user_and_another_owners_job_is_unknown(jp_fetch, server, gpt2):
    graph, _, _ = recorded(gpt2)
    mine = await wait_done(jp_fetch, (await post_job(jp_fetch, encode_request(graph, gpt2.name)))["id"])
    assert mine["owner"] == server.caller.name
    models = json.loads((await jp_fetch("ndif", "api", "models")).body)
    assert models["user"] == {"name": server.caller.name, "admin": False}

    theirs = server.core.store.new(gpt2.name, "trace", 1, "someone-else")  # e.g. left by an earlier owner
    for path, method in [((theirs.id,), "GET"), ((theirs.id, "result"), "GET"), ((theirs.id,), "DELETE")]:
        assert await status_of(jp_fetch, "jobs", *path, method=method) == 404
    listed = [job["id"] for job in json.loads((await jp_fetch("ndif", "api", "jobs")).body)["jobs"]]
    assert mine["id"] in listed and theirs.id not in listed
    assert server.core.store.get(theirs.id).status == "queued", "the other owner's job is untouched"


async def test_a_job_lists_its_prompts_first_words_and_origin_to_its_owner_only(jp_fetch, server, gpt2):
    graph, _, _ = recorded(gpt2)
    origin = Origin("work/sidebar.ipynb", "0b7c1e2a-cell")
    job = await post_job(jp_fetch, encode_request(graph, gpt2.name, origin))
    assert job["prompt"] == PROMPT and job["origin"] == {"notebook": "work/sidebar.ipynb", "cell": "0b7c1e2a-cell"}
    with gpt2.trace(" ".join(["The Eiffel Tower is in Paris."] * 8)) as long:
        gpt2.transformer.h[0].output.save()
    without_origin = await post_job(jp_fetch, encode_request(long.graph(), gpt2.name))
    listed = {entry["id"]: entry for entry in json.loads((await jp_fetch("ndif", "api", "jobs")).body)["jobs"]}
    assert listed[job["id"]]["prompt"] == PROMPT and listed[job["id"]]["origin"] == job["origin"]
    shown = listed[without_origin["id"]]
    assert shown["origin"] is None
    assert len(shown["prompt"]) == 60 and shown["prompt"].endswith("…")
    assert shown["prompt"].startswith("The Eiffel Tower is in Paris. The Eiffel Tower is in Paris.")

    theirs = server.core.store.new(gpt2.name, "trace", 1, "someone-else", prompt="their secret", origin={"cell": "c1"})
    listing = (await jp_fetch("ndif", "api", "jobs")).body.decode()
    assert theirs.id not in listing and "their secret" not in listing
    assert await status_of(jp_fetch, "jobs", theirs.id) == 404


async def test_waiting_jobs_report_their_places_in_fair_order_and_models_count_them(jp_fetch, server, llama):
    body = long_generation(llama)
    running = await post_job(jp_fetch, body)
    for _ in range(200):
        job = json.loads((await jp_fetch("ndif", "api", "jobs", running["id"], params={"wait": "1"})).body)
        if job["status"] == "running":
            break

    async def post_from(client: str) -> str:
        headers = {"Content-Type": CONTENT_TYPE, "X-NDIF-Client": client}
        answer = await jp_fetch("ndif", "api", "jobs", method="POST", body=body, headers=headers)
        return json.loads(answer.body)["id"]

    first = [await post_from("notebook-a") for _ in range(3)]
    second = await post_from("notebook-b")
    places = {
        job["id"]: job["queue_position"] for job in json.loads((await jp_fetch("ndif", "api", "jobs")).body)["jobs"]
    }
    assert [places[job_id] for job_id in [*first, second]] == [1, 3, 4, 2], "the two notebooks take turns"
    assert places[running["id"]] is None
    (model,) = [
        entry
        for entry in json.loads((await jp_fetch("ndif", "api", "models")).body)["models"]
        if entry["name"] == llama.name
    ]
    assert (model["queued"], model["running"]) == (4, 1)
    for job_id in [*first, second, running["id"]]:
        await jp_fetch("ndif", "api", "jobs", job_id, method="DELETE")
    assert (await wait_done(jp_fetch, running["id"]))["status"] == "cancelled"
    assert {(await wait_done(jp_fetch, job_id))["status"] for job_id in [*first, second]} == {"cancelled"}


async def test_a_users_oldest_results_expire_past_their_storage_and_a_job_that_cannot_fit_is_refused(
    jp_fetch, server, gpt2
):
    graph, _, _ = recorded(gpt2)
    body = encode_request(graph, gpt2.name)
    first = await wait_done(jp_fetch, (await post_job(jp_fetch, body))["id"])
    cap = int(first["result_bytes"] * 2.5)
    server.max_stored_bytes_per_user = cap
    server.core.store.keep_bytes_per_owner = cap
    second = await wait_done(jp_fetch, (await post_job(jp_fetch, body))["id"])
    third = await wait_done(jp_fetch, (await post_job(jp_fetch, body))["id"])
    jobs = {job["id"]: job for job in json.loads((await jp_fetch("ndif", "api", "jobs")).body)["jobs"]}
    assert [jobs[job["id"]]["expired"] for job in (first, second, third)] == [True, False, False]
    with pytest.raises(HTTPClientError) as caught:
        await jp_fetch("ndif", "api", "jobs", first["id"], "result")
    assert caught.value.code == 410 and "expired" in json.loads(caught.value.response.body)["message"]
    assert (await jp_fetch("ndif", "api", "jobs", third["id"], "result")).code == 200

    server.max_stored_bytes_per_user = first["cost"]["saved_bytes"] - 1
    with pytest.raises(HTTPClientError) as caught:
        await jp_fetch("ndif", "api", "jobs", method="POST", body=body)
    assert caught.value.code == 429 and caught.value.response.headers["Retry-After"]
    assert "max_stored_bytes_per_user" in json.loads(caught.value.response.body)["message"]


async def test_the_client_takes_the_jupyter_servers_url_and_says_what_is_wrong_with_an_address(jp_fetch, server):
    from ndif_jupyter.client import ServerClient, ServerRefused

    api, token = os.environ[SERVER_URL_ENV], os.environ[SERVER_TOKEN_ENV]
    root = api.removesuffix("ndif/api/")
    models = await asyncio.to_thread(ServerClient(f"{root}lab/tree/work?token={token}").models)
    assert [entry["name"] for entry in models["models"]]
    with pytest.raises(ServerRefused) as refused:
        await asyncio.to_thread(ServerClient(root, "wrong").models)
    message = str(refused.value)
    assert refused.value.status == 401 and message.endswith(").") and ".)" not in message, message
    with pytest.raises(ServerRefused, match=r"There is no ndif API at \S+/elsewhere/api/ \(the server answered 404\)"):
        await asyncio.to_thread(ServerClient(f"{root}elsewhere/api/", token).models)

"""The gateway backend against a real `jupyter kernelgateway` on loopback (with a token): values equal a local run,
a result over 10 MiB arrives whole, a killed kernel is replaced, cancel interrupts, and a wrong token or an
unreachable gateway give clear errors; a gateway on TLS with a self-signed certificate is trusted through
`gateway_ca_certs` and refused without it."""

from __future__ import annotations

import asyncio
import json
import os
import signal

import pytest
import torch
from conftest import extension_config

from ndif_jupyter import Model, NDIFError
from ndif_server.backends.kernel_client import GatewayError, KernelClient
from ndif_testing.jupyter_process import KernelGatewayProcess, free_port, make_tls_files

PROMPT = "The Eiffel Tower is in the city of"
pytestmark = pytest.mark.usefixtures("ndif_client_environment")


@pytest.fixture(scope="module")
def gateway():
    with KernelGatewayProcess() as process:
        yield process


@pytest.fixture
def gateway_settings(request, gateway):
    """The working gateway; or, as `request.param`, "unreachable" (a closed port) or "wrong-token"."""
    case = getattr(request, "param", "working")
    if case == "unreachable":
        return {"gateway_url": f"http://127.0.0.1:{free_port()}/", "gateway_auth_token": gateway.token}
    return {"gateway_url": gateway.url, "gateway_auth_token": "wrong" if case == "wrong-token" else gateway.token}


@pytest.fixture
def jp_server_config(gpt2_dir, llama_dir, tmp_path, gateway_settings):
    settings = {"backend": "gateway", "max_new_tokens": 5000, "gateway_request_timeout": 10.0, **gateway_settings}
    return extension_config([gpt2_dir, llama_dir], tmp_path, **settings)


LONG = 2000
"""New tokens of a generation long enough to be stopped while it runs (within the tiny Llama's 2,048 positions)."""


def generate(model: Model, device_map: str, tokens: int = 3, repeat: int = 0):
    """Generate on `model`; saves the last layer, and with `repeat`, a tensor of `repeat` copies of it."""
    layers = model.transformer.h if hasattr(model.config, "n_layer") else model.model.layers
    with model.generate(max_new_tokens=tokens, device_map=device_map) as block:
        with block.invoke(PROMPT):
            hidden = layers[-1].output
            saved = (hidden.expand(repeat, -1, -1).contiguous() if repeat else hidden).save()
    return block.output, saved.value


def gradient(model: Model, device_map: str) -> torch.Tensor:
    with model.trace(PROMPT, device_map=device_map):
        first = model.model.layers[0].output
        loss = model.lm_head.output[0, -1].log_softmax(-1)[11]
        with loss.backward():
            grad = first.grad.save()
    return grad.value


def inside_edited_and_beams(model: Model, device_map: str) -> list[torch.Tensor]:
    """Inner operations, a persistent edit, a condition and beam search in one generation."""
    attention = model.model.layers[1].self_attn
    with model.edit():
        model.model.layers[0].output[:, -1] *= 1.5
    try:
        with model.generate(max_new_tokens=3, num_beams=2, device_map=device_map) as generator:
            with generator.invoke(PROMPT):
                saved = []
                for _ in generator.steps:
                    query, _ = attention.ops.apply_rotary_pos_emb.output
                    with generator.cond(query.norm() > 0):
                        query[:] *= 0.5
                    saved.append(query.save())
    finally:
        model.clear_edits()
    return [generator.output, *(value.value for value in saved)]


def session(model: Model, device_map: str) -> list[torch.Tensor]:
    """A trace's unsaved value steering a generation, in one session."""
    layers = model.model.layers
    with model.session(device_map=device_map):
        with model.trace(PROMPT):
            direction = layers[0].output[0, -1]
        with model.generate(max_new_tokens=3) as generator:
            with generator.invoke("Hello world"):
                for _ in generator.steps:
                    layers[1].output[:, -1] += direction
                last = layers[2].output.save()
    return [generator.output, last.value]


async def started_job(jp_fetch, before: int, sending: asyncio.Future) -> dict:
    """The job after the first `before` ones, once its worker has begun the forward passes; the error of `sending`
    (the block that sends it) if it ended first."""
    for _ in range(1200):
        jobs = json.loads((await jp_fetch("ndif", "api", "jobs")).body)["jobs"]
        if len(jobs) > before and jobs[before]["step"] >= 1:
            return jobs[before]
        if sending.done():
            sending.result()
        await asyncio.sleep(0.1)
    raise AssertionError("the job did not start within 120 s")


async def kernel_pid(gateway, server, model: Model) -> int:
    kernel_id = server.core.backend.kernel_id(model.name)
    run = await asyncio.to_thread(gateway.kernel(kernel_id).execute, "import os; print(os.getpid())")
    return int(run.stdout)


@pytest.mark.gateway
@pytest.mark.server
@pytest.mark.slow
async def test_runs_through_the_gateway_equal_local_runs_also_over_10_mib(jp_fetch, server, gpt2, llama):
    models = json.loads((await jp_fetch("ndif", "api", "models")).body)
    assert models["backend"] == "gateway" and not any(m["loaded"] for m in models["models"])
    assert server.core.backend.settings.token not in json.dumps(models), "the gateway's token stays in the server"
    for model in (gpt2, llama):
        remote_ids, remote = await asyncio.to_thread(generate, model, "server")
        local_ids, local = generate(model, "cpu")
        assert torch.equal(remote_ids, local_ids) and torch.equal(remote, local)
    repeat = 11 * 2**20 // (len(gpt2.tokenizer(PROMPT)["input_ids"]) * 64 * 4) + 1
    _, remote = await asyncio.to_thread(generate, gpt2, "server", 1, repeat)
    _, local = generate(gpt2, "cpu", 1, repeat)
    assert remote.numel() * 4 > 11 * 2**20 and torch.equal(remote, local)
    remote_grad = await asyncio.to_thread(gradient, llama, "server")
    assert torch.equal(remote_grad, gradient(llama, "cpu")), "a backward pass on the gateway's kernel"
    remote_values = await asyncio.to_thread(inside_edited_and_beams, llama, "server")
    for theirs, mine in zip(remote_values, inside_edited_and_beams(llama, "cpu"), strict=True):
        assert torch.equal(theirs, mine), "inner operations, an edit, a condition and beams on the gateway's kernel"
    remote_values = await asyncio.to_thread(session, llama, "server")
    for theirs, mine in zip(remote_values, session(llama, "cpu"), strict=True):
        assert torch.equal(theirs, mine), "a session's blocks on the gateway's kernel"
    jobs = json.loads((await jp_fetch("ndif", "api", "jobs")).body)["jobs"]
    assert [job["status"] for job in jobs] == ["done"] * 6 and jobs[2]["result_bytes"] > 11 * 2**20
    assert jobs[-1]["kind"] == "session"
    models = json.loads((await jp_fetch("ndif", "api", "models")).body)
    assert all(m["loaded"] for m in models["models"]), "each model's kernel is warm and kept"


@pytest.mark.gateway
@pytest.mark.server
@pytest.mark.slow
async def test_a_killed_kernel_fails_its_job_and_the_next_job_gets_a_fresh_one(jp_fetch, server, gateway, llama):
    await asyncio.to_thread(generate, llama, "server")
    first_kernel = server.core.backend.kernel_id(llama.name)
    os.kill(await kernel_pid(gateway, server, llama), signal.SIGKILL)
    _, remote = await asyncio.to_thread(generate, llama, "server")
    assert torch.equal(remote, generate(llama, "cpu")[1]), "a kernel killed while idle is replaced for the next job"
    assert server.core.backend.kernel_id(llama.name) != first_kernel

    pid = await kernel_pid(gateway, server, llama)  # asked while idle: a busy kernel answers only after its job
    before = len(json.loads((await jp_fetch("ndif", "api", "jobs")).body)["jobs"])
    running = asyncio.ensure_future(asyncio.to_thread(generate, llama, "server", LONG))
    await started_job(jp_fetch, before, running)
    os.kill(pid, signal.SIGKILL)
    with pytest.raises(NDIFError, match="the gateway kernel died"):
        await running
    job = json.loads((await jp_fetch("ndif", "api", "jobs")).body)["jobs"][-1]
    assert job["status"] == "error" and "the next job starts a fresh kernel" in job["error"]["message"]
    _, remote = await asyncio.to_thread(generate, llama, "server")
    assert torch.equal(remote, generate(llama, "cpu")[1])


@pytest.mark.gateway
@pytest.mark.server
@pytest.mark.slow
async def test_cancel_interrupts_the_gateway_kernel_which_stays_warm(jp_fetch, server, llama):
    await asyncio.to_thread(generate, llama, "server")
    kernel = server.core.backend.kernel_id(llama.name)
    before = len(json.loads((await jp_fetch("ndif", "api", "jobs")).body)["jobs"])
    running = asyncio.ensure_future(asyncio.to_thread(generate, llama, "server", LONG))
    job = await started_job(jp_fetch, before, running)
    await jp_fetch("ndif", "api", "jobs", job["id"], method="DELETE")
    with pytest.raises(NDIFError, match="cancelled"):
        await running
    job = json.loads((await jp_fetch("ndif", "api", "jobs", job["id"])).body)
    assert job["status"] == "cancelled" and job["step"] < LONG
    _, remote = await asyncio.to_thread(generate, llama, "server")
    assert torch.equal(remote, generate(llama, "cpu")[1])
    assert server.core.backend.kernel_id(llama.name) == kernel, "the same warm kernel serves the next job"


@pytest.mark.gateway
@pytest.mark.server
@pytest.mark.slow
@pytest.mark.parametrize(
    "gateway_settings, message",
    [("unreachable", "cannot be reached"), ("wrong-token", "refused our token")],
    indirect=["gateway_settings"],
)
async def test_an_unusable_gateway_gives_a_clear_error(jp_fetch, server, gpt2, gateway_settings, message):
    with pytest.raises(NDIFError, match=message) as caught:
        await asyncio.to_thread(generate, gpt2, "server")
    assert "The job failed on the ndif server: GatewayError" in str(caught.value)
    job = json.loads((await jp_fetch("ndif", "api", "jobs")).body)["jobs"][-1]
    assert job["status"] == "error" and job["run_seconds"] < 60


@pytest.mark.gateway
@pytest.mark.server
@pytest.mark.kernel
@pytest.mark.slow
def test_a_kernel_of_a_jupyter_server_process_runs_on_the_gateway(gateway, gpt2_dir, tmp_path):
    from ndif_testing.jupyter_process import JupyterServerProcess

    config = {
        "NDIFServer": {
            "backend": "gateway",
            "gateway_url": gateway.url,
            "gateway_auth_token": gateway.token,
            "models": [str(gpt2_dir)],
            "response_path": str(tmp_path / "responses"),
        }
    }
    with JupyterServerProcess(config) as server:
        kernel = server.start_kernel()
        run = kernel.execute(f"""
import torch
from ndif_jupyter import Model
model = Model({str(gpt2_dir)!r})
with model.generate(max_new_tokens=3, device_map="server") as remote:
    with remote.invoke({PROMPT!r}):
        remote_hidden = model.transformer.h[-1].output.save()
with model.generate(max_new_tokens=3) as local:
    with local.invoke({PROMPT!r}):
        local_hidden = model.transformer.h[-1].output.save()
print("equal:", torch.equal(remote_hidden.value, local_hidden.value), torch.equal(remote.output, local.output))
""")
        assert run.status == "ok", run
        assert "equal: True True" in run.stdout
        assert "ndif server: job" in run.displayed_text, "the first job (kernel start, model load) shows its progress"
        assert "loading model" in run.displayed_text
        assert server.get("ndif/api/models")["backend"] == "gateway"


@pytest.mark.gateway
@pytest.mark.server
@pytest.mark.slow
async def test_a_job_cancelled_while_its_kernel_starts_does_not_run(jp_fetch, server, gpt2):
    running = asyncio.ensure_future(asyncio.to_thread(generate, gpt2, "server"))
    while not (jobs := json.loads((await jp_fetch("ndif", "api", "jobs")).body)["jobs"]) or jobs[0]["phase"] not in (
        "starting kernel",
        "loading model",
    ):
        await asyncio.sleep(0.05)
    await jp_fetch("ndif", "api", "jobs", jobs[0]["id"], method="DELETE")
    with pytest.raises(NDIFError, match="cancelled"):
        await running
    job = json.loads((await jp_fetch("ndif", "api", "jobs", jobs[0]["id"])).body)
    assert job["status"] == "cancelled" and job["step"] == 0, "no forward pass ran"
    _, remote = await asyncio.to_thread(generate, gpt2, "server")
    assert torch.equal(remote, generate(gpt2, "cpu")[1]), "the warmed kernel serves the next job"


def test_a_damaged_or_incomplete_result_is_refused(tmp_path):
    import hashlib

    from ndif_server.backends.gateway import _ResultCollector
    from ndif_server.backends.kernel_client import GatewayError
    from ndif_server.jobs import JobStore

    store = JobStore(tmp_path)
    payload = bytes(range(256)) * 100
    for sent, expected_bytes, digest in [
        (payload, len(payload), hashlib.sha256(payload).hexdigest()),
        (payload[:-1], len(payload), hashlib.sha256(payload).hexdigest()),
        (payload, len(payload), hashlib.sha256(b"other").hexdigest()),
    ]:
        job = store.new("m", "trace", 1, "u")
        collector = _ResultCollector(job, store)
        collector.receive({"kind": "result-part"}, [sent[:1000], sent[1000:]])
        collector.receive({"kind": "result-end", "bytes": expected_bytes, "sha256": digest}, [])
        if sent == payload and digest == hashlib.sha256(payload).hexdigest():
            assert collector.store_result() == len(payload)
            assert store.result_path(job.id).read_bytes() == payload
        else:
            with pytest.raises(GatewayError, match="arrived damaged"):
                collector.store_result()
            assert not store.result_path(job.id).exists()
            assert list(tmp_path.glob("*.partial")) == []


@pytest.mark.gateway
@pytest.mark.slow
def test_a_gateway_on_tls_with_a_self_signed_certificate_is_trusted_through_gateway_ca_certs(tmp_path):
    tls = make_tls_files(tmp_path)

    async def connect(secure: KernelGatewayProcess) -> dict:
        untrusting = KernelClient(secure.url, secure.token, "python3", 30)
        with pytest.raises(GatewayError, match=r"does not trust .* gateway_ca_certs"):
            await untrusting.start()
        kernel = KernelClient(secure.url, secure.token, "python3", 30, ca_certs=str(tls.ca))
        await kernel.start()
        try:
            return await kernel.execute("6 * 7", 60)
        finally:
            kernel.shutdown()
            await kernel.stopped()

    with KernelGatewayProcess(tls=tls) as secure:
        assert secure.url.startswith("https://")
        assert asyncio.run(connect(secure))["status"] == "ok"
        assert secure.get("api/kernels") == [], "the kernel was stopped on the gateway"


def test_the_service_settings_carry_the_ca_bundle_to_the_gateway_backend(tmp_path):
    import logging

    from ndif_server.core import NDIFCore
    from ndif_server.settings import NDIFSettings

    settings = NDIFSettings(
        models=["tiny"],
        response_path=str(tmp_path / "responses"),
        backend="gateway",
        gateway_url="https://gpu-host.lab.internal:8889/",
        gateway_ca_certs="/etc/ndif/ca.pem",
    )
    core = NDIFCore(settings, logging.getLogger("ndif-test"))
    try:
        assert core.backend.settings.ca_certs == "/etc/ndif/ca.pem"
    finally:
        core.backend.shutdown()
        core.admissions.shutdown()

"""Co-batching through a real server: jobs of several notebooks that wait together run as one batch, each with the
values it gets alone; a job cancelled inside a running batch ends alone; and a model served by two kernels on a
real Kernel Gateway runs two batches at once."""

from __future__ import annotations

import asyncio
import json

import pytest
import torch
from conftest import extension_config
from torch.testing import assert_close

from ndif_jupyter import Model, NDIFError
from ndif_testing.jupyter_process import KernelGatewayProcess

pytestmark = [pytest.mark.usefixtures("ndif_client_environment"), pytest.mark.server]

PROMPTS = ["Hello world", "The Eiffel Tower is in the city of", "One two", "A long time ago in a galaxy far"]
LONG = 2000
"""New tokens of a generation that keeps the worker busy while the small jobs queue behind it."""


@pytest.fixture
def backend_settings(request):
    """The local backend; as `request.param` "local-replicas", two copies of the model in two worker threads; as
    "replicas", two kernels per model on a real Kernel Gateway."""
    case = getattr(request, "param", None)
    if case == "local-replicas":
        return {"replicas": 2, "batch_jobs": 1}
    if case != "replicas":
        return {}
    gateway = request.getfixturevalue("gateway")
    return {
        "backend": "gateway",
        "gateway_url": gateway.url,
        "gateway_auth_token": gateway.token,
        "replicas": 2,
        "batch_jobs": 1,
    }


@pytest.fixture
def jp_server_config(llama_dir, tmp_path, backend_settings):
    return extension_config([llama_dir], tmp_path, device_map="cpu", max_new_tokens=5000, **backend_settings)


def small_job(model: Model, index: int, device_map: str):
    """A notebook's small job: a few new tokens of its own prompt, the last layer saved at every step."""
    layers = model.model.layers
    steps = 2 + index % 3
    with model.generate(max_new_tokens=steps, device_map=device_map) as generator:
        with generator.invoke(PROMPTS[index % len(PROMPTS)]) as invoker:
            saved = []
            for step in range(steps):
                if step:
                    invoker.next()
                saved.append(layers[-1].output[:, -1].save())
    return generator.output, [proxy.value for proxy in saved]


def busy_job(model: Model, tokens: int = LONG, device_map: str = "server"):
    with model.generate(max_new_tokens=tokens, device_map=device_map) as generator:
        with generator.invoke("Keep the worker busy"):
            first = model.lm_head.output[:, -1].softmax(-1).save()
    return generator.output, first.value


async def jobs_of(jp_fetch) -> list[dict]:
    return json.loads((await jp_fetch("ndif", "api", "jobs")).body)["jobs"]


async def wait_until_running(jp_fetch, count: int) -> None:
    """Until `count` jobs run their forward passes (past loading the model)."""
    for _ in range(600):
        if sum(job["status"] == "running" and job["step"] >= 1 for job in await jobs_of(jp_fetch)) >= count:
            return
        await asyncio.sleep(0.1)
    raise AssertionError(f"{count} jobs were not running within 60 s")


async def wait_until_queued(jp_fetch, count: int) -> None:
    for _ in range(600):
        if sum(job["status"] == "queued" for job in await jobs_of(jp_fetch)) >= count:
            return
        await asyncio.sleep(0.1)
    raise AssertionError(f"{count} jobs were not queued within 60 s")


async def test_jobs_waiting_together_run_as_one_batch_with_their_own_values(jp_fetch, server, llama, llama_dir):
    busy = asyncio.ensure_future(asyncio.to_thread(busy_job, Model(str(llama_dir))))
    await wait_until_running(jp_fetch, 1)
    notebooks = [Model(str(llama_dir)) for _ in range(4)]
    sent = []
    for index, notebook in enumerate(notebooks):  # one at a time: a user has at most 2 requests being admitted
        sent.append(asyncio.ensure_future(asyncio.to_thread(small_job, notebook, index, "server")))
        await wait_until_queued(jp_fetch, index + 1)
    first = next(job for job in await jobs_of(jp_fetch) if job["status"] == "running")
    await jp_fetch("ndif", "api", "jobs", first["id"], method="DELETE")
    with pytest.raises(NDIFError):
        await busy
    remote = await asyncio.gather(*sent)
    for index, (output, saved) in enumerate(remote):
        alone_output, alone_saved = small_job(llama, index, "cpu")
        assert torch.equal(output, alone_output)
        for value, alone in zip(saved, alone_saved):
            assert_close(value, alone, rtol=1e-5, atol=1e-5)
    batches = sorted(job["batch"] for job in await jobs_of(jp_fetch) if job["status"] == "done")
    assert batches == [4] * 4, batches
    assert {job["step"] for job in await jobs_of(jp_fetch) if job["status"] == "done"} == {2, 3, 4}


async def test_a_job_cancelled_inside_a_running_batch_ends_alone(jp_fetch, server, llama, llama_dir):
    busy = asyncio.ensure_future(asyncio.to_thread(busy_job, Model(str(llama_dir))))
    await wait_until_running(jp_fetch, 1)
    doomed = asyncio.ensure_future(asyncio.to_thread(busy_job, Model(str(llama_dir))))
    await wait_until_queued(jp_fetch, 1)
    survivor = asyncio.ensure_future(asyncio.to_thread(busy_job, Model(str(llama_dir)), LONG // 2))
    await wait_until_queued(jp_fetch, 2)
    first = next(job for job in await jobs_of(jp_fetch) if job["status"] == "running")
    await jp_fetch("ndif", "api", "jobs", first["id"], method="DELETE")
    await wait_until_running(jp_fetch, 2)
    running = [job for job in await jobs_of(jp_fetch) if job["status"] == "running"]
    assert [job["batch"] for job in running] == [2, 2]
    await jp_fetch("ndif", "api", "jobs", max(running, key=lambda job: job["steps"])["id"], method="DELETE")
    for cancelled in (busy, doomed):
        with pytest.raises(NDIFError, match="cancelled"):
            await cancelled
    output, first_step = await survivor
    alone_output, alone_first_step = busy_job(llama, LONG // 2, "cpu")
    assert torch.equal(output, alone_output)
    assert_close(first_step, alone_first_step, rtol=1e-5, atol=1e-5)


async def two_busy_jobs_running(jp_fetch, llama_dir) -> tuple[asyncio.Future, asyncio.Future]:
    """Two long generations of two notebooks, once both run at the same time (the model's `running` says 2)."""
    first = asyncio.ensure_future(asyncio.to_thread(busy_job, Model(str(llama_dir))))
    await wait_until_running(jp_fetch, 1)
    second = asyncio.ensure_future(asyncio.to_thread(busy_job, Model(str(llama_dir))))
    await wait_until_running(jp_fetch, 2)
    models = json.loads((await jp_fetch("ndif", "api", "models")).body)["models"]
    assert models[0]["running"] == 2
    return first, second


@pytest.fixture(scope="module")
def gateway():
    with KernelGatewayProcess() as process:
        yield process


@pytest.mark.gateway
@pytest.mark.slow
@pytest.mark.parametrize("backend_settings", ["replicas"], indirect=True)
async def test_two_replicas_on_the_gateway_run_two_batches_at_once(jp_fetch, server, llama, llama_dir):
    backend = server.core.backend
    assert backend.replicas == 2
    first, second = await two_busy_jobs_running(jp_fetch, llama_dir)
    assert len(set(backend.kernel_ids(str(llama_dir)))) == 2, "each replica has its own kernel"
    small = asyncio.ensure_future(asyncio.to_thread(small_job, Model(str(llama_dir)), 0, "server"))
    await wait_until_queued(jp_fetch, 1)
    for job in await jobs_of(jp_fetch):
        if job["status"] == "running":
            await jp_fetch("ndif", "api", "jobs", job["id"], method="DELETE")
    for cancelled in (first, second):
        with pytest.raises(NDIFError, match="cancelled"):
            await cancelled
    output, saved = await small
    alone_output, alone_saved = small_job(llama, 0, "cpu")
    assert torch.equal(output, alone_output)
    for value, alone in zip(saved, alone_saved):
        assert_close(value, alone, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("backend_settings", ["local-replicas"], indirect=True)
async def test_two_local_replicas_run_two_jobs_at_once_each_on_its_own_weights(jp_fetch, server, llama, llama_dir):
    first, second = await two_busy_jobs_running(jp_fetch, llama_dir)
    for job in await jobs_of(jp_fetch):
        await jp_fetch("ndif", "api", "jobs", job["id"], method="DELETE")
    for cancelled in (first, second):
        with pytest.raises(NDIFError, match="cancelled"):
            await cancelled
    output, saved = await asyncio.to_thread(small_job, Model(str(llama_dir)), 2, "server")
    alone_output, alone_saved = small_job(llama, 2, "cpu")
    assert torch.equal(output, alone_output)
    for value, alone in zip(saved, alone_saved):
        assert_close(value, alone, rtol=1e-5, atol=1e-5)


def sampled(model: Model, device_map: str, seed: int):
    with model.generate(max_new_tokens=8, do_sample=True, temperature=1.5, seed=seed, device_map=device_map) as block:
        with block.invoke("Hello world"):
            model.lm_head.output.save()
    return block.output


async def test_seeded_sampling_on_the_server_draws_the_kernels_tokens(jp_fetch, server, llama, llama_dir):
    remote = await asyncio.to_thread(sampled, Model(str(llama_dir)), "server", 11)
    assert torch.equal(remote, sampled(llama, "cpu", 11))
    assert not torch.equal(remote, sampled(llama, "cpu", 12)), "another seed samples other tokens"

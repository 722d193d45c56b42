"""The research verbs through a real server: gradients (read, assigned, trainable tensors), steps, caches, skip,
stop and weights, each through `device_map="server"` equal to the same block run in the kernel."""

from __future__ import annotations

import asyncio

import pytest
import torch
from conftest import extension_config

from ndif_jupyter import Model

pytestmark = [pytest.mark.usefixtures("ndif_client_environment"), pytest.mark.server]

PROMPT = "The Eiffel Tower is in the city of"


@pytest.fixture
def jp_server_config(llama_dir, tmp_path):
    return extension_config([llama_dir], tmp_path, device_map="cpu")


def gradients(model: Model, device_map: str) -> list[torch.Tensor]:
    layers = model.model.layers
    probe = torch.linspace(-1, 1, model.config.hidden_size * 2).reshape(-1, 2).requires_grad_(True)
    with model.trace(PROMPT, device_map=device_map) as tracer:
        weights = tracer.trainable(probe)
        early = layers[0].output
        attention = layers[1].self_attn.output[0]
        late = layers[2].output
        late[:, -1] += early[:, -1] @ weights @ weights.T
        norm = model.model.norm.weight
        loss = model.lm_head.output[0, -1].log_softmax(-1)[11]
        with loss.backward():
            late.grad = late.grad * 2
            grads = [early.grad.save(), attention.grad.save(), norm.grad.save()]
        saved_loss = loss.save()
    return [saved_loss.value, *(grad.value for grad in grads), probe.grad]


def steps(model: Model, device_map: str) -> list[torch.Tensor]:
    vector = torch.linspace(-2, 2, model.config.hidden_size)
    with model.generate(max_new_tokens=6, do_sample=False, device_map=device_map) as generator:
        with generator.invoke(PROMPT):
            saved = []
            for _ in generator.steps:
                model.model.layers[1].output[:, -1] += vector
                saved.append(model.model.layers[-1].output.save())
    return [generator.output, *(value.value for value in saved)]


def caches_skip_stop_and_weights(model: Model, device_map: str) -> list[torch.Tensor]:
    layers = model.model.layers
    with model.trace(PROMPT, device_map=device_map) as tracer:
        by_path = tracer.cache(modules=[layers[0], layers[3].mlp])
        by_name = tracer.cache(names="transformer_lens", modules=[layers[2].self_attn.o_proj, layers[2]])
        layers[1].skip(layers[1].input)
        top = model.lm_head.output[0, -1].topk(4)
        projected = (model.model.norm.output @ model.lm_head.weight.T).save()
        saved = [top.values.save(), top.indices.save(), projected]
    with model.trace(PROMPT, device_map=device_map) as tracer:
        early = layers[0].output.save()
        tracer.stop()
    values = [by_path[key] for key in by_path] + [by_name[key] for key in sorted(by_name)]
    return [*values, *(proxy.value for proxy in saved), early.value]


def output_with_its_cache(model: Model, device_map: str) -> list[torch.Tensor]:
    with model.trace(PROMPT, device_map=device_map):
        with pytest.warns(UserWarning, match="DynamicCache"):
            whole = model.output.save()
    left_out = [key for key, item in whole.value.items() if item is None]
    assert left_out in (["cache"], ["past_key_values"]), left_out
    return [whole.value["logits"]]


def conditions_items_and_logs(model: Model, device_map: str) -> list[torch.Tensor]:
    layers = model.model.layers
    vector = torch.linspace(-3, 3, model.config.hidden_size)
    with model.generate(max_new_tokens=6, do_sample=False, device_map=device_map) as generator:
        with generator.invoke(PROMPT):
            picked = []
            for step in generator.steps:
                norm = layers[0].output[0, -1].norm()
                with generator.cond(norm > 0.165 + step / 50):
                    layers[1].output[:, -1] += vector
                    picked.append(norm.item().save())
                generator.log("step", step, norm)
                logits = model.lm_head.output[0, -1]
                top = logits[:5].tolist().save()
    taken = [proxy.value for proxy in picked if proxy.has_value]
    assert 0 < len(taken) < len(picked), "the condition holds at some steps only"
    return [generator.output, torch.tensor(taken), torch.tensor(top.value)]


def persistent_edits(model: Model, device_map: str) -> list[torch.Tensor]:
    layers = model.model.layers
    vector = torch.linspace(-3, 3, model.config.hidden_size)
    with model.edit("steer") as edit:
        layers[1].output[:, -1] += vector
        with edit.cond(layers[0].output[0, -1].norm() > 0.18):
            layers[2].mlp.output[:] = 0
    try:
        with model.generate(max_new_tokens=5, do_sample=False, device_map=device_map) as generator:
            with generator.invoke(PROMPT):
                read = [layers[1].output[:, -1].save() for _ in generator.steps]
        with model.trace(PROMPT, device_map=device_map, edits=False):
            plain = model.lm_head.output.save()
    finally:
        model.clear_edits()
    return [generator.output, *(value.value for value in read), plain.value]


def inner_operations(model: Model, device_map: str) -> list[torch.Tensor]:
    attention = model.model.layers[1].self_attn
    with model.generate(max_new_tokens=3, do_sample=False, device_map=device_map) as generator:
        with generator.invoke(PROMPT):
            saved = []
            for _ in generator.steps:
                query, key = attention.ops.apply_rotary_pos_emb.output
                query[:, :, -1] *= 0.5
                saved.append(key.save())
                saved.append(attention.ops.attention_interface.output[0].save())
    return [generator.output, *(value.value for value in saved)]


def beams_and_sequences(model: Model, device_map: str) -> list[torch.Tensor]:
    vector = torch.linspace(-2, 2, model.config.hidden_size)
    with model.generate(max_new_tokens=4, num_beams=3, num_return_sequences=2, device_map=device_map) as beams:
        with beams.invoke(PROMPT):
            read = []
            for _ in beams.steps:
                model.model.layers[1].output[:, -1] += vector
                read.append(model.model.layers[2].output[:, -1].save())
        with beams.invoke("Hello world"):
            pass
    options = {"max_new_tokens": 4, "do_sample": True, "num_return_sequences": 3, "seed": 3}
    with model.generate(device_map=device_map, **options) as sampled:
        with sampled.invoke(PROMPT):
            logits = model.lm_head.output.save()
    return [beams.output, *(value.value for value in read), sampled.output, logits.value]


def session(model: Model, device_map: str) -> list[torch.Tensor]:
    layers = model.model.layers
    with model.session(device_map=device_map):
        with model.trace(PROMPT):
            direction = layers[0].output[0, -1] - layers[0].output[0, 0]
            top = model.lm_head.output[0, -1].argmax()
        with model.generate(max_new_tokens=4, do_sample=False) as generator:
            with generator.invoke("Hello world"):
                for _ in generator.steps:
                    layers[1].output[:, -1] += direction / direction.norm()
                steered = layers[2].output[:, -1]
        with model.trace("Hello world"):
            layers[2].output[:, -1] = steered
            chosen = model.lm_head.output[0, -1, top].save()
    return [generator.output, chosen.value]


@pytest.mark.parametrize(
    "block",
    [
        gradients,
        steps,
        caches_skip_stop_and_weights,
        output_with_its_cache,
        conditions_items_and_logs,
        persistent_edits,
        inner_operations,
        beams_and_sequences,
        session,
    ],
)
async def test_a_block_through_the_server_equals_the_kernel(jp_fetch, server, llama, llama_dir, block):
    remote = await asyncio.to_thread(block, Model(str(llama_dir)), "server")
    local = block(llama, "cpu")
    assert len(remote) == len(local)
    for theirs, mine in zip(remote, local):
        assert torch.equal(theirs, mine)


async def test_a_session_is_one_job(jp_fetch, server, llama_dir):
    from ndif_jupyter.client import ServerClient

    client = ServerClient.from_environment()
    before = await asyncio.to_thread(client.jobs)
    await asyncio.to_thread(session, Model(str(llama_dir)), "server")
    new = (await asyncio.to_thread(client.jobs))[len(before) :]
    assert [(job["kind"], job["steps"], job["status"]) for job in new] == [("session", 1 + 4 + 1, "done")]

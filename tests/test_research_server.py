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


@pytest.mark.parametrize("block", [gradients, steps, caches_skip_stop_and_weights, output_with_its_cache])
async def test_a_block_through_the_server_equals_the_kernel(jp_fetch, server, llama, llama_dir, block):
    remote = await asyncio.to_thread(block, Model(str(llama_dir)), "server")
    local = block(llama, "cpu")
    assert len(remote) == len(local)
    for theirs, mine in zip(remote, local):
        assert torch.equal(theirs, mine)

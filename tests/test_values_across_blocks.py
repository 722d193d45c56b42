"""A value saved in one block is a plain tensor to the code after it: operations on it run at once, and a later
block uses them (and the saved values themselves) as constants, in the kernel and through a server."""

from __future__ import annotations

import pytest
import torch
from conftest import extension_config

from ndif_jupyter import Model
from ndif_jupyter.errors import ValueNotReadyError

PROMPT = "The Eiffel Tower is in the city of"


@pytest.fixture
def jp_server_config(gpt2_dir, tmp_path):
    return extension_config([gpt2_dir], tmp_path, device_map="cpu")


def test_operations_on_an_ended_blocks_saved_values_run_at_once(gpt2: Model):
    with gpt2.trace(PROMPT):
        hidden = gpt2.transformer.h[0].output.save()
        heads = [gpt2.transformer.h[layer].attn.output[0].save() for layer in range(2)]
        finite = gpt2.transformer.h[0].output.isfinite().all().save()
        top = gpt2.lm_head.output[0, -1].argmax().save()
    value = hidden.value
    assert torch.equal(hidden[0, 1], value[0, 1])
    assert torch.equal(hidden.mean(dim=1), value.mean(dim=1))
    assert torch.equal(hidden + 1, value + 1) and torch.equal(2 * hidden, 2 * value)
    assert torch.equal(torch.softmax(hidden, -1), torch.softmax(value, -1))
    assert torch.equal(heads[1][0][-1], heads[1].value[0][-1])
    assert torch.equal(hidden[0].T, value[0].T)
    assert bool(finite) is True and list(range(1000))[top] == top.value.item()


def test_a_later_block_uses_an_earlier_blocks_values_as_constants(gpt2: Model):
    with gpt2.trace(PROMPT):
        means = [[gpt2.transformer.h[layer].output.mean(dim=1).save()] for layer in range(3)]
    with gpt2.trace(PROMPT):
        gpt2.transformer.h[2].output[:, -1] = means[2][0][0]
        patched = gpt2.lm_head.output.save()
    with gpt2.trace(PROMPT):
        gpt2.transformer.h[2].output[:, -1] = means[2][0].value[0]
        expected = gpt2.lm_head.output.save()
    assert torch.equal(patched.value, expected.value)


def test_an_unsaved_value_of_an_ended_block_says_why_it_has_none(gpt2: Model):
    with gpt2.trace(PROMPT):
        hidden = gpt2.transformer.h[0].output
    with pytest.raises(ValueNotReadyError, match="save"):
        hidden[0, 1]


@pytest.mark.server
@pytest.mark.usefixtures("ndif_client_environment")
async def test_a_later_block_on_the_server_uses_an_earlier_blocks_values(jp_fetch, server, gpt2, gpt2_dir):
    import asyncio

    def patched(model: Model, device_map: str) -> torch.Tensor:
        with model.trace(PROMPT, device_map=device_map):
            means = [model.transformer.h[layer].output.mean(dim=1).save() for layer in range(3)]
        with model.trace(PROMPT, device_map=device_map):
            model.transformer.h[2].output[:, -1] = means[1][0] * 2
            logits = model.lm_head.output.save()
        return logits.value

    remote = await asyncio.to_thread(patched, Model(str(gpt2_dir)), "server")
    assert torch.equal(remote, patched(gpt2, "cpu"))

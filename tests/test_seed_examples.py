"""Every example of the NDIF engine README, as written there, with the module paths of the model used.

GPT-2's paths (`model.transformer.h`) on the tiny GPT-2, Llama's (`model.model.layers`) on the default model; the
examples' `device_map='cuda'` becomes "cpu" where there is no GPU. In current transformers a decoder layer returns
its hidden states as a tensor, so the examples' `.output[0]` selects the first prompt's row.
"""

from __future__ import annotations

import pytest
import torch
from torch.testing import assert_close

from ndif_jupyter import Model, NDIFError
from ndif_testing import reference

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
PROMPT = "The Eiffel Tower is in the city of"


def layers_of(model: Model):
    return model.transformer.h if hasattr(model.config, "n_layer") else model.model.layers


def seed_simple(model: Model):
    with model.generate(device_map=DEVICE, max_new_tokens=1) as generator:
        with generator.invoke(PROMPT) as invoker:
            hidden_states = layers_of(model)[-1].output[0].save()
    output = generator.output
    hidden_states = hidden_states.value
    return output, hidden_states


def seed_multiple_tokens(model: Model):
    with model.generate(device_map=DEVICE, max_new_tokens=3) as generator:
        with generator.invoke(PROMPT) as invoker:
            hidden_states1 = layers_of(model)[-1].output[0].save()
            invoker.next()
            hidden_states2 = layers_of(model)[-1].output[0].save()
            invoker.next()
            hidden_states3 = layers_of(model)[-1].output[0].save()
    output = generator.output
    return output, hidden_states1.value, hidden_states2.value, hidden_states3.value


def seed_token_indexing(model: Model):
    with model.generate(device_map=DEVICE, max_new_tokens=1) as generator:
        with generator.invoke(PROMPT) as invoker:
            hidden_states = layers_of(model)[-1].output[0].t(0).save()
    output = generator.output
    hidden_states = hidden_states.value
    return output, hidden_states


def seed_remote(model: Model):
    with model.generate(device_map="server", max_new_tokens=1) as generator:
        with generator.invoke(PROMPT) as invoker:
            hidden_states = layers_of(model)[-1].output[0].save()
    return generator.output, hidden_states.value


def check_seed_examples(model: Model, last_layer: str, folder=None):
    n = len(model.tokenizer(PROMPT)["input_ids"])
    width = model.config.hidden_size
    output, hidden = seed_simple(model)
    assert output.shape == (1, n + 1) and hidden.shape == (n, width)
    if folder is not None:
        ref = reference.load(folder)
        with reference.capture(ref, [last_layer]) as seen:
            expected_ids = reference.greedy(ref, model.tokenizer(PROMPT)["input_ids"], 1, model.loaded.pad_token_id)
        assert torch.equal(output, expected_ids)
        assert_close(hidden, seen[last_layer][0][0], rtol=0, atol=0)

    output3, h1, h2, h3 = seed_multiple_tokens(model)
    assert output3.shape == (1, n + 3)
    assert torch.equal(output3[:, : n + 1], output)
    assert h1.shape == (n, width) and h2.shape == (1, width) and h3.shape == (1, width)
    assert_close(h1, hidden, rtol=0, atol=0)

    _, first_token = seed_token_indexing(model)
    assert_close(first_token, hidden[0], rtol=0, atol=0)

    with pytest.raises(NDIFError, match="server"):
        seed_remote(model)
    return output3


def test_seed_examples_on_tiny_gpt2(gpt2: Model, gpt2_dir):
    check_seed_examples(gpt2, "transformer.h.3", gpt2_dir)


@pytest.mark.default_model
@pytest.mark.slow
def test_seed_examples_on_the_default_model(default_model: Model):
    output = check_seed_examples(default_model, "model.layers.29")
    assert default_model.tokenizer.decode(output[0, -3:]) == " Paris.\n"

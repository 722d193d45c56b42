"""The seed document's examples on the embedded default model (SmolLM2-135M-Instruct, a Llama architecture)."""

from __future__ import annotations

import pytest
import torch
from conftest import hook_count
from torch.testing import assert_close

from ndif_jupyter import Model

pytestmark = pytest.mark.default_model

PROMPT = "The Eiffel Tower is in the city of"


def test_construction_loads_no_weights(default_model: Model):
    model = Model()
    assert model.local_model is None
    assert all(p.device.type == "meta" for p in model.loaded.meta_model.parameters())
    assert "LlamaDecoderLayer" in repr(model)


@pytest.mark.slow
def test_the_seed_example_answers_paris(default_model: Model):
    model = default_model
    with model.generate(max_new_tokens=3, device_map="cpu", do_sample=False) as generator:
        with generator.invoke(PROMPT) as invoker:
            h1 = model.model.layers[-1].output.save()
            invoker.next()
            h2 = model.model.layers[-1].output.t(0).save()
    ids = generator.output
    n = len(model.tokenizer(PROMPT)["input_ids"])
    assert ids.dtype == torch.long and ids.shape == (1, n + 3)
    assert model.tokenizer.decode(ids[0, n]) == " Paris"
    assert h1.value.shape == (1, n, 576) and h2.value.shape == (1, 576)
    assert hook_count(model.local_model) == 0


def test_the_seed_trace_and_logit_lens(default_model: Model):
    model = default_model
    with model.trace(PROMPT):
        logits = model.lm_head.output.save()
        lens = model.lm_head(model.model.norm(model.model.layers[-1].output)).save()
    assert model.tokenizer.decode(logits.value[0, -1].argmax()) == " Paris"
    assert_close(lens.value, logits.value)


def test_cross_prompt_intervention_moves_the_answer(default_model: Model):
    model = default_model
    n = len(model.tokenizer(PROMPT)["input_ids"])
    filler = " ".join(["_"] * n)
    assert len(model.tokenizer(filler)["input_ids"]) == n
    with model.generate(max_new_tokens=1, do_sample=False) as generator:
        with generator.invoke(PROMPT):
            embeddings = model.model.embed_tokens.output
        with generator.invoke(filler) as patched:
            model.model.embed_tokens.output = embeddings
    assert model.tokenizer.decode(patched.output[0, -1]) == " Paris"
    with model.generate(max_new_tokens=1, do_sample=False) as alone:
        with alone.invoke(filler):
            pass
    assert model.tokenizer.decode(alone.output[0, -1]) != " Paris"


@pytest.mark.slow
def test_a_batched_invoke_equals_the_prompt_alone(default_model: Model):
    model = default_model
    with model.trace() as tracer:
        with tracer.invoke("Paris is"):
            short = model.lm_head.output.save()
        with tracer.invoke(PROMPT):
            pass
    with model.trace("Paris is"):
        alone = model.lm_head.output.save()
    assert_close(short.value, alone.value, rtol=1e-4, atol=1e-4)


@pytest.mark.kernel
@pytest.mark.slow
def test_a_cell_without_a_model_runs_on_the_default_model(ip, default_model: Model):
    result = ip.run_cell(
        f'''%%ndif generate --max-new-tokens 1 --prompt "{PROMPT}" --no-display
hidden = model.model.layers[-1].output.save()
''',
        store_history=True,
    )
    assert result.success
    last = ip.user_ns["_ndif"]
    assert last.model == "SmolLM2-135M-Instruct" and last.generated == [" Paris"]
    with default_model.generate(max_new_tokens=1) as generator:
        with generator.invoke(PROMPT):
            hidden = default_model.model.layers[-1].output.save()
    assert torch.equal(ip.user_ns["hidden"], hidden.value)

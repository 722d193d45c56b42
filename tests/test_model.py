"""Model: construction without weights, the module tree, name resolution, and dispatch of the weights."""

from __future__ import annotations

import shutil

import pytest
import torch

from ndif_jupyter import Model
from ndif_jupyter.loading.checkpoints import cached_folder, list_cached, resolve


def test_construction_builds_the_tree_on_the_meta_device(gpt2: Model):
    assert gpt2.local_model is None
    assert all(p.device.type == "meta" for p in gpt2.loaded.meta_model.parameters())
    assert gpt2.tokenizer.padding_side == "left"
    assert gpt2.tokenizer.pad_token_id is not None
    assert "GPT2Block" in repr(gpt2) and "(lm_head)" in repr(gpt2)


def test_tab_completion_lists_modules(gpt2: Model):
    assert {"transformer", "lm_head", "generate", "trace", "tokenizer"} <= set(dir(gpt2))
    assert {"wte", "h", "ln_f", "output", "input", "inputs"} <= set(dir(gpt2.transformer))


def test_module_attributes_that_are_not_weights_are_readable(gpt2: Model):
    assert gpt2.lm_head.out_features == len(gpt2.tokenizer)
    assert gpt2.config.n_layer == 4


def test_weights_load_on_the_first_run_and_stay(gpt2: Model):
    with gpt2.trace("Hello world", device_map="cpu"):
        gpt2.lm_head.output.save()
    loaded = gpt2.local_model
    assert loaded is not None and next(loaded.parameters()).device.type == "cpu"
    with gpt2.trace("Hello world"):
        gpt2.lm_head.output.save()
    assert gpt2.local_model is loaded
    assert gpt2.dispatch("cpu") is loaded


def test_a_name_resolves_to_the_checkpoint_cache(gpt2_dir, tmp_path, monkeypatch):
    monkeypatch.setenv("NDIF_CHECKPOINTS", str(tmp_path))
    shutil.copytree(gpt2_dir, cached_folder("lab/tiny-gpt2"))
    assert resolve("lab/tiny-gpt2") == str(tmp_path / "lab--tiny-gpt2")
    assert "lab/tiny-gpt2" in list_cached()
    model = Model("lab/tiny-gpt2")
    with model.trace("Hello world"):
        logits = model.lm_head.output.save()
    assert logits.value.shape[-1] == len(model.tokenizer)


def test_dtype_can_be_chosen(gpt2_dir):
    model = Model(str(gpt2_dir), dtype=torch.bfloat16)
    with model.trace("Hello world"):
        h = model.transformer.h[0].output.save()
        assert h.dtype == torch.bfloat16
    assert h.value.dtype == torch.bfloat16


def test_the_hub_is_asked_only_when_it_answers(monkeypatch):
    import socket

    from ndif_jupyter.errors import NDIFError
    from ndif_jupyter.loading.checkpoints import hub_reachable

    with socket.socket() as listening:
        listening.bind(("127.0.0.1", 0))
        listening.listen()
        monkeypatch.setenv("HF_ENDPOINT", f"http://127.0.0.1:{listening.getsockname()[1]}")
        assert hub_reachable()
    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))
        port = closed.getsockname()[1]
    monkeypatch.setenv("HF_ENDPOINT", f"http://127.0.0.1:{port}")
    assert not hub_reachable()
    with pytest.raises(NDIFError, match="the model hub cannot be reached from this machine"):
        Model("some-org/some-model")
    monkeypatch.delenv("HF_ENDPOINT")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert not hub_reachable()

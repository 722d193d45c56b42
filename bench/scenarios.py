"""The benchmark scenarios: the same work done with raw forward hooks, with this project, and with nnsight.

Each contender is a zero-argument callable that runs the whole thing a user would run (for this project and nnsight
that includes recording the block, checking it, setting hooks up and removing them) and returns the saved tensors,
so that the contenders can be checked to give the same values before they are timed.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from models import default_checkpoint, load_torch_model, tiny_checkpoint


@dataclass
class Scenario:
    """One row of the table: what runs, and the target ratio of this project to raw hooks."""

    key: str
    title: str
    target: float
    contenders: dict[str, Callable[[], list[torch.Tensor]]]


def _layers(model: torch.nn.Module) -> list[torch.nn.Module]:
    base = model.transformer.h if hasattr(model, "transformer") else model.model.layers
    return list(base)


def _saved_by_hooks(model: torch.nn.Module, run: Callable[[], object]) -> list[torch.Tensor]:
    """Every layer's output at every call, collected by plain forward hooks around `run()` (the floor)."""
    saved: list[torch.Tensor] = []
    handles = [
        layer.register_forward_hook(lambda module, args, output: saved.append(output.detach()))
        for layer in _layers(model)
    ]
    try:
        with torch.no_grad():
            run()
    finally:
        for handle in handles:
            handle.remove()
    return saved


def _layer_paths(model) -> list:
    """Our Envoys of every layer."""
    return list(model.transformer.h) if hasattr(model.loaded.meta_model, "transformer") else list(model.model.layers)


def _nnsight_layers(wrapped, hf_model) -> list:
    return list(wrapped.transformer.h) if hasattr(hf_model, "transformer") else list(wrapped.model.layers)


def _ids(rows: int, length: int, vocabulary: int, seed: int) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return torch.randint(3, vocabulary - 1, (rows, length), generator=generator)


def forward_scenario(
    key: str, title: str, target: float, folder: str, rows: int, length: int, device: str, with_nnsight: bool
) -> Scenario:
    """One forward pass of a batch of `rows` x `length` tokens, saving every layer's output."""
    from ndif_jupyter import Model

    ours = Model(folder)
    ours.dispatch(device)
    ids = _ids(rows, length, ours.config.vocab_size, seed=0).to(device)
    mask = torch.ones_like(ids)
    reference = load_torch_model(folder, device, ours.loaded.dtype)

    def hooks() -> list[torch.Tensor]:
        return _saved_by_hooks(reference, lambda: reference(input_ids=ids, attention_mask=mask))

    def ndif() -> list[torch.Tensor]:
        with ours.trace(ids, device_map=device):
            saved = [layer.output.save() for layer in _layer_paths(ours)]
        return [proxy.value for proxy in saved]

    contenders = {"hooks": hooks, "ours": ndif}
    if with_nnsight:
        contenders["nnsight"] = _nnsight_forward(folder, device, ours, ids, mask)
    return Scenario(key, title, target, contenders)


def _nnsight_forward(folder: str, device: str, ours, ids: torch.Tensor, mask: torch.Tensor):
    from nnsight import LanguageModel

    hf_model = load_torch_model(folder, device, ours.loaded.dtype)
    wrapped = LanguageModel(hf_model, tokenizer=ours.tokenizer)
    layers = _nnsight_layers(wrapped, hf_model)

    def nnsight() -> list[torch.Tensor]:
        with wrapped.trace({"input_ids": ids, "attention_mask": mask}):
            saved = list().save()
            for layer in layers:
                saved.append(layer.output)
        return list(saved)

    return nnsight


def generate_scenario(
    key: str,
    title: str,
    target: float,
    folder: str,
    rows: int,
    length: int,
    new_tokens: int,
    device: str,
    with_nnsight: bool,
) -> Scenario:
    """Greedy generation of `new_tokens` tokens for `rows` prompts, saving every layer's output at every step."""
    from ndif_jupyter import Model

    ours = Model(folder)
    ours.dispatch(device)
    ids = _ids(rows, length, ours.config.vocab_size, seed=1).to(device)
    mask = torch.ones_like(ids)
    options = {"max_new_tokens": new_tokens, "min_new_tokens": new_tokens, "do_sample": False}
    reference = load_torch_model(folder, device, ours.loaded.dtype)
    pad = ours.loaded.pad_token_id

    def hooks() -> list[torch.Tensor]:
        return _saved_by_hooks(
            reference, lambda: reference.generate(input_ids=ids, attention_mask=mask, pad_token_id=pad, **options)
        )

    def ndif() -> list[torch.Tensor]:
        saved = []
        with ours.generate(device_map=device, **options) as generator:
            with generator.invoke(ids) as invoker:
                for step in range(new_tokens):
                    saved += [layer.output.save() for layer in _layer_paths(ours)]
                    if step < new_tokens - 1:
                        invoker.next()
        return [proxy.value for proxy in saved]

    contenders = {"hooks": hooks, "ours": ndif}
    if with_nnsight:
        contenders["nnsight"] = _nnsight_generate(folder, device, ours, ids, mask, options, pad)
    return Scenario(key, title, target, contenders)


def _nnsight_generate(folder: str, device: str, ours, ids, mask, options, pad):
    from nnsight import LanguageModel

    hf_model = load_torch_model(folder, device, ours.loaded.dtype)
    wrapped = LanguageModel(hf_model, tokenizer=ours.tokenizer)
    layers = _nnsight_layers(wrapped, hf_model)

    def nnsight() -> list[torch.Tensor]:
        with wrapped.generate({"input_ids": ids, "attention_mask": mask}, pad_token_id=pad, **options) as tracer:
            saved = list().save()
            for _ in tracer.iter[:]:
                for layer in layers:
                    saved.append(layer.output)
        return list(saved)

    return nnsight


def all_scenarios(device: str, with_nnsight: bool, include_default: bool) -> list[Callable[[], Scenario]]:
    """The issue's scenarios, as builders (each loads its models when called)."""
    builders = [
        lambda: forward_scenario(
            "tiny-gpt2-forward",
            "tiny GPT-2, batch 2x8, one forward, save every layer",
            1.05,
            tiny_checkpoint("gpt2"),
            2,
            8,
            device,
            with_nnsight,
        ),
        lambda: generate_scenario(
            "tiny-llama-generate",
            "tiny Llama, 2 prompts, generate 16, save every layer at every step",
            1.02,
            tiny_checkpoint("llama"),
            2,
            8,
            16,
            device,
            with_nnsight,
        ),
    ]
    if include_default:
        builders.append(
            lambda: forward_scenario(
                "default-forward",
                "SmolLM2-135M, batch 8x9, one forward, save every layer",
                1.01,
                default_checkpoint(),
                8,
                9,
                device,
                with_nnsight,
            )
        )
    return builders

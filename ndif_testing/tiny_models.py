"""Tiny GPT-2 and Llama checkpoints built from a config, with a byte-level BPE tokenizer trained on a few sentences."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

CORPUS = [
    "The Eiffel Tower is in the city of Paris.",
    "The Colosseum is in the city of Rome.",
    "The Space Needle is in the city of Seattle.",
    "Hello world, this is a tiny model for tests.",
    "_ _ _ _ _ _ _ _ _ _ _ _",
    "The quick brown fox jumps over the lazy dog.",
] * 20

EOS = "<|endoftext|>"


def build_tokenizer(folder: Path):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=400, special_tokens=[EOS], initial_alphabet=pre_tokenizers.ByteLevel.alphabet()
    )
    tokenizer.train_from_iterator(CORPUS, trainer)
    wrapped = PreTrainedTokenizerFast(tokenizer_object=tokenizer, eos_token=EOS, pad_token=EOS, bos_token=EOS)
    wrapped.save_pretrained(str(folder))
    return wrapped


def build_gpt2(folder: Path, layers: int = 4, width: int = 64, seed: int = 0) -> Path:
    from transformers import GPT2Config, GPT2LMHeadModel

    tokenizer = build_tokenizer(folder)
    config = GPT2Config(
        n_layer=layers,
        n_embd=width,
        n_head=4,
        n_positions=128,
        vocab_size=len(tokenizer),
        **_special_tokens(tokenizer),
    )
    return _save(GPT2LMHeadModel, config, folder, seed)


def build_llama(folder: Path, layers: int = 4, width: int = 64, seed: int = 0) -> Path:
    from transformers import LlamaConfig, LlamaForCausalLM

    tokenizer = build_tokenizer(folder)
    config = LlamaConfig(
        num_hidden_layers=layers,
        hidden_size=width,
        intermediate_size=width * 2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=2048,
        vocab_size=len(tokenizer),
        **_special_tokens(tokenizer),
    )
    return _save(LlamaForCausalLM, config, folder, seed)


def _special_tokens(tokenizer) -> dict[str, Any]:
    """The tiny tokenizer's one special token as begin, end and padding."""
    return {name: tokenizer.eos_token_id for name in ("bos_token_id", "eos_token_id", "pad_token_id")}


def _save(model_class, config, folder: Path, seed: int) -> Path:
    """A model of `config` with weights drawn from `seed`, saved as a checkpoint folder."""
    torch.manual_seed(seed)
    model_class(config).eval().save_pretrained(str(folder))
    return folder

"""What Hugging Face's `generate` is given so that each part of a batch generates as it would alone: sampling from
the part's own seeded generator, and the part's rows ending at its own number of new tokens or end-of-sequence."""

from __future__ import annotations

import copy
from collections.abc import Callable, Sequence
from typing import Any

import torch
from transformers import LogitsProcessor, StoppingCriteria
from transformers.generation import logits_process as warpers

from .merging import Part

SAMPLING_OPTIONS = frozenset({"temperature", "top_k", "top_p", "min_p", "typical_p", "epsilon_cutoff", "eta_cutoff"})
"""Options that shape the distribution sampled from; with seeded sampling they go to `SeededSampling`."""


def seeded(options: dict[str, Any], parts: Sequence[Part]) -> bool:
    """Whether this run samples, and some part asked for a seed."""
    return bool(options.get("do_sample")) and any(part.seed is not None for part in parts)


class SeededSampling(LogitsProcessor):
    """Samples each part's rows from its own generator seeded with the part's seed (the global generator for a part
    without one), after the warpers sampling would apply; the chosen token is left the only finite score, so that
    greedy decoding picks it.

    A part's draws so depend only on its own rows' scores: alone or beside other jobs, it samples the same tokens.
    """

    def __init__(self, generation_config: Any, options: dict[str, Any], parts: Sequence[Part], copies: int = 1):
        config = copy.deepcopy(generation_config)
        self.copies = copies
        """How many rows each prompt fills (its sampled sequences)."""
        config.update(**{key: value for key, value in options.items() if key in SAMPLING_OPTIONS})
        self.warpers = _warpers(config)
        self.parts = list(parts)
        self.generators: dict[int, torch.Generator] = {}

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> Any:
        for warper in self.warpers:
            scores = warper(input_ids, scores)
        probabilities = torch.softmax(scores.float(), dim=-1)
        chosen = torch.empty(scores.shape[0], 1, dtype=torch.long, device=scores.device)
        for index, part in enumerate(self.parts):
            rows = slice(part.first_row * self.copies, (part.first_row + part.rows) * self.copies)
            generator = self._generator(index, part, scores.device)
            chosen[rows] = torch.multinomial(probabilities[rows], 1, generator=generator)
        picked = torch.full_like(scores, -float("inf"))
        return picked.scatter_(1, chosen, 0.0)

    def _generator(self, index: int, part: Part, device: torch.device) -> torch.Generator | None:
        if part.seed is None:
            return None
        if index not in self.generators:
            self.generators[index] = torch.Generator(device=device).manual_seed(part.seed)
        return self.generators[index]


def _warpers(config: Any) -> list[Any]:
    found: list[LogitsProcessor] = []
    if config.temperature is not None and config.temperature != 1.0:
        found.append(warpers.TemperatureLogitsWarper(config.temperature))
    if config.top_k is not None and config.top_k != 0:
        found.append(warpers.TopKLogitsWarper(top_k=config.top_k))
    if config.top_p is not None and config.top_p < 1.0:
        found.append(warpers.TopPLogitsWarper(top_p=config.top_p))
    if config.min_p is not None:
        found.append(warpers.MinPLogitsWarper(min_p=config.min_p))
    if config.typical_p is not None and config.typical_p < 1.0:
        found.append(warpers.TypicalLogitsWarper(mass=config.typical_p))
    if config.epsilon_cutoff is not None and 0.0 < config.epsilon_cutoff < 1.0:
        found.append(warpers.EpsilonLogitsWarper(epsilon=config.epsilon_cutoff))
    if config.eta_cutoff is not None and 0.0 < config.eta_cutoff < 1.0:
        found.append(warpers.EtaLogitsWarper(epsilon=config.eta_cutoff))
    return found


class PartEnds(StoppingCriteria):
    """Marks a part's rows as finished once they have their part's number of new tokens or emitted an
    end-of-sequence token, or once `ended(part)` says the part stopped (it failed or was cancelled).

    `finished_parts()` then names the parts whose rows are all finished: their alone run would have stopped there.
    """

    def __init__(self, parts: Sequence[Part], prompt_length: int, eos: set[int], ended: Callable[[int], bool]):
        self.parts = list(parts)
        self.prompt_length = prompt_length
        self.eos = torch.tensor(sorted(eos), dtype=torch.long) if eos else None
        self.ended = ended
        self.done: torch.Tensor | None = None

    def __call__(self, input_ids: torch.LongTensor, scores: Any, **kwargs: Any) -> Any:
        generated = input_ids.shape[1] - self.prompt_length
        if self.done is None:
            self.done = torch.zeros(input_ids.shape[0], dtype=torch.bool, device=input_ids.device)
        if self.eos is not None:
            self.done |= torch.isin(input_ids[:, -1], self.eos.to(input_ids.device))
        for index, part in enumerate(self.parts):
            if generated >= part.max_new_tokens or self.ended(index):
                self.done[part.first_row : part.first_row + part.rows] = True
        return self.done.clone()

    def finished_parts(self) -> list[int]:
        if self.done is None:
            return []
        return [
            index
            for index, part in enumerate(self.parts)
            if bool(self.done[part.first_row : part.first_row + part.rows].all())
        ]


def eos_ids(generation_config: Any, options: dict[str, Any]) -> set[int]:
    """The end-of-sequence token ids generation stops a row at."""
    value = options.get("eos_token_id", getattr(generation_config, "eos_token_id", None))
    if value is None:
        return set()
    return {int(value)} if isinstance(value, int) else {int(token) for token in value}

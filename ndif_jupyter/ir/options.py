"""The values a block's options may take (`max_new_tokens`, `temperature`, token ids, ...): the rules that tracing
checks at the user's line and a server checks again in every request."""

from __future__ import annotations

import math
from typing import Any, TypeGuard

_FLAG_OPTIONS = frozenset(
    {
        "output_attentions",
        "output_hidden_states",
        "use_cache",
        "do_sample",
        "renormalize_logits",
        "remove_invalid_values",
    }
)
_COUNT_OPTIONS = {"logits_to_keep": 0, "max_new_tokens": 1, "min_new_tokens": 0, "top_k": 0, "no_repeat_ngram_size": 0}
_COUNT_OPTIONS.update({"num_beams": 1, "num_return_sequences": 1, "seed": 0})
_NUMBER_OPTIONS = {
    "temperature": (0.0, math.inf, False),
    "top_p": (0.0, 1.0, True),
    "min_p": (0.0, 1.0, True),
    "typical_p": (0.0, 1.0, True),
    "epsilon_cutoff": (0.0, 1.0, True),
    "eta_cutoff": (0.0, 1.0, True),
    "repetition_penalty": (0.0, math.inf, False),
    "length_penalty": (-math.inf, math.inf, True),
}
_TOKEN_OPTIONS = frozenset({"forced_bos_token_id", "forced_eos_token_id"})
_TOKEN_LIST_OPTIONS = frozenset({"suppress_tokens", "begin_suppress_tokens"})
_LONGEST_OPTION_LIST = 65_536


def option_problem(key: str, value: Any, vocabulary: int) -> str | None:
    """What is wrong with one option's value (`vocabulary`: the model's number of token ids), or None; options
    without a rule here are not checked."""
    if key in _FLAG_OPTIONS:
        return None if isinstance(value, bool) else "it must be true or false"
    if key == "seed" and _is_int(value) and value >= 2**63:
        return "it must be below 2**63"
    if key in _COUNT_OPTIONS:
        least = _COUNT_OPTIONS[key]
        return None if _is_int(value) and value >= least else f"it must be an integer of at least {least}"
    if key in _NUMBER_OPTIONS:
        low, high, closed = _NUMBER_OPTIONS[key]
        if not isinstance(value, (int, float)) or isinstance(value, bool) or not math.isfinite(value):
            return "it must be a finite number"
        inside = (low <= value <= high) if closed else (low < value <= high)
        return None if inside else f"it must be between {low} and {high}"
    if key in _TOKEN_OPTIONS:
        return _token_problem([value], vocabulary)
    if key == "eos_token_id":
        return _token_problem(value if isinstance(value, list) else [value], vocabulary)
    if key in _TOKEN_LIST_OPTIONS:
        return _token_problem(value, vocabulary) if isinstance(value, list) else "it must be a list of token ids"
    if key == "bad_words_ids":
        if not isinstance(value, list) or not value or not all(isinstance(words, list) and words for words in value):
            return "it must be a list of non-empty lists of token ids"
        return _token_problem([token for words in value for token in words], vocabulary)
    return None


def new_tokens_problem(options: dict[str, Any]) -> str | None:
    """What is wrong with a generation's `min_new_tokens` against its `max_new_tokens` (both integers), or None."""
    least, most = options.get("min_new_tokens"), options.get("max_new_tokens")
    if _is_int(least) and _is_int(most) and least > most:
        return f"min_new_tokens={least} is more than max_new_tokens={most}"
    return None


def _token_problem(tokens: Any, vocabulary: int) -> str | None:
    if not isinstance(tokens, list) or len(tokens) > _LONGEST_OPTION_LIST:
        return f"it must be a list of at most {_LONGEST_OPTION_LIST} token ids"
    if not all(_is_int(token) and 0 <= token < vocabulary for token in tokens):
        return f"token ids must be integers from 0 to {vocabulary - 1} (the model's vocabulary)"
    return None


def _is_int(value: Any) -> TypeGuard[int]:
    return isinstance(value, int) and not isinstance(value, bool)

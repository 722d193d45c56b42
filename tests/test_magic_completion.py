"""Tab completion inside a `%%ndif` cell body, through IPython's own completer."""

from __future__ import annotations

import pytest
from IPython.core.completer import provisionalcompleter

from ndif_jupyter import Model

EVENTS = ("output", "input", "inputs")

pytestmark = pytest.mark.kernel


def complete(ip, text: str) -> list[str]:
    """The texts IPython would insert for a cursor at the end of `text`, applied to the line as a user sees it."""
    with provisionalcompleter():
        completions = list(ip.Completer.completions(text, len(text)))
    return [text[: c.start] + c.text for c in completions]


def test_module_paths_complete_from_the_cells_model(ip, gpt2: Model, llama: Model):
    ip.user_ns.update({"gpt2": gpt2, "model": llama})
    header = "%%ndif generate gpt2 --max-new-tokens 2\n"
    assert complete(ip, header + "h = model.trans") == [header + "h = model.transformer"]
    assert header + "h = model.transformer.h" in complete(ip, header + "h = model.transformer.")
    after_index = complete(ip, header + "with invoke('x'):\n    h = model.transformer.h[-1].m")
    assert after_index == [header + "with invoke('x'):\n    h = model.transformer.h[-1].mlp"]
    events = complete(ip, header + "model.lm_head.o")
    assert events == [header + "model.lm_head.output"]
    header_llama = "%%ndif trace --prompt hi\n"
    assert complete(ip, header_llama + "model.model.la") == [header_llama + "model.model.layers"], (
        "without a MODEL, the namespace's model"
    )


def test_inner_operations_complete_after_ops(ip, llama: Model):
    ip.user_ns["model"] = llama
    header = "%%ndif trace --prompt hi\n"
    attention = "model.model.layers[0].self_attn."
    assert header + attention + "ops" in complete(ip, header + attention + "o")
    assert complete(ip, header + attention + "ops.apply") == [header + attention + "ops.apply_rotary_pos_emb"]
    events = complete(ip, header + attention + "ops.apply_rotary_pos_emb.")
    assert sorted(events) == sorted(header + attention + f"ops.apply_rotary_pos_emb.{e}" for e in EVENTS)
    mlp = complete(ip, header + "model.model.layers[0].mlp.o")
    assert mlp == [header + "model.model.layers[0].mlp.output"], "an MLP whose forward calls no function has no ops"


def test_the_roots_api_and_bound_names_complete(ip, gpt2: Model):
    ip.user_ns["gpt2"] = gpt2
    header = "%%ndif generate gpt2\n"
    root = complete(ip, header + "model.tok")
    assert header + "model.tokenizer" in root
    assert header + "generator" in complete(ip, header + "gene")
    assert header + "invoke" in complete(ip, header + "invo")


def test_nothing_is_offered_outside_an_ndif_body_or_for_unknown_paths(ip, gpt2: Model):
    ip.user_ns["gpt2"] = gpt2
    assert not any("transformer" in c for c in complete(ip, "x = 1\nmodel.trans"))
    for unknown in ("model.transformer.nope.", "model.transformer.h[7]."):
        offered = complete(ip, "%%ndif generate gpt2\n" + unknown)
        assert not any(c.endswith(("output", "mlp", "attn", "ln_1")) for c in offered), offered
    assert not any("transformer" in c for c in complete(ip, "%%ndif frobnicate gpt2\nmodel.trans"))

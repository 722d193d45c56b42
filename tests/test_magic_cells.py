"""`%%ndif` cells in a real IPython shell: both body forms give the engine's values; the namespace gets only results."""

from __future__ import annotations

import pytest
import torch
from conftest import hook_count

from ndif_jupyter import Model, Proxy, TraceError

pytestmark = pytest.mark.kernel

PROMPT = "The Eiffel Tower is in the city of"


def run(ip, cell: str):
    return ip.run_cell(cell, store_history=True)


def test_the_prompt_form_saves_what_the_engine_saves(ip, gpt2: Model):
    ip.user_ns["gpt2"] = gpt2
    result = run(
        ip,
        f'''%%ndif generate gpt2 --max-new-tokens 3 --prompt "{PROMPT}"
hidden = model.transformer.h[-1].output.save()
next()
hidden2 = model.transformer.h[-1].output.save()
''',
    )
    assert result.success
    with gpt2.generate(max_new_tokens=3) as generator:
        with generator.invoke(PROMPT) as invoker:
            hidden = gpt2.transformer.h[-1].output.save()
            invoker.next()
            hidden2 = gpt2.transformer.h[-1].output.save()
    ns = ip.user_ns
    assert isinstance(ns["hidden"], torch.Tensor) and isinstance(ns["hidden2"], torch.Tensor)
    assert torch.equal(ns["hidden"], hidden.value) and torch.equal(ns["hidden2"], hidden2.value)
    assert ns["hidden"].shape == (1, len(gpt2.tokenizer(PROMPT)["input_ids"]), 64)
    assert ns["hidden2"].shape == (1, 1, 64)
    last = ns["_ndif"]
    assert torch.equal(last.output_ids, generator.output)
    assert last.new_tokens == 3
    assert last.prompts == [PROMPT]
    assert last.generated == [gpt2.tokenizer.decode(generator.output[0, -3:], skip_special_tokens=True)]
    assert last.text == [PROMPT + last.generated[0]]
    assert set(last.saved) == {"hidden", "hidden2"} and last.saved["hidden"] is ns["hidden"]
    assert hook_count(gpt2.local_model) == 0


def test_the_invoke_form_moves_values_across_prompts_as_the_engine_does(ip, gpt2: Model):
    ip.user_ns["gpt2"] = gpt2
    result = run(
        ip,
        f'''%%ndif generate gpt2 --max-new-tokens 1
with invoke("{PROMPT}"):
    emb = model.transformer.wte.output
with invoke("The Space Needle is in the city of"):
    model.transformer.wte.output = emb
    out = model.lm_head.output.save()
''',
    )
    assert result.success
    with gpt2.generate(max_new_tokens=1) as generator:
        with generator.invoke(PROMPT):
            emb = gpt2.transformer.wte.output
        with generator.invoke("The Space Needle is in the city of"):
            gpt2.transformer.wte.output = emb
            out = gpt2.lm_head.output.save()
    assert torch.equal(ip.user_ns["out"], out.value)
    assert torch.equal(ip.user_ns["_ndif"].output_ids, generator.output)
    assert isinstance(ip.user_ns["emb"], Proxy), "an unsaved value stays a proxy, whose .value says to save it"
    assert len(ip.user_ns["_ndif"].prompts) == 2


def test_several_prompts_form_one_invoke_and_a_list_of_saves_becomes_tensors(ip, gpt2: Model):
    ip.user_ns["gpt2"] = gpt2
    result = run(
        ip,
        """%%ndif trace gpt2 --prompt "Hello world" --prompt "The quick brown fox jumps"
layers = [layer.output.save() for layer in model.transformer.h]
logits = model.lm_head.output.save()
""",
    )
    assert result.success
    with gpt2.trace(["Hello world", "The quick brown fox jumps"]):
        layers = [layer.output.save() for layer in gpt2.transformer.h]
        logits = gpt2.lm_head.output.save()
    ns = ip.user_ns
    assert isinstance(ns["layers"], list) and len(ns["layers"]) == 4
    for mine, engine in zip(ns["layers"], layers):
        assert isinstance(mine, torch.Tensor) and torch.equal(mine, engine.value)
    assert torch.equal(ns["logits"], logits.value)
    assert ns["logits"].shape[0] == 2
    assert ns["_ndif"].output_ids is None and ns["_ndif"].generated == ["", ""]


def test_bound_names_do_not_leak_and_the_users_own_names_come_back(ip, gpt2: Model):
    mine = object()
    ip.user_ns.update({"gpt2": gpt2, "model": mine, "scale": 2.0})
    result = run(
        ip,
        """%%ndif generate gpt2 --max-new-tokens 2
with invoke("Hello world") as inv:
    doubled = (model.transformer.h[0].output * scale).save()
    next()
    later = model.transformer.h[0].output.save()
items = iter([1, 2])
first = next(items)
""",
    )
    assert result.success
    ns = ip.user_ns
    assert ns["model"] is mine, "the user's own `model` is back after the cell"
    for name in ("invoke", "next", "generator", "tracer", "invoker"):
        assert name not in ns, f"{name} leaked into the namespace"
    assert ns["first"] == 1, "next(iterator) is still Python's next"
    assert ns["later"].shape == (1, 1, 64)
    assert set(ns["_ndif"].saved) == {"doubled", "later"}
    with gpt2.trace("Hello world"):
        plain = gpt2.transformer.h[0].output.save()
    assert torch.equal(ns["doubled"], plain.value * 2.0)


def test_the_namespace_model_is_used_when_the_cell_names_none(ip, gpt2: Model, llama: Model):
    ip.user_ns["model"] = llama
    assert run(
        ip,
        """%%ndif trace --prompt "Hello world"
h = model.model.layers[0].output.save()
""",
    ).success
    with llama.trace("Hello world"):
        h = llama.model.layers[0].output.save()
    assert torch.equal(ip.user_ns["h"], h.value)
    assert ip.user_ns["model"] is llama


def test_a_folder_or_repo_id_builds_the_model_once(ip, gpt2_dir):
    cell = f"""%%ndif trace {gpt2_dir} --prompt "Hello world"
h = model.transformer.h[0].output.save()
"""
    assert run(ip, cell).success
    magics = ip.magics_manager.registry["NDIFMagics"]
    built = magics.models.built[str(gpt2_dir)]
    assert built.local_model is not None
    loaded = built.local_model
    assert run(ip, cell).success
    assert magics.models.built[str(gpt2_dir)] is built and built.local_model is loaded, "weights load once"
    assert "model" not in ip.user_ns


def test_use_sets_the_model_of_later_cells(ip, gpt2: Model, llama: Model, capsys):
    ip.user_ns.update({"gpt2": gpt2, "model": llama})
    ip.run_line_magic("ndif", "use gpt2")
    assert "gpt2" in capsys.readouterr().out
    assert run(
        ip,
        """%%ndif trace --prompt "Hello world"
h = model.transformer.h[0].output.save()
""",
    ).success, "after `%ndif use gpt2` the cell runs on gpt2, not on the namespace's llama `model`"


def test_ndif_models_lists_the_namespace_and_the_checkpoint_cache(
    ip, gpt2: Model, gpt2_dir, capsys, tmp_path, monkeypatch
):
    cache = tmp_path / "checkpoints"
    (cache / "org--cached-model").mkdir(parents=True)
    (cache / "org--cached-model" / "config.json").write_text("{}")
    monkeypatch.setenv("NDIF_CHECKPOINTS", str(cache))
    ip.user_ns["gpt2"] = gpt2
    ip.run_line_magic("ndif", "models")
    out = capsys.readouterr().out
    assert "`model` from the namespace" not in out and "embedded default" in out
    assert "gpt2" in out and "GPT2LMHeadModel" in out and "4 layers" in out and "weights not loaded" in out
    assert "org/cached-model" in out
    ip.run_line_magic("ndif", f"use {gpt2_dir}")
    ip.run_line_magic("ndif", "models")
    out = capsys.readouterr().out
    assert f"{gpt2_dir} (chosen with %ndif use)" in out and f"(built for '{gpt2_dir}')" in out


def test_the_summary_is_displayed_unless_no_display(ip, gpt2: Model, capsys):
    ip.user_ns["gpt2"] = gpt2
    assert run(
        ip,
        """%%ndif generate gpt2 --max-new-tokens 2 --prompt "Hello world"
hidden = model.transformer.h[-1].output.save()
""",
    ).success
    out = capsys.readouterr().out
    assert "generated 2 tokens for 1 prompt" in out
    hidden = ip.user_ns["hidden"]
    assert "hidden" in out and "[1, 2, 64]" in out and "float32" in out
    assert f"norm {hidden.double().norm().item():.4g}" in out
    html = ip.user_ns["_ndif"]._repr_html_()
    assert "<table>" in html and "Hello world" in html
    assert run(
        ip,
        """%%ndif generate gpt2 --max-new-tokens 2 --prompt "Hello world" --no-display
hidden = model.transformer.h[-1].output.save()
""",
    ).success
    assert capsys.readouterr().out == ""


def test_pass_through_generation_options_reach_generate(ip, gpt2: Model):
    ip.user_ns["gpt2"] = gpt2
    cell = (
        '%%ndif generate gpt2 --max-new-tokens 6 --prompt "Hello" --do-sample --top-k 50 --temperature 3.0 --seed 7 '
        "--min-new-tokens 6 --no-display\n"
        "h = model.transformer.h[0].output.save()\n"
    )
    assert run(ip, cell).success
    first = ip.user_ns["_ndif"].output_ids
    assert run(ip, cell).success
    assert torch.equal(ip.user_ns["_ndif"].output_ids, first), "the same seed samples the same tokens"
    assert run(ip, cell.replace("--seed 7", "--seed 8")).success
    assert not torch.equal(ip.user_ns["_ndif"].output_ids, first), "another seed samples other tokens"
    assert first.shape[1] == len(gpt2.tokenizer("Hello")["input_ids"]) + 6


@pytest.mark.parametrize(
    "line, message",
    [
        ("generate gpt2 --max-new-tokens three", "invalid int value"),
        ("generate gpt2 --temprature 0.5", "Did you mean --temperature"),
        ('generate gpt2 --promt "Hello"', "Did you mean --prompt"),
        ("generate gpt2 --max-new-tokens 0", "max_new_tokens=0: it must be an integer of at least 1"),
        ("trace gpt2 --max-new-tokens 3", "--max-new-tokens applies to `%%ndif generate`"),
        ("generate gpt2 --num-beams 2 --num-return-sequences 3", "more than num_beams=2"),
        ("generate gpt2 --server", "server extension"),
        ("generate gpt2 --server --device-map cpu", "either --server or --device-map"),
        ("models", "is a line magic"),
        ("frobnicate", "invalid choice"),
        ('generate gpt2 --prompt "open quote', "quote left open"),
        ("generate /no/such/folder", "Could not find the model"),
    ],
)
def test_a_bad_line_is_a_usage_error_and_runs_nothing(ip, gpt2: Model, capsys, monkeypatch, line, message):
    monkeypatch.delenv("NDIF_SERVER_URL", raising=False)
    ip.user_ns["gpt2"] = gpt2
    result = run(ip, f"%%ndif {line}\nh = model.transformer.h[0].output.save()\n")
    assert not result.success
    assert type(result.error_in_exec).__name__ == "UsageError"
    assert message in str(result.error_in_exec)
    assert "h" not in ip.user_ns and gpt2.local_model is None


def test_line_forms_need_their_arguments(ip):
    from IPython.core.error import UsageError

    with pytest.raises(UsageError, match="needs a cell"):
        ip.run_line_magic("ndif", "generate")
    with pytest.raises(UsageError, match="needs a MODEL"):
        ip.run_line_magic("ndif", "use")


def test_help_shows_the_options(ip):
    doc = ip.find_cell_magic("ndif").__doc__
    for option in ("--max-new-tokens", "--prompt", "--device-map", "--server", "--no-display", "MODEL", "ndif use"):
        assert option in doc


def test_a_misspelled_model_name_suggests_the_namespace_model(ip, gpt2: Model, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    ip.user_ns["gpt2"] = gpt2
    result = run(ip, "%%ndif generate gtp2 --prompt hi\nh = model.transformer.h[0].output.save()\n")
    assert type(result.error_in_exec).__name__ == "UsageError"
    assert "No Model named `gtp2` is in the namespace either (gpt2). Did you mean `gpt2`?" in str(result.error_in_exec)


def test_a_cell_without_an_invoke_says_how_to_give_one(ip, gpt2: Model):
    ip.user_ns["gpt2"] = gpt2
    result = run(ip, "%%ndif generate gpt2\nx = 1\n")
    assert isinstance(result.error_in_exec, TraceError) and "--prompt" in str(result.error_in_exec)
    assert "x" not in ip.user_ns


@pytest.mark.parametrize(
    "line, passthrough",
    [
        ("generate --min-new-tokens 2 --output-attentions", {"min_new_tokens": 2, "output_attentions": True}),
        ("generate --no-repeat-ngram-size=3 --eos-token-id [1,2]", {"no_repeat_ngram_size": 3, "eos_token_id": [1, 2]}),
        ("generate --use-cache false --stop-strings 'in the'", {"use_cache": False, "stop_strings": "in the"}),
        ("generate --do-sample --top-k 5 --temperature 0.5", {"do_sample": True, "top_k": 5, "temperature": 0.5}),
        ("trace m --output-hidden-states true", {"output_hidden_states": True}),
    ],
)
def test_pass_through_options_parse_to_values(ip, line, passthrough):
    from ndif_jupyter.magics.arguments import parse_line

    options = parse_line(ip.find_cell_magic("ndif"), line)
    assert options.passthrough == passthrough


def test_an_empty_prompt_is_a_usage_error_about_the_line(ip, gpt2: Model):
    ip.user_ns["gpt2"] = gpt2
    result = run(ip, "%%ndif trace gpt2 --prompt ''\nh = model.transformer.h[0].output.save()\n")
    assert type(result.error_in_exec).__name__ == "UsageError"
    assert "A prompt is empty" in str(result.error_in_exec) and "Recorded at" not in str(result.error_in_exec)


def test_ndif_models_says_when_the_server_cannot_be_listed(ip, capsys, monkeypatch):
    from ndif_testing.jupyter_process import free_port

    monkeypatch.setenv("NDIF_SERVER_URL", f"http://127.0.0.1:{free_port()}/ndif/api/")
    ip.run_line_magic("ndif", "models")
    out = capsys.readouterr().out
    assert "The Jupyter server's models (for --server) cannot be listed" in out and "cannot be reached" in out


def test_a_cell_loops_over_the_steps_and_takes_gradients(ip, gpt2: Model):
    ip.user_ns["gpt2"] = gpt2
    steered = run(
        ip,
        f'''%%ndif generate gpt2 --max-new-tokens 4 --prompt "{PROMPT}"
hiddens = []
for step in generator.steps:
    model.transformer.h[1].output[:, -1] += 1.0
    hiddens.append(model.transformer.h[-1].output.save())
''',
    )
    assert steered.success
    with gpt2.generate(max_new_tokens=4) as generator:
        with generator.invoke(PROMPT) as invoker:
            expected = []
            for step in range(4):
                if step:
                    invoker.next()
                gpt2.transformer.h[1].output[:, -1] += 1.0
                expected.append(gpt2.transformer.h[-1].output.save())
    assert all(torch.equal(a, b.value) for a, b in zip(ip.user_ns["hiddens"], expected))
    traced = run(
        ip,
        f'''%%ndif trace gpt2 --prompt "{PROMPT}"
first = model.transformer.h[0].output
loss = model.lm_head.output[0, -1].log_softmax(-1)[3]
with loss.backward():
    grad = first.grad.save()
''',
    )
    assert traced.success
    assert ip.user_ns["grad"].shape == (1, len(gpt2.tokenizer(PROMPT)["input_ids"]), 64)
    assert ip.user_ns["grad"].abs().sum() > 0


def test_a_cell_decides_at_run_time_and_logs(ip, gpt2: Model, capsys):
    ip.user_ns["gpt2"] = gpt2
    result = run(
        ip,
        f'''%%ndif trace gpt2 --prompt "{PROMPT}"
norm = model.transformer.h[0].output.norm()
with tracer.cond(norm > 1e9):
    model.transformer.h[1].output[:] = 0
top = model.lm_head.output[0, -1].argmax().item().save()
tracer.log("top token", top)
''',
    )
    assert result.success
    with gpt2.trace(PROMPT):
        expected = gpt2.lm_head.output[0, -1].argmax().save()
    assert ip.user_ns["top"] == expected.value.item(), "the false condition changed nothing"
    assert f"top token {expected.value.item()}" in capsys.readouterr().out

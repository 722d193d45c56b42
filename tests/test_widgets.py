"""The activation browser's view state (what its front end receives) against values computed directly with torch."""

from __future__ import annotations

import base64
import io
import json

import numpy as np
import pytest
import torch
from IPython.utils.capture import capture_output

from ndif_jupyter import Model, NDIFError, browse
from ndif_jupyter.widgets import ActivationBrowser
from ndif_jupyter.widgets.views import Bounds
from ndif_testing.reference import capture, load

PROMPTS = ["The Eiffel Tower is in the city of", "Rome is"]
WIDGET_MIME = "application/vnd.jupyter.widget-view+json"


def run(ip, cell: str):
    result = ip.run_cell(cell, store_history=True)
    assert result.success, result.error_in_exec
    return ip.user_ns["_ndif"]


def reference_states(folder, prompt: str) -> tuple[torch.nn.Module, list[int], torch.Tensor]:
    """Every layer's output for one prompt run alone, by plain forward hooks: [layers, tokens, width]."""
    model = load(folder)
    ids = Model(str(folder)).tokenizer(prompt)["input_ids"]
    paths = [f"model.layers.{index}" for index in range(model.config.num_hidden_layers)]
    with capture(model, paths) as seen, torch.no_grad():
        model(torch.tensor([ids]))
    return model, ids, torch.stack([seen[path][0][0] for path in paths])


def grid_of(browser: ActivationBrowser) -> torch.Tensor:
    grid = browser.get_state()["grid"]
    return torch.tensor(grid["values"], dtype=torch.float32).reshape(grid["rows"], grid["cols"])


@pytest.fixture
def llama_cell(ip, llama_dir):
    llama = Model(str(llama_dir))
    ip.user_ns["llama"] = llama
    result = run(
        ip,
        f"""%%ndif trace llama --no-display
with invoke({PROMPTS[0]!r}):
    first = [layer.output.save() for layer in model.model.layers]
with invoke({PROMPTS[1]!r}):
    second = [layer.output.save() for layer in model.model.layers]
""",
    )
    return llama, result


@pytest.mark.kernel
def test_the_heatmap_is_each_layers_norm_at_each_token_of_the_prompt(llama_cell, llama_dir):
    llama, result = llama_cell
    browser = result.browse()
    state = browser.get_state()
    assert state["views"] == ["overview", "heatmap", "lens", "strip"]
    assert state["view"] == "heatmap"
    assert [stack["label"] for stack in state["stacks"]] == ["model.layers.*.output"] * 2
    _, ids, states = reference_states(llama_dir, PROMPTS[0])
    assert state["tokens"] == [llama.tokenizer.decode([token]) for token in ids]
    assert state["layer_labels"] == ["0", "1", "2", "3"]
    assert torch.allclose(grid_of(browser), states.norm(dim=-1), atol=1e-5)
    assert state["grid"]["min"] == pytest.approx(states.norm(dim=-1).min().item(), abs=1e-5)

    browser.reduction, browser.neuron = "neuron", 7
    assert torch.allclose(grid_of(browser), states[..., 7], atol=1e-5)
    assert browser.grid["diverging"] and browser.grid["min"] == -browser.grid["max"]
    browser.reduction, browser.reference = "cosine", 2
    expected = torch.nn.functional.cosine_similarity(states, states[:, 2:3], dim=-1)
    assert torch.allclose(grid_of(browser), expected, atol=1e-5)
    browser.reduction = "mean"
    assert torch.allclose(grid_of(browser), states.mean(-1), atol=1e-5)

    browser.strip_layer = 2
    assert torch.allclose(torch.tensor(browser.strip["values"]), states[2].mean(-1), atol=1e-5)
    assert browser.strip["label"] == "layer 2: mean over the width"

    probe = torch.randn(64)
    browser.set_direction(probe, label="probe")
    assert browser.reduction == "direction" and "direction" in browser.get_state()["reductions"]
    assert torch.allclose(grid_of(browser), states @ (probe / probe.norm()), atol=1e-5)
    assert browser.strip["label"] == "layer 2: projection on probe"
    with pytest.raises(NDIFError, match="needs 64 elements"):
        browser.set_direction(torch.randn(10))
    browser.reduction = "mean"

    browser.stack = 1
    _, ids, states = reference_states(llama_dir, PROMPTS[1])
    assert browser.tokens == [llama.tokenizer.decode([token]) for token in ids]
    assert torch.allclose(grid_of(browser), states.mean(-1), atol=1e-5)


@pytest.mark.kernel
def test_the_overview_lists_every_saved_value_with_its_module_and_statistics(llama_cell):
    _, result = llama_cell
    overview = result.browse().overview
    assert [row["name"] for row in overview] == [f"first[{i}]" for i in range(4)] + [f"second[{i}]" for i in range(4)]
    row = overview[1]
    value = result.saved["first"][1]
    assert row["module"] == "model.model.layers[1].output"
    assert (row["step"], row["invoke"], row["shape"], row["dtype"]) == (0, 0, list(value.shape), "float32")
    assert row["norm"] == pytest.approx(value.double().norm().item())
    assert row["std"] == pytest.approx(value.double().std().item())
    assert overview[5]["invoke"] == 1


@pytest.mark.kernel
def test_the_logit_lens_is_the_top_k_of_the_final_norm_and_unembedding_of_each_layer(llama_cell, llama_dir):
    llama, result = llama_cell
    browser = result.browse(view="lens")
    reference, ids, states = reference_states(llama_dir, PROMPTS[0])
    with torch.no_grad():
        probs = reference.lm_head(reference.model.norm(states)).float().softmax(-1)
        logits = reference(torch.tensor([ids])).logits[0]
    top = probs.topk(10, dim=-1)
    lens = browser.get_state()["lens"]
    assert lens["status"] == "ready" and (lens["rows"], lens["cols"]) == (4, len(ids))
    assert lens["top_tokens"] == [llama.tokenizer.decode([token]) for token in top.indices[..., 0].reshape(-1).tolist()]
    assert torch.allclose(torch.tensor(lens["top_probs"]), top.values[..., 0].reshape(-1), atol=1e-5)
    last_layer = top.indices[-1, :, 0]
    assert torch.equal(last_layer, logits.argmax(-1)), "the lens of the last layer is the model's own prediction"

    browser.selected = [1, 3]
    cell = browser.get_state()["lens_cell"]
    assert (cell["layer"], cell["token"]) == (1, 3)
    assert [entry["token"] for entry in cell["top"]] == [
        llama.tokenizer.decode([t]) for t in top.indices[1, 3].tolist()
    ]
    assert torch.allclose(torch.tensor([entry["prob"] for entry in cell["top"]]), top.values[1, 3], atol=1e-5)


def generated_steps(ip, gpt2_dir, saved: str):
    """A 3-token generation of the tiny GPT-2 that appends `saved` to `steps` at each step; the model and result."""
    gpt2 = Model(str(gpt2_dir))
    ip.user_ns["gpt2"] = gpt2
    cell = f"""%%ndif generate gpt2 --max-new-tokens 3 --prompt {PROMPTS[1]!r} --no-display
steps = []
for step in range(3):
    steps.append({saved})
    if step < 2:
        next()
"""
    return gpt2, run(ip, cell)


@pytest.mark.kernel
def test_the_step_slider_shows_the_values_saved_after_each_next(ip, gpt2_dir):
    gpt2, result = generated_steps(ip, gpt2_dir, "[block.output.save() for block in model.transformer.h]")
    browser = result.browse()
    assert browser.stacks == [
        {"label": "transformer.h.*.output", "layers": 4, "steps": [0, 1, 2, -1], "rows": 1, "width": 64}
    ]
    prompt_ids = gpt2.tokenizer(PROMPTS[1])["input_ids"]
    output = result.output_ids[0].tolist()
    assert browser.step == -1, "a generation opens on all its steps joined"
    joined = torch.cat([torch.stack([layer[0] for layer in result.saved["steps"][step]]) for step in range(3)], dim=1)
    assert torch.allclose(grid_of(browser), joined.norm(dim=-1), atol=1e-6)
    assert browser.tokens == [gpt2.tokenizer.decode([token]) for token in output[: len(prompt_ids) + 2]]
    browser.step = 0
    assert browser.tokens == [gpt2.tokenizer.decode([token]) for token in prompt_ids]
    for step in (1, 2):
        browser.step = step
        expected = torch.stack([layer[0] for layer in result.saved["steps"][step]]).norm(dim=-1)
        assert torch.allclose(grid_of(browser), expected, atol=1e-6)
        assert browser.tokens == [gpt2.tokenizer.decode([output[len(prompt_ids) + step - 1]])]
        assert browser.window == {"start": 0, "count": 1, "total": 1}
    browser.step, browser.view = -1, "lens"
    assert (browser.lens["rows"], browser.lens["cols"]) == (4, len(prompt_ids) + 2)


@pytest.mark.kernel
def test_one_layer_saved_at_every_step_gets_the_steps_view(ip, gpt2_dir):
    _, result = generated_steps(ip, gpt2_dir, "model.transformer.h[2].output.save()")
    browser = result.browse()
    assert browser.stacks == [
        {"label": "transformer.h.*.output", "layers": 1, "steps": [0, 1, 2, -1], "rows": 1, "width": 64}
    ]
    assert "heatmap" in browser.views and "strip" in browser.views
    joined = torch.cat([result.saved["steps"][step][0] for step in range(3)], dim=0)
    assert browser.step == -1 and torch.allclose(grid_of(browser), joined.norm(dim=-1).unsqueeze(0), atol=1e-6)
    assert [absent["view"] for absent in browser.absent_views] == ["attention"]


def test_a_browser_says_how_to_get_the_views_its_values_lack():
    alone = browse({"hidden": torch.randn(1, 4, 8)})
    assert alone.views == ["overview"]
    hints = {absent["view"]: absent["how"] for absent in alone.absent_views}
    assert set(hints) == {"heatmap", "attention"}
    assert "next()" in hints["heatmap"] and 'attn_implementation="eager"' in hints["attention"]
    data, _ = alone._repr_mimebundle_()
    assert "no attention view: save attention weights" in data["text/plain"]
    layers = browse({"hidden": [torch.randn(1, 4, 8) for _ in range(3)]})
    assert [absent["view"] for absent in layers.absent_views] == ["lens", "attention"]
    assert "model=model" in layers.absent_views[0]["how"]


@pytest.mark.kernel
def test_a_padded_row_marks_its_padding(ip, gpt2_dir):
    gpt2 = Model(str(gpt2_dir))
    ip.user_ns["gpt2"] = gpt2
    result = run(
        ip,
        f"""%%ndif trace gpt2 --no-display
with invoke({PROMPTS!r}):
    hidden = [block.output.save() for block in model.transformer.h]
""",
    )
    browser = result.browse()
    long, short = (gpt2.tokenizer(prompt)["input_ids"] for prompt in PROMPTS)
    browser.row = 1
    assert browser.tokens == ["<pad>"] * (len(long) - len(short)) + [gpt2.tokenizer.decode([t]) for t in short]
    expected = torch.stack([layer[1] for layer in result.saved["hidden"]]).norm(dim=-1)
    assert torch.allclose(grid_of(browser), expected, atol=1e-6)


@pytest.mark.kernel
def test_attention_heads_show_the_saved_patterns_with_tokens_on_both_axes(ip, llama_dir):
    llama = Model(str(llama_dir), attn_implementation="eager")
    ip.user_ns["llama"] = llama
    result = run(
        ip,
        f"""%%ndif trace llama --output-attentions true --prompt {PROMPTS[0]!r} --no-display
pattern = model.model.layers[1].self_attn.output[1].save()
""",
    )
    browser = result.browse()
    assert browser.views == ["overview", "attention"]
    assert browser.attention_sources == [{"label": "model.layers.1.self_attn.output[1]", "heads": 4}]
    state = browser.get_state()["attention"]
    saved = result.saved["pattern"][0]
    ids = llama.tokenizer(PROMPTS[0])["input_ids"]
    assert (state["heads"], state["q"], state["k"]) == (4, len(ids), len(ids))
    assert state["query_tokens"] == state["key_tokens"] == [llama.tokenizer.decode([t]) for t in ids]
    for head in range(4):
        assert torch.allclose(torch.tensor(state["patterns"][head]).reshape(len(ids), len(ids)), saved[head])


def test_a_long_run_sends_a_bounded_window_of_every_view():
    """30 layers x 512 tokens x width 576 (35 MB of states): the state sent stays small, windows move over it."""
    torch.manual_seed(0)
    layers = [torch.randn(1, 512, 576) for _ in range(30)]
    pattern = torch.softmax(torch.randn(1, 9, 512, 512), dim=-1)
    browser = browse({"hidden": layers, "pattern": pattern}, bounds=Bounds())
    sent = len(json.dumps(browser.get_state()))
    assert sent < 1_000_000, sent
    grid = browser.grid
    assert grid["rows"] * grid["cols"] <= Bounds().cells
    assert browser.window == {"start": 0, "count": 256, "total": 512}
    assert sum(len(pattern) for pattern in browser.attention["patterns"]) <= Bounds().attention
    stacked = torch.stack([layer[0] for layer in layers])
    browser.token_start = 300
    assert browser.window == {"start": 256, "count": 256, "total": 512}
    assert torch.allclose(grid_of(browser), stacked[:, 256:].norm(dim=-1), atol=1e-4)
    assert browser.tokens == [str(index) for index in range(256, 512)]
    assert len(json.dumps(browser.get_state())) < 1_000_000


@pytest.mark.kernel
def test_the_static_fallback_carries_a_picture_and_text_of_every_view(llama_cell):
    from matplotlib.image import imread

    _, result = llama_cell
    browser = result.browse()
    shape = list(result.saved["first"][3].shape)
    for view in browser.views:
        browser.view = view
        data, _ = browser._repr_mimebundle_()
        assert WIDGET_MIME in data
        picture = imread(io.BytesIO(base64.b64decode(data["image/png"])), format="png")
        assert picture.shape[0] > 50 and picture.shape[1] > 100, view
        assert picture[..., :3].std() > 0.05, f"the {view} picture is blank"
        assert f"first[3]: {shape} float32 at model.model.layers[3].output" in data["text/plain"]
    assert browser.lens["status"] == "ready", "the lens picture draws the computed lens"


@pytest.mark.kernel
def test_a_cell_shows_the_browser_of_its_saved_values_by_default(ip, gpt2_dir):
    ip.user_ns["gpt2"] = Model(str(gpt2_dir))
    with capture_output() as shown:
        result = ip.run_cell(f"""%%ndif trace gpt2 --prompt {PROMPTS[0]!r}
hidden = [block.output.save() for block in model.transformer.h]
""")
    assert result.success
    (output,) = shown.outputs
    assert WIDGET_MIME in output.data and "image/png" in output.data
    shape = list(ip.user_ns["hidden"][0].shape)
    assert f"hidden[0]: {shape} float32 at model.transformer.h[0].output" in output.data["text/plain"]

    with capture_output() as shown:
        assert ip.run_cell(f"%%ndif trace gpt2 --prompt {PROMPTS[0]!r}\nx = 1").success
    (output,) = shown.outputs
    assert WIDGET_MIME not in output.data and "saved: nothing" in output.data["text/plain"]


def test_a_block_that_ran_can_be_browsed_with_its_modules_as_names(gpt2_dir):
    gpt2 = Model(str(gpt2_dir))
    with gpt2.generate(max_new_tokens=2) as generator:
        with generator.invoke(PROMPTS[0]) as invoker:
            hidden = [block.output.save() for block in gpt2.transformer.h]
            invoker.next()
            later = gpt2.transformer.h[0].output.save()
    browser = browse(generator)
    names = [row["name"] for row in browser.overview]
    assert names[0] == "model.transformer.h[0].output step 0" and names[-1] == "model.transformer.h[0].output step 1"
    assert torch.allclose(grid_of(browser), torch.stack([h.value[0] for h in hidden]).norm(dim=-1))
    assert later.value is not None


def test_browsing_nothing_or_an_unrun_block_says_what_to_do(gpt2_dir):
    with pytest.raises(NDIFError, match="no saved tensors"):
        browse({})
    with pytest.raises(NDIFError, match="no 'lens' view; they have overview"):
        browse({"x": torch.ones(3)}, view="lens")
    gpt2 = Model(str(gpt2_dir))
    block = gpt2.trace()
    with pytest.raises(NDIFError, match="has not run"):
        browse(block)


@pytest.mark.kernel
def test_the_lens_covers_a_bounded_part_of_the_window_and_moves_with_it(ip, llama_dir):
    llama = Model(str(llama_dir))
    ip.user_ns["llama"] = llama
    prompt = "the quick brown fox jumps over the lazy dog " * 3
    result = run(
        ip,
        f"""%%ndif trace llama --prompt {prompt!r} --no-display
hidden = [layer.output.save() for layer in model.model.layers]
""",
    )
    browser = browse(result, view="lens", bounds=Bounds(tokens=12, lens_tokens=8))
    reference, ids, states = reference_states(llama_dir, prompt)
    assert len(ids) > 20
    with torch.no_grad():
        top = reference.lm_head(reference.model.norm(states)).float().softmax(-1).topk(10, dim=-1)
    for start in (0, 8):
        browser.token_start = start
        lens = browser.lens
        assert browser.window == {"start": start, "count": 12, "total": len(ids)}
        assert (lens["rows"], lens["cols"]) == (4, 8)
        expected = top.values[:, start : start + 8, 0].reshape(-1)
        assert torch.allclose(torch.tensor(lens["top_probs"]), expected, atol=1e-5)
    browser.selected = [2, 10]
    assert browser.lens_cell["token"] == 10
    assert torch.allclose(
        torch.tensor([entry["prob"] for entry in browser.lens_cell["top"]]), top.values[2, 10], atol=1e-5
    )


def test_a_few_extreme_values_do_not_flatten_the_colour_scale():
    """Many models give the first token a huge norm; the scale stops short of it, the values stay true."""
    torch.manual_seed(0)
    layers = [torch.randn(1, 12, 32) for _ in range(6)]
    for layer in layers[2:]:
        layer[0, 0] *= 1000
    browser = browse({"hidden": layers})
    norms = torch.stack([layer[0] for layer in layers]).norm(dim=-1)
    assert torch.allclose(grid_of(browser), norms, atol=1e-3)
    assert browser.grid["max"] < norms[2:, 0].min().item() / 10
    assert browser.grid["min"] == pytest.approx(norms.min().item())


def outlier_layers(tokens: int) -> list[torch.Tensor]:
    """Six layers of random states whose first token, from layer 2 on, is a thousand times larger."""
    torch.manual_seed(0)
    layers = [torch.randn(1, tokens, 32) for _ in range(6)]
    for layer in layers[2:]:
        layer[0, 0] *= 1000
    return layers


def test_values_beyond_the_colour_scale_are_counted_for_the_heatmap_and_a_short_strip():
    """A 5-token strip gets the same robust range as the heatmap; both say how many values lie beyond and how far."""
    layers = outlier_layers(5)
    browser = browse({"hidden": layers})
    norms = torch.stack([layer[0] for layer in layers]).norm(dim=-1)
    grid = browser.grid
    assert grid["above"] == 4 and grid["below"] == 0, "layers 2-5 of token 0 are above the scale"
    assert grid["max"] < norms[2:, 0].min().item() / 10
    assert grid["data_max"] == pytest.approx(norms.max().item())
    above = torch.tensor([value > grid["max"] for value in grid["values"]]).reshape(6, 5)
    assert above.nonzero().tolist() == [[2, 0], [3, 0], [4, 0], [5, 0]]
    strip = browser.strip
    assert strip["layer"] == 5 and strip["above"] == 1
    assert strip["max"] < norms[5, 0].item() / 10 and strip["max"] >= norms[5, 1:].max().item()
    assert strip["data_max"] == pytest.approx(norms[5, 0].item())


def test_a_log_scale_spans_every_value_and_leaving_out_token_0_ranges_the_rest():
    layers = outlier_layers(5)
    norms = torch.stack([layer[0] for layer in layers]).norm(dim=-1)
    browser = browse({"hidden": layers})
    linear_values = browser.grid["values"]
    browser.scale = "log"
    grid = browser.grid
    assert grid["scale"] == "log" and grid["above"] == 0 and grid["below"] == 0
    assert (grid["min"], grid["max"]) == (pytest.approx(norms.min().item()), pytest.approx(norms.max().item()))
    assert grid["values"] == linear_values, "the scale changes colours, never values"

    browser.scale = "linear"
    browser.leave_out_first = True
    grid = browser.grid
    assert grid["left_out_first"] and grid["max"] == pytest.approx(norms[:, 1:].max().item())
    assert grid["above"] == (norms[:, 0] > norms[:, 1:].max()).sum().item()
    windowed = browse({"hidden": layers}, bounds=Bounds(tokens=3))
    windowed.leave_out_first = True
    assert windowed.grid["left_out_first"]
    windowed.token_start = 1
    assert windowed.window["start"] == 1 and not windowed.grid["left_out_first"], "no token 0 to leave out"


def test_a_diverging_reduction_keeps_a_linear_scale_around_zero():
    browser = browse({"hidden": outlier_layers(5)})
    browser.scale = "log"
    browser.reduction = "mean"
    assert browser.grid["scale"] == "linear" and browser.grid["min"] == -browser.grid["max"]


def test_the_static_picture_marks_cells_beyond_the_scale_with_the_front_ends_corner():
    from ndif_jupyter.widgets.static import cell_raster, outside_text

    values = np.array([[1.0, 2.0], [3.0, 50.0]])
    raster = cell_raster(values, "viridis", 1.0, 3.0, 10, 8, flip=False, mark_outside=True)
    plain = cell_raster(values, "viridis", 1.0, 3.0, 10, 8, flip=False)
    changed = np.argwhere((raster != plain).any(axis=-1))
    assert changed.size and changed[:, 0].min() >= 8 and changed[:, 1].min() >= 10, "only the cell of 50 is marked"
    assert (raster[8, 19] == (255, 255, 255, 255)).all() and (raster[15, 10] == plain[15, 10]).all()
    below = cell_raster(values, "viridis", 2.0, 60.0, 10, 8, flip=False, mark_outside=True)
    assert (below[7, 0] == (255, 255, 255, 255)).all(), "the value below gets the bottom left corner"
    text = outside_text({"min": 1.0, "max": 3.0, "above": 1, "data_max": 50.0, "below": 0})
    assert text == "◥ 1 value above 3, up to 50"


def test_a_clicked_heatmap_cell_details_its_value_norm_and_largest_neurons():
    layers = outlier_layers(5)
    browser = browse({"hidden": layers}, view="heatmap")
    assert browser.cell_detail == {}
    browser.selected = [3, 2]
    detail = browser.cell_detail
    state = layers[3][0, 2]
    assert (detail["layer"], detail["token"]) == (3, 2)
    norm = state.norm().item()
    assert detail["value"] == pytest.approx(norm) and detail["norm"] == pytest.approx(norm)
    expected = state.abs().topk(8).indices.tolist()
    assert [neuron["index"] for neuron in detail["neurons"]] == expected
    assert [neuron["value"] for neuron in detail["neurons"]] == pytest.approx(state[expected].tolist())
    assert "lens" not in detail, "plain tensors without a model have no lens"
    browser.reduction, browser.neuron = "neuron", expected[0]
    assert browser.cell_detail["value"] == pytest.approx(state[expected[0]].item())
    browser.reduction, browser.reference = "cosine", 4
    cosine = torch.nn.functional.cosine_similarity(state, layers[3][0, 4], dim=0).item()
    assert browser.cell_detail["value"] == pytest.approx(cosine, abs=1e-6), "the cell's value as the heatmap shows it"
    browser.view = "overview"
    assert browser.cell_detail == {}


@pytest.mark.kernel
def test_a_clicked_cell_of_a_run_also_gives_the_lens_top_tokens(llama_cell):
    _, result = llama_cell
    browser = result.browse()
    browser.view = "heatmap"
    browser.selected = [1, 4]
    lens = browser.cell_detail["lens"]
    browser.view = "lens"
    assert lens == browser.lens_cell["top"][:5]

"""The activation browser's front end in a real browser: JupyterLab runs a `%%ndif` cell, chromium shows the widget.

Needs Debian's chromium and the Playwright package of `tests/browser` (`npm ci --prefix tests/browser`). Without them
the test is skipped, unless NDIF_REQUIRE_BROWSER=1 (set by `.ci/run`), which makes their absence a failure.
"""

from __future__ import annotations

from pathlib import Path

import nbformat
import pytest
import torch
from conftest import browser_script
from nbformat.v4 import new_code_cell, new_notebook

from ndif_jupyter import Model, browse
from ndif_testing.jupyter_process import JupyterLabProcess
from ndif_testing.reference import capture, load

pytestmark = [pytest.mark.browser, pytest.mark.server, pytest.mark.kernel, pytest.mark.slow]

PROMPT = "The Eiffel Tower is in the city of"


def _shown(token: str) -> str:
    """A token as the front end writes it in a cell: a leading space, newlines and tabs made visible."""
    if token and token.strip(" ") == "":
        return "␣" * len(token)
    if token.startswith(" "):
        token = "·" + token[1:]
    return token.replace("\r\n", "⏎").replace("\n", "⏎").replace("\t", "⇥")


def expected_picture() -> str:
    """The fourth cell's picture once the browser test has left it: the strip, its range without token 0."""
    torch.manual_seed(0)
    layers = [torch.randn(1, 5, 32) for _ in range(6)]
    for layer in layers[2:]:
        layer[0, 0] *= 1000
    browser = browse({"hidden": layers}, view="strip")
    browser.leave_out_first = True
    return browser._repr_mimebundle_()[0]["image/png"]


def test_jupyterlab_shows_the_heatmap_and_the_logit_lens_of_a_cell(browser_parts, llama_dir, test_output):
    model = Model(str(llama_dir))
    ids = model.tokenizer(PROMPT)["input_ids"]
    layers = model.config.num_hidden_layers
    reference = load(llama_dir)
    paths = [f"model.layers.{index}" for index in range(layers)]
    with capture(reference, paths) as seen, torch.no_grad():
        reference(torch.tensor([ids]))
        last = reference.lm_head(reference.model.norm(seen[paths[-1]][0][0])).argmax(-1)
    expected_top = [_shown(model.tokenizer.decode([token])) for token in last.tolist()]

    with JupyterLabProcess({}) as lab:
        notebook = new_notebook(
            cells=[
                new_code_cell(
                    f"%load_ext ndif_jupyter\nfrom ndif_jupyter import Model\nmodel = Model({str(llama_dir)!r})"
                ),
                new_code_cell(
                    f"%%ndif trace model --prompt {PROMPT!r}\n"
                    "hidden = [layer.output.save() for layer in model.model.layers]"
                ),
                new_code_cell(
                    f"%%ndif generate model --max-new-tokens 3 --prompt {PROMPT!r}\n"
                    "steps = []\n"
                    "for step in range(3):\n"
                    "    steps.append([layer.output.save() for layer in model.model.layers])\n"
                    "    if step < 2:\n"
                    "        next()"
                ),
                new_code_cell(
                    "import torch\n"
                    "torch.manual_seed(0)\n"
                    "layers = [torch.randn(1, 5, 32) for _ in range(6)]\n"
                    "for layer in layers[2:]:\n"
                    "    layer[0, 0] *= 1000\n"
                    "browse({'hidden': layers}, view='strip')"
                ),
                new_code_cell(f"eager = Model({str(llama_dir)!r}, attn_implementation='eager')"),
                new_code_cell(
                    f"%%ndif trace eager --prompt {PROMPT!r}\n"
                    "weights = [layer.self_attn.output[1].save() for layer in model.model.layers]"
                ),
            ],
            metadata={"kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"}},
        )
        nbformat.write(notebook, lab.folder / "browse.ipynb")
        seen = browser_script("notebook_widget.mjs", lab, "browse.ipynb", str(test_output))
        saved = nbformat.read(lab.folder / "browse.ipynb", as_version=4)

    assert (seen["heatmap"]["rows"], seen["heatmap"]["cols"]) == (layers, len(ids))
    assert seen["heatmap"]["box"]["width"] > 100 and seen["heatmap"]["box"]["height"] > 40
    assert seen["lens"]["cells"] == layers * len(ids)
    assert seen["lens"]["lastLayerTokens"] == expected_top
    assert seen["lens"]["clicked"] == [0, len(ids) - 1]
    assert len(seen["lens"]["topk"]) == 10
    assert seen["lens"]["probabilities"] == layers * len(ids), "probabilities in the cells on request"
    assert "shading: probability of the top token" in seen["lens"]["legend"]
    keys = seen["keys"]
    assert keys["neuronApplied"] and keys["legendBefore"] != keys["legendAfter"], "Enter applies a typed neuron"
    assert keys["stepLabels"] == ["all steps", "step 2", "all steps"], "arrow keys move the step slider"
    assert keys["colsPerStep"] == [len(ids) + 2, 1, len(ids) + 2], "and the heatmap follows the step"
    assert keys["cellsSelected"] == keys["cellsSelectedBefore"], "the notebook's cell selection did not move"
    colours = seen["colours"]
    detail = colours["detail"]
    assert detail["caption"].startswith("layer 5 · token '0' (index 0) · value 7252") and detail["neurons"] == 8
    assert (detail["reduction"], detail["neuron"]) == ("neuron", detail["first"]), "a neuron's button selects it"
    assert colours["heatmapAbove"] == "4" and colours["heatmapLegend"]["above"] == "4", "token 0 of layers 2-5"
    assert "◥ 4 values above" in colours["heatmapLegend"]["text"]
    assert colours["stripOutside"] == [0] and "◥ 1 value above" in colours["stripLegend"]["text"]
    assert colours["logLegend"]["scale"] == "log" and colours["logLegend"]["above"] == "0"
    assert "range without token 0" in colours["withoutFirstLegend"]["text"]
    assert colours["heatmapBox"]["width"] >= 400, "five tokens' cells fill the width"
    assert colours["flatLabels"] == 1 and not colours["chartScrolls"], "labels lie flat, no scroller of its own"
    pictures = [output for output in saved.cells[3].outputs if "image/png" in output.get("data", {})]
    assert len(pictures) == 1, "the browser's output holds one picture, updated in place"
    assert pictures[0]["data"]["image/png"] == expected_picture(), "the picture of the view the user left"
    shown = seen["attention"]
    assert sum(shown["maskedLight"]) > 700 and sum(shown["maskedDark"]) < 120, "a zero weight: white, then dark"
    assert shown["rowShaded"] and shown["elsewhereSame"], "hovering shades the query's row and the key's column"
    assert shown["readout"].startswith("query ")
    assert seen["saved"]["pictures"] == 4, "reopened without the kernel, each browser shows its picture"
    assert seen["saved"]["missingWidgets"] == 0 and seen["saved"]["dirty"] == 0
    assert not [error for error in seen["consoleErrors"] if "ndif" in error or "browser.js" in error]
    for screenshot in seen["screenshots"]:
        assert Path(screenshot).stat().st_size > 5000, screenshot

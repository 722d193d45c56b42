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

from ndif_jupyter import Model
from ndif_testing.jupyter_process import JupyterLabProcess
from ndif_testing.reference import capture, load

pytestmark = [pytest.mark.browser, pytest.mark.server, pytest.mark.kernel, pytest.mark.slow]

PROMPT = "The Eiffel Tower is in the city of"


def _shown(token: str) -> str:
    """A token as the front end writes it in a cell: a leading space, newlines and tabs made visible."""
    if token.startswith(" "):
        token = "␣" + token[1:]
    return token.replace("\r\n", "⏎").replace("\n", "⏎").replace("\t", "⇥")


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
            ],
            metadata={"kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"}},
        )
        nbformat.write(notebook, lab.folder / "browse.ipynb")
        seen = browser_script("notebook_widget.mjs", lab, "browse.ipynb", str(test_output))

    assert (seen["heatmap"]["rows"], seen["heatmap"]["cols"]) == (layers, len(ids))
    assert seen["heatmap"]["box"]["width"] > 100 and seen["heatmap"]["box"]["height"] > 40
    assert seen["lens"]["cells"] == layers * len(ids)
    assert seen["lens"]["lastLayerTokens"] == expected_top
    assert seen["lens"]["clicked"] == [0, len(ids) - 1]
    assert len(seen["lens"]["topk"]) == 10
    keys = seen["keys"]
    assert keys["neuronApplied"] and keys["legendBefore"] != keys["legendAfter"], "Enter applies a typed neuron"
    assert keys["stepLabels"] == ["all steps", "step 2", "all steps"], "arrow keys move the step slider"
    assert keys["colsPerStep"] == [len(ids) + 2, 1, len(ids) + 2], "and the heatmap follows the step"
    assert keys["cellsSelected"] == keys["cellsSelectedBefore"], "the notebook's cell selection did not move"
    assert not [error for error in seen["consoleErrors"] if "ndif" in error or "browser.js" in error]
    for screenshot in seen["screenshots"]:
        assert Path(screenshot).stat().st_size > 5000, screenshot

"""The JupyterLab extension in a real JupyterLab and Debian's chromium, installed from this package.

A notebook runs a `%%ndif generate --server` cell on a tiny model served by the server extension; the activation
browser renders; the NDIF sidebar shows the model's module tree; clicking a module inserts its path at the cursor of
the active cell; the job is listed as done; and "New NDIF notebook" opens a notebook with the sample cells. The
TypeScript's own unit tests (vitest) run here too.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest
from conftest import browser_script
from nbformat.v4 import new_code_cell, new_notebook

from ndif_testing.jupyter_process import JupyterLabProcess

LABEXTENSION = Path(__file__).resolve().parent.parent / "labextension"
PROMPT = "The Eiffel Tower is in the city of"


def test_the_extension_is_installed_with_the_package():
    listing = subprocess.run(
        [sys.executable, "-m", "jupyter", "labextension", "list"], capture_output=True, text=True, check=True
    )
    text = listing.stdout + listing.stderr
    assert "ndif-jupyter-labextension" in text and "enabled" in text.split("ndif-jupyter-labextension")[1][:80]


def test_the_typescript_unit_tests_pass():
    if shutil.which("npm") is None or not (LABEXTENSION / "node_modules" / "vitest").exists():
        if os.environ.get("NDIF_REQUIRE_BROWSER") == "1":
            pytest.fail("the labextension's node modules are missing: npm ci --prefix labextension")
        pytest.skip("the labextension's node modules are missing: npm ci --prefix labextension")
    run = subprocess.run(["npm", "test", "--prefix", str(LABEXTENSION)], capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    assert "failed" not in run.stdout.lower().split("tests")[-1]


@pytest.mark.browser
@pytest.mark.server
@pytest.mark.kernel
@pytest.mark.slow
def test_the_sidebar_shows_the_tree_inserts_paths_and_lists_the_job(browser_parts, llama_dir, tmp_path, test_output):
    config = {"NDIFServer": {"models": [str(llama_dir)], "response_path": str(tmp_path / "responses")}}
    with JupyterLabProcess(config) as lab:
        notebook = new_notebook(
            cells=[
                new_code_cell(
                    f"%load_ext ndif_jupyter\nfrom ndif_jupyter import Model\nmodel = Model({str(llama_dir)!r})"
                ),
                new_code_cell(
                    f"%%ndif generate model --server --max-new-tokens 2 --prompt {PROMPT!r}\n"
                    "hidden = [layer.output.save() for layer in model.model.layers]"
                ),
                new_code_cell(""),
            ],
            metadata={"kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"}},
        )
        nbformat.write(notebook, lab.folder / "sidebar.ipynb")
        seen = browser_script("sidebar.mjs", lab, "sidebar.ipynb", str(test_output))
        jobs = lab.get("ndif/api/jobs")["jobs"]
    assert seen["widget"] is True
    assert seen["models"] == [f"{llama_dir} (LlamaForCausalLM, loaded)"]
    assert seen["topModules"] == ["model", "lm_head"]
    assert seen["inserted"] == "model.model.layers[0].output"
    assert seen["jobs"] == ["done"] and [job["status"] for job in jobs] == ["done"]
    assert len(seen["newNotebookCells"]) == 2, "New NDIF notebook opens with its two sample cells"
    assert seen["newNotebookCells"][0].startswith("%load_ext ndif_jupyter")
    assert seen["newNotebookCells"][1].startswith("%%ndif generate")
    assert not [error for error in seen["consoleErrors"] if "ndif" in error.lower()]
    for screenshot in seen["screenshots"]:
        assert Path(screenshot).stat().st_size > 5000, screenshot


@pytest.mark.browser
@pytest.mark.server
@pytest.mark.slow
def test_the_sidebar_says_so_when_the_server_extension_is_missing(browser_parts, test_output):
    with JupyterLabProcess({"ServerApp": {"jpserver_extensions": {"ndif_server": False}}}) as lab:
        seen = browser_script("sidebar_missing.mjs", lab, str(test_output), timeout=300)
    assert seen["message"].startswith("The ndif server extension is not running in this Jupyter server.")

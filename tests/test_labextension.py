"""The JupyterLab extension in a real JupyterLab and Debian's chromium, installed from this package.

A notebook runs a `%%ndif generate --server` cell on a tiny model served by the server extension; the activation
browser renders; the NDIF sidebar, at its default width, shows the model's module tree one line per module with the
jobs section in view beside it; clicking a module inserts its path at the cursor of the active cell; the job is listed
as done with its notebook, prompt and time sent, and its notebook link selects the cell that sent it; "New NDIF
notebook" opens a notebook with the sample cells from the palette and from the launcher; the page raises no error.
The TypeScript's own unit tests (vitest) run here too.
"""

from __future__ import annotations

import os
import re
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
    assert_module_rows_take_one_line_each(seen["rows"])
    place = seen["jobsPlace"]
    assert place["treesOverflow"], f"every module expanded is taller than the sidebar's room for it: {place}"
    assert place["inView"], f"the jobs stay in view with every module expanded: {place}"
    assert seen["job"]["notebook"] == "sidebar.ipynb", seen["job"]
    assert seen["job"]["prompt"] == f"“{PROMPT}”", seen["job"]
    assert re.fullmatch(r"sent \d{2}:\d{2}:\d{2}", seen["job"]["sent"] or ""), seen["job"]
    assert jobs[0]["origin"]["notebook"].endswith("/sidebar.ipynb") and jobs[0]["prompt"] == PROMPT
    for opened in ("newNotebookCells", "launcherNotebookCells"):
        assert len(seen[opened]) == 2, f"New NDIF notebook opens with its two sample cells: {seen[opened]}"
        assert seen[opened][0].startswith("%load_ext ndif_jupyter")
        assert seen[opened][1].startswith("%%ndif generate")
    assert seen["beforeLink"]["tab"] != "sidebar.ipynb" and seen["beforeLink"]["jobNotebookOpen"] is False, (
        "the job's notebook was closed when its link was clicked"
    )
    assert seen["afterLink"] == {
        "tab": "sidebar.ipynb",
        "activeCell": 1,
        "selectedCells": [1],
        "activeCellInView": True,
    }, "the link brings the notebook forward with the cell that sent the job selected"
    assert seen["originProblem"] == "the cell that sent this job is no longer in sidebar.ipynb"
    assert seen["pageErrors"] == []
    assert not [error for error in seen["consoleErrors"] if "ndif" in error.lower()]
    for screenshot in seen["screenshots"]:
        assert Path(screenshot).stat().st_size > 5000, screenshot


def assert_module_rows_take_one_line_each(rows: list[dict]) -> None:
    """Every shown module row is one line high with nothing on a second line; what does not fit is cut with an
    ellipsis and a tooltip; the parameter counts end at the rows' right edge."""
    assert len(rows) > 40, f"every module of the tiny Llama is shown: {len(rows)} rows"
    wrapped = [row["path"] for row in rows if not row["oneLine"] or row["height"] > 1.5 * row["lineHeight"]]
    assert wrapped == [], f"rows that wrap: {wrapped}"
    cut = [part | {"path": row["path"]} for row in rows for part in row["cut"]]
    assert cut, "at the default width the deepest rows' class names do not fit"
    assert [part for part in cut if not (part["ellipsis"] and part["titled"])] == []
    assert all(row["labelTitled"] for row in rows)
    rights = {round(row["countRight"]) for row in rows if row["countRight"] is not None}
    edges = {round(row["rowRight"]) for row in rows}
    assert len(rights) == 1 and rights == edges, f"counts end at {rights}, rows at {edges}"


@pytest.mark.browser
@pytest.mark.server
@pytest.mark.slow
def test_the_sidebar_says_so_when_the_server_extension_is_missing(browser_parts, test_output):
    with JupyterLabProcess({"ServerApp": {"jpserver_extensions": {"ndif_server": False}}}) as lab:
        seen = browser_script("sidebar_missing.mjs", lab, str(test_output), timeout=300)
    assert seen["message"].startswith("The ndif server extension is not running in this Jupyter server.")

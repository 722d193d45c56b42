"""The notebooks in `notebooks/` run in a real kernel, and their outputs are the ones stored in them."""

from __future__ import annotations

from pathlib import Path

import nbformat
import pytest

from ndif_testing.notebook_check import differences, execute

NOTEBOOKS = sorted((Path(__file__).parent.parent / "notebooks").glob("*.ipynb"))


def test_there_are_notebooks():
    assert [path.name for path in NOTEBOOKS if path.name == "quickstart.ipynb"]


@pytest.mark.default_model
@pytest.mark.kernel
@pytest.mark.slow
@pytest.mark.parametrize("path", NOTEBOOKS, ids=[path.stem for path in NOTEBOOKS])
def test_the_notebook_runs_and_gives_its_stored_outputs(path: Path):
    stored = nbformat.read(path, as_version=4)
    assert any(cell.get("outputs") for cell in stored.cells if cell.cell_type == "code"), "outputs are stored"
    fresh = execute(path)
    found = differences(stored, fresh)
    assert not found, "\n\n".join(found)

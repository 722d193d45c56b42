"""The notebooks in `notebooks/` run in a real kernel, and their outputs are the ones stored in them."""

from __future__ import annotations

from pathlib import Path

import nbformat
import pytest

from ndif_testing.notebook_check import comparable, differences, execute

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


def test_printed_text_is_compared_whatever_chunks_the_kernel_sent_it_in():
    def cell(*outputs):
        return nbformat.from_dict({"cell_type": "code", "source": "", "outputs": list(outputs)})

    def printed(text, name="stdout"):
        return {"output_type": "stream", "name": name, "text": text}

    chunked = cell(printed("step 0: 1.25\n"), printed("progress", "stderr"), printed("step 1: 0.5\n"))
    together = cell(printed("step 0: 1.5\nstep 1: 0.75\n"))
    assert comparable(chunked) == comparable(together) == ["stdout: step 0: #.#\nstep 1: #.#"]
    assert comparable(cell(printed("step 0\n"))) != comparable(cell(printed("step 1\n")))

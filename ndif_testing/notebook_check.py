"""Run a notebook in a real kernel and compare its outputs with the ones stored in it, ignoring what varies by run.

    python -m ndif_testing.notebook_check notebooks/quickstart.ipynb             # check
    python -m ndif_testing.notebook_check --update notebooks/quickstart.ipynb    # store fresh outputs (no stderr)

Compared: stdout, results and displays (their text/plain and which formats they have), and errors (name and
message). Not compared: stderr (progress bars), numbers with a fractional part (timings, norms), memory addresses.
A cell tagged `raises-exception` may fail.
"""

from __future__ import annotations

import argparse
import copy
import re
import sys
from pathlib import Path

import nbformat
from nbclient import NotebookClient

CELL_TIMEOUT = 600
_FRACTIONAL = re.compile(r"-?\d+\.\d+(?:e[-+]?\d+)?")
_ADDRESS = re.compile(r"0x[0-9a-fA-F]+")
_ANSI = re.compile(r"\x1b\[[0-9;]*m")
_PROGRESS = re.compile(r"\d+%\|")
_WIDGET = "application/vnd.jupyter.widget-view+json"


def execute(path: Path) -> nbformat.NotebookNode:
    """The notebook at `path` with fresh outputs, run in a kernel whose working folder is the notebook's folder."""
    notebook = nbformat.read(path, as_version=4)
    fresh = copy.deepcopy(notebook)
    client = NotebookClient(
        fresh, timeout=CELL_TIMEOUT, kernel_name="python3", resources={"metadata": {"path": str(path.parent)}}
    )
    client.execute()
    return fresh


def comparable(cell: nbformat.NotebookNode) -> list[str]:
    """The parts of a code cell's outputs that must be the same on every run. Printed text is compared as one text
    up to the next result or error: a kernel sends it in chunks that depend on timing."""
    parts = []
    printed = ""
    for output in cell.get("outputs", []):
        if _is_progress_bar(output):
            continue
        kind = output["output_type"]
        if kind == "stream":
            printed += output["text"] if output["name"] == "stdout" else ""
            continue
        if printed:
            parts.append("stdout: " + _normalize(printed))
            printed = ""
        if kind in ("execute_result", "display_data"):
            kinds = ", ".join(sorted(output["data"]))
            parts.append(f"{kind} ({kinds}): " + _normalize(output["data"].get("text/plain", "")))
        elif kind == "error":
            parts.append(f"error: {output['ename']}: " + _normalize(output["evalue"]))
    if printed:
        parts.append("stdout: " + _normalize(printed))
    return parts


def differences(stored: nbformat.NotebookNode, fresh: nbformat.NotebookNode) -> list[str]:
    """A message per code cell whose fresh outputs differ from the stored ones."""
    found = []
    code_cells = [(a, b) for a, b in zip(stored.cells, fresh.cells) if a.cell_type == "code"]
    for number, (before, after) in enumerate(code_cells, start=1):
        if comparable(before) != comparable(after):
            found.append(
                f"code cell {number}:\n{before.source}\n-- stored --\n"
                + "\n".join(comparable(before))
                + "\n-- fresh --\n"
                + "\n".join(comparable(after))
            )
    return found


def _storable(notebook: nbformat.NotebookNode) -> nbformat.NotebookNode:
    """Without stderr and progress bars, and without widget state: the browser widgets store a picture of themselves."""
    notebook.metadata.pop("widgets", None)
    for cell in notebook.cells:
        if cell.cell_type == "code":
            cell.outputs = [
                o
                for o in cell.outputs
                if not (o.output_type == "stream" and o.name == "stderr") and not _is_progress_bar(o)
            ]
    return notebook


def _is_progress_bar(output: nbformat.NotebookNode) -> bool:
    """A progress bar shown as a widget (tqdm in a kernel with ipywidgets), such as weight loading's."""
    data = output.get("data", {})
    return _WIDGET in data and bool(_PROGRESS.search(data.get("text/plain", "")))


def _normalize(text: str) -> str:
    text = _ANSI.sub("", text)
    text = _ADDRESS.sub("0x…", text)
    return _FRACTIONAL.sub("#.#", text).strip()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("notebooks", nargs="+", type=Path)
    parser.add_argument("--update", action="store_true", help="store the fresh outputs in the notebook")
    args = parser.parse_args(argv)
    status = 0
    for path in args.notebooks:
        fresh = execute(path)
        if args.update:
            nbformat.write(_storable(fresh), path)
            print(f"{path}: outputs stored")
            continue
        found = differences(nbformat.read(path, as_version=4), fresh)
        print(f"{path}: " + ("outputs as stored" if not found else "\n\n".join(found)))
        status |= bool(found)
    return status


if __name__ == "__main__":
    sys.exit(main())

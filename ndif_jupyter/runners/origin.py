"""Where a block is sent from: the notebook and the cell a Jupyter kernel is running, told to the server with it."""

from __future__ import annotations

import os

from ..progress import kernel_shell
from ..protocol.origin import Origin

SESSION_PATH_ENV = "JPY_SESSION_NAME"
"""Set by a Jupyter server in the environment of a kernel it starts for a notebook: the notebook's path."""


def running_origin() -> Origin | None:
    """The notebook this kernel was started for and the id of the cell it is running (the `cellId` JupyterLab puts
    in the metadata of an execute request); None outside a notebook's kernel."""
    notebook = os.environ.get(SESSION_PATH_ENV, "").replace(os.sep, "/")
    return Origin.sendable(notebook, running_cell_id())


def running_cell_id() -> str:
    """The id of the cell being run, or "" when there is no kernel or its front end sends none."""
    get_parent = getattr(getattr(kernel_shell(), "kernel", None), "get_parent", None)
    if get_parent is None:
        return ""
    parent = get_parent()
    metadata = parent.get("metadata") if isinstance(parent, dict) else None
    cell = metadata.get("cellId") if isinstance(metadata, dict) else None
    return cell if isinstance(cell, str) else ""

"""The layering of the package, read from its source: every import points down, and no module reads another's privates.

Rooms, bottom to top (a room may import only rooms below it, and rooms on one level do not import each other):

    0  ir                                   the graph, nested values, source lines, a run's result
    1  errors, operations, indexing, api_address   what goes wrong; the allowlist of operations; the API's address
    2  loading                              checkpoints, LoadedModel, the shape oracle
    3  tracing | execution | protocol       recording graphs | running them | encoding and admitting them
    4  client                               the server's REST API from a kernel
    5  runners                              where a graph runs (this process, a server)
    6  model                                the user's Model
    7  widgets                              the activation browser
    8  magics                               %%ndif
    9  cli, the package itself

The server extension `ndif_server` stands beside rank 5: it may import ranks 0 to 4, and nothing imports it.
"""

from __future__ import annotations

import ast
import functools
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = {"ndif_jupyter": ROOT / "ndif_jupyter", "ndif_server": ROOT / "server_ext" / "ndif_server"}

RANKS = {
    "ndif_jupyter.ir": 0,
    "ndif_jupyter.errors": 1,
    "ndif_jupyter.operations": 1,
    "ndif_jupyter.indexing": 1,
    "ndif_jupyter.api_address": 1,
    "ndif_jupyter.progress": 1,
    "ndif_jupyter.loading": 2,
    "ndif_jupyter.tracing": 3,
    "ndif_jupyter.execution": 3,
    "ndif_jupyter.protocol": 3,
    "ndif_jupyter.client": 4,
    "ndif_jupyter.runners": 5,
    "ndif_server": 5,
    "ndif_jupyter.model": 6,
    "ndif_jupyter.widgets": 7,
    "ndif_jupyter.magics": 8,
    "ndif_jupyter.cli": 9,
    "ndif_jupyter": 9,
}

# Private names of other libraries that this package reads on purpose (torch's tables of children, parameters and
# buffers; CPython's frame access; argparse's actions).
FOREIGN_PRIVATES = {"_modules", "_parameters", "_buffers", "_getframe", "_actions", "_fields"}


@functools.lru_cache(maxsize=1)
def modules() -> dict[str, Path]:
    """Every module of both packages by dotted name."""
    found = {}
    for package, folder in PACKAGES.items():
        for path in folder.rglob("*.py"):
            parts = [package, *path.relative_to(folder).with_suffix("").parts]
            if parts[-1] == "__init__":
                parts.pop()
            found[".".join(parts)] = path
    return found


def room_of(module: str) -> str:
    """The longest room name that `module` is or lies inside."""
    matches = [room for room in RANKS if module == room or module.startswith(room + ".")]
    return max(matches, key=len)


def imports_of(module: str, path: Path) -> set[str]:
    """The modules of both packages that `module` imports anywhere in its file (under TYPE_CHECKING too)."""
    package = module if path.name == "__init__.py" else module.rsplit(".", 1)[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
                names = [f"{target}.{alias.name}" for alias in node.names]
            else:
                target = node.module or ""
                names = [f"{target}.{alias.name}" for alias in node.names]
            for name in [target, *names]:
                if name.split(".")[0] in PACKAGES:
                    found.add(name)
        elif isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names if alias.name.split(".")[0] in PACKAGES)
    known = modules()
    # `from .x import name` names a module when `x.name` is one, else an attribute of the module `x`.
    return {name if name in known else name.rsplit(".", 1)[0] for name in found} & set(known)


def room_arrows() -> set[tuple[str, str]]:
    """(importing room, imported room) for every import between two different rooms."""
    arrows = set()
    for module, path in modules().items():
        for target in imports_of(module, path):
            source_room, target_room = room_of(module), room_of(target)
            if source_room != target_room:
                arrows.add((source_room, target_room))
    return arrows


def wrong_arrows() -> list[str]:
    wrong = []
    for source, target in sorted(room_arrows()):
        if RANKS[target] >= RANKS[source] or (source == "ndif_server" and RANKS[target] > 4):
            wrong.append(f"{source} (rank {RANKS[source]}) imports {target} (rank {RANKS[target]})")
    return wrong


def test_every_module_belongs_to_a_room():
    assert all(room_of(module) for module in modules())


def test_every_import_points_down():
    assert wrong_arrows() == []


def test_the_check_finds_an_arrow_pointing_up(tmp_path, monkeypatch):
    upward = PACKAGES["ndif_jupyter"] / "ir" / "graph.py"
    source = upward.read_text() + "\nfrom ..model import Model\n"
    copy = tmp_path / "graph.py"
    copy.write_text(source)
    found = imports_of("ndif_jupyter.ir.graph", copy)
    assert "ndif_jupyter.model" in found
    assert RANKS[room_of("ndif_jupyter.model")] > RANKS[room_of("ndif_jupyter.ir.graph")]


def private_reads(path: Path) -> list[str]:
    """`obj._name` reads where `obj` is not `self` or `cls` (dunder names and other libraries' known privates aside)."""
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if not isinstance(node, ast.Attribute):
            continue
        name = node.attr
        if not name.startswith("_") or name.startswith("__") or name.endswith("_") or name in FOREIGN_PRIVATES:
            continue  # public, dunder, or a protocol name such as `_repr_html_`
        if isinstance(node.value, ast.Name) and node.value.id in ("self", "cls"):
            continue
        if isinstance(node.value, ast.Call) and getattr(node.value.func, "id", None) == "super":
            continue
        found.append(f"{path.relative_to(ROOT)}:{node.lineno}: {ast.unparse(node)}")
    return found


def test_no_module_reads_another_objects_private_members():
    found = [read for path in modules().values() for read in private_reads(path)]
    assert found == []


def test_the_server_loads_no_notebook_code():
    code = (
        "import sys\n"
        "import ndif_server, ndif_server.app, ndif_server.worker, ndif_server.backends.local, "
        "ndif_server.backends.gateway\n"
        "loaded = [m for m in sys.modules if m.split('.')[0] in ('IPython', 'ipywidgets', 'anywidget', 'matplotlib')"
        " or m.startswith(('ndif_jupyter.tracing', 'ndif_jupyter.magics', 'ndif_jupyter.widgets', "
        "'ndif_jupyter.model'))]\n"
        "print(sorted(loaded))\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True)
    assert result.stdout.strip() == "[]"


@pytest.mark.parametrize("room", sorted(RANKS))
def test_each_room_exists(room):
    assert room in modules() or any(module.startswith(room + ".") for module in modules())

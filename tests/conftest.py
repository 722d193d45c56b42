"""Shared fixtures: tiny checkpoints built once per test session, real shells, servers and the browser test parts;
the check that a test carries the tier markers of the fixtures it uses."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest
import torch

from ndif_testing.tiny_models import build_gpt2, build_llama

pytest_plugins = ["pytest_jupyter.jupyter_server"]

# Tiers: a test without a tier marker is a unit test; a test that uses a tier's fixtures must carry its marker, so
# that `-m "not kernel"` and the like leave out what they say.
TIER_FIXTURES = {
    "kernel": {"ip", "_global_shell"},
    "server": {"jp_serverapp", "jp_fetch", "server"},
    "gateway": {"gateway"},
    "browser": {"browser_parts"},
}


def pytest_collection_modifyitems(config, items):
    missing = []
    for item in items:
        used = set(getattr(item, "fixturenames", ()))
        for tier, fixtures in TIER_FIXTURES.items():
            if used & fixtures and item.get_closest_marker(tier) is None:
                missing.append(f"{item.nodeid} uses {', '.join(sorted(used & fixtures))} but is not marked `{tier}`")
    if missing:
        raise pytest.UsageError("tests without their tier marker:\n  " + "\n  ".join(missing))


@pytest.fixture(scope="session")
def gpt2_dir(tmp_path_factory):
    return build_gpt2(tmp_path_factory.mktemp("tiny-gpt2"))


@pytest.fixture(scope="session")
def llama_dir(tmp_path_factory):
    return build_llama(tmp_path_factory.mktemp("tiny-llama"))


@pytest.fixture
def gpt2(gpt2_dir):
    from ndif_jupyter import Model

    return Model(str(gpt2_dir))


@pytest.fixture
def llama(llama_dir):
    from ndif_jupyter import Model

    return Model(str(llama_dir))


@pytest.fixture(scope="session")
def default_model():
    from ndif_jupyter import Model

    return Model()


def extension_config(models: list, tmp_path: Path, **settings) -> dict:
    """A `jp_server_config` with the `ndif` extension serving the checkpoint folders `models`, its results under
    `tmp_path`, and any other NDIFServer settings."""
    ndif = {"models": [str(folder) for folder in models], "response_path": str(tmp_path / "responses"), **settings}
    return {"ServerApp": {"jpserver_extensions": {"ndif_server": True}}, "NDIFServer": ndif}


def hook_count(module: torch.nn.Module) -> int:
    """Every forward hook and pre-hook registered anywhere in a module tree."""
    return sum(
        len(m._forward_hooks) + len(m._forward_pre_hooks) + len(getattr(m, "_forward_hooks_with_kwargs", {}))
        for m in module.modules()
    )


@pytest.fixture(scope="session")
def _global_shell():
    from IPython.testing.globalipapp import start_ipython

    return start_ipython()


@pytest.fixture
def ip(_global_shell):
    """A real IPython shell with an empty namespace and the extension freshly loaded."""
    import ndif_jupyter

    shell = _global_shell
    shell.reset(new_session=False)
    if "ndif_jupyter" in shell.extension_manager.loaded:
        ndif_jupyter.unload_ipython_extension(shell)
        ndif_jupyter.load_ipython_extension(shell)
    else:
        shell.run_line_magic("load_ext", "ndif_jupyter")
    yield shell
    shell.reset(new_session=False)


@pytest.fixture
def ndif_client_environment(monkeypatch):
    """The server extension exports where it is into this process's environment; undo that after each test."""
    monkeypatch.delenv("NDIF_SERVER_URL", raising=False)
    monkeypatch.delenv("NDIF_SERVER_TOKEN", raising=False)


@pytest.fixture
def server(jp_serverapp):
    """The `ndif` extension app of the running pytest-jupyter server, which has told this process where it is."""
    import os

    (app,) = jp_serverapp.extension_manager.extension_apps["ndif_server"]
    assert os.environ["NDIF_SERVER_URL"] == f"http://localhost:{jp_serverapp.port}{jp_serverapp.base_url}ndif/api/"
    assert os.environ["NDIF_SERVER_TOKEN"] == jp_serverapp.identity_provider.token
    return app


@pytest.fixture
def test_output(request):
    """A folder for what a test leaves for people to look at (screenshots): test-output/<test name>, kept after the run.

    NDIF_TEST_OUTPUT moves the top folder (CI keeps it as an artifact).
    """
    import re

    top = Path(os.environ.get("NDIF_TEST_OUTPUT", Path(__file__).parent.parent / "test-output"))
    folder = top / re.sub(r"[^\w.-]+", "_", request.node.name)
    folder.mkdir(parents=True, exist_ok=True)
    return folder


BROWSER_TESTS = Path(__file__).parent / "browser"
CHROMIUM = os.environ.get("CHROMIUM", "/usr/bin/chromium")


def _missing_browser_parts() -> list[str]:
    missing = []
    if not Path(CHROMIUM).exists():
        missing.append(f"chromium ({CHROMIUM}; apt-get install chromium)")
    if shutil.which("node") is None:
        missing.append("node")
    elif not (BROWSER_TESTS / "node_modules" / "playwright-core").exists():
        if shutil.which("npm") is not None:
            subprocess.run(["npm", "ci", "--prefix", str(BROWSER_TESTS)], check=False, capture_output=True)
        if not (BROWSER_TESTS / "node_modules" / "playwright-core").exists():
            missing.append("playwright-core (npm ci --prefix tests/browser)")
    return missing


@pytest.fixture(scope="session")
def browser_parts():
    """Debian's chromium and playwright-core: skipped without them, failed without them when NDIF_REQUIRE_BROWSER=1."""
    missing = _missing_browser_parts()
    if missing:
        message = "browser test parts missing: " + ", ".join(missing)
        if os.environ.get("NDIF_REQUIRE_BROWSER") == "1":
            pytest.fail(message)
        pytest.skip(message)


def browser_script(script: str, lab, *args: str, timeout: float = 420) -> dict:
    """Run `tests/browser/<script>` against a running JupyterLab; what it saw (its last line of JSON)."""
    import json

    run = subprocess.run(
        ["node", str(BROWSER_TESTS / script), lab.url, lab.token, *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=dict(os.environ, CHROMIUM=CHROMIUM),
    )
    assert run.returncode == 0, f"{run.stderr}\n--- JupyterLab log ---\n{lab.log_path.read_text()[-4000:]}"
    return json.loads(run.stdout.strip().splitlines()[-1])

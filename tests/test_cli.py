"""The README's main command: `ndif-jupyter demo` generates and prints the saved hidden states' shapes."""

from __future__ import annotations

import subprocess
import sys

import pytest

pytestmark = pytest.mark.slow


def test_demo_prints_the_generated_text_and_saved_shapes(gpt2_dir):
    completed = subprocess.run(
        [sys.executable, "-m", "ndif_jupyter.cli", "demo", "--model", str(gpt2_dir), "--max-new-tokens", "2"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert completed.returncode == 0, completed.stderr
    lines = completed.stdout.splitlines()
    assert lines[0].startswith("Model ") and "no weights loaded yet" in lines[0]
    assert lines[1].startswith("Generated in") and "The Eiffel Tower is in the city of" in lines[1]
    assert "step 0: shape [1, 8, 64], dtype float32" in lines[2]
    assert "step 1: shape [1, 1, 64], dtype float32" in lines[3]

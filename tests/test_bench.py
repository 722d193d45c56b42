"""The benchmark script runs, checks that its contenders save the same values, and writes its table as JSON.

This is not a timing test: it runs one round, so that the script keeps working; its figures go in the README.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parent.parent / "bench" / "run.py"

pytestmark = pytest.mark.slow


def test_the_benchmark_runs_its_tiny_scenarios_and_writes_json(tmp_path):
    output = tmp_path / "bench.json"
    run = subprocess.run(
        [
            sys.executable,
            str(BENCH),
            "--tiny",
            "--without-nnsight",
            "--only",
            "scenarios",
            "--rounds",
            "1",
            "--json",
            str(output),
        ],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    report = json.loads(output.read_text())
    assert [row["scenario"] for row in report["scenarios"]] == ["tiny-gpt2-forward", "tiny-llama-generate"]
    for row in report["scenarios"]:
        assert row["ours_ms"] > 0 and row["hooks_ms"] > 0
        assert row["ours_over_hooks"] == pytest.approx(row["ours_ms"] / row["hooks_ms"])
    assert "ours/hooks" in run.stdout and report["machine"]["cores"] >= 1


def bench_report(script: str, *arguments: str, folder: Path) -> dict:
    """Run `bench/<script>` with `arguments` and `--json`; the report it wrote (the run must succeed)."""
    output = folder / f"{script}.json"
    command = [sys.executable, str(BENCH.with_name(script)), *arguments, "--json", str(output)]
    run = subprocess.run(command, capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr[-3000:]
    return json.loads(output.read_text())


def test_the_co_batching_benchmark_runs_both_servers_and_checks_every_result(tmp_path):
    report = bench_report("co_batching.py", "--tiny", "gpt2", "--clients", "3", "--jobs", "2", folder=tmp_path)
    assert report["off"]["jobs"] == report["on"]["jobs"] == 6
    assert report["off"]["mean_batch"] == 1
    assert report["on"]["largest_deviation"] <= 1e-5 and report["off"]["largest_deviation"] <= 1e-5


def test_the_tracing_benchmark_times_cold_and_warm_blocks_in_fresh_processes(tmp_path):
    report = bench_report("tracing.py", "--tiny", "gpt2", "--steps", "1", "4", "--repeat", "1", folder=tmp_path)
    for steps in ("1", "4"):
        blocks = report["steps"][steps]
        assert set(blocks) == {"cold", "second length", "third length", "warm", "hugging face generate"}
        assert all(times["running"] > 0 for times in blocks.values())
        assert blocks["warm"]["tracing"] < blocks["cold"]["tracing"], "a warm block reuses the cold one's shapes"


def test_the_gradient_benchmark_checks_its_scores_against_plain_pytorch(tmp_path):
    report = bench_report("gradients.py", "--tiny", "llama", "--rounds", "1", "--without-nnsight", folder=tmp_path)
    assert report["layers"] == 4 and set(report["medians"]) == {"plain pytorch", "ours"}
    assert report["deviations"]["ours"] <= 1e-4

"""Benchmark: this project against raw PyTorch forward hooks (the floor) and nnsight, in one process and one run.

    python bench/run.py                 # every scenario and measurement, medians of many interleaved rounds
    python bench/run.py --quick         # fewer rounds, for a first look (a minute or two)
    python bench/run.py --json out.json # also write the table and the measurements as JSON

nnsight is a bench-only dependency: `pip install -e ".[bench]"`. Ratios are of medians; a target is met when this
project's median over the raw hooks' median is at most the target.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import platform
import sys
import warnings
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from extras import construction, memory_over_runs, server_overhead
from scenarios import Scenario, all_scenarios
from timing import interleaved_medians

NNSIGHT_TARGET = 0.85


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer rounds and runs")
    parser.add_argument("--json", type=Path, metavar="FILE", help="write the results as JSON to FILE")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--without-nnsight", action="store_true", help="leave nnsight out (when not installed)")
    parser.add_argument("--only", choices=["scenarios", "extras"], help="run only the scenarios, or only the extras")
    parser.add_argument("--tiny", action="store_true", help="leave out the default model's scenario")
    parser.add_argument("--rounds", type=int, help="timed rounds per scenario (default 60, or 15 with --quick)")
    args = parser.parse_args(argv)
    warnings.filterwarnings("ignore")
    with_nnsight = not args.without_nnsight
    if with_nnsight and not _nnsight_installed():
        parser.error("nnsight is not installed: pip install -e '.[bench]' (or pass --without-nnsight)")
    rounds, warmup = (15, 3) if args.quick else (60, 5)
    rounds = args.rounds or rounds

    report = {"machine": machine(args.device), "rounds": rounds, "scenarios": [], "extras": {}}
    print(f"# {report['machine']['summary']}; medians of {rounds} interleaved rounds after {warmup} warm-up rounds")
    if args.only != "extras":
        for build in all_scenarios(args.device, with_nnsight, include_default=not args.tiny):
            scenario = build()
            check_same_values(scenario)
            medians = interleaved_medians(scenario.contenders, rounds, warmup)
            report["scenarios"].append(row(scenario, medians))
        print_table(report["scenarios"])
    if args.only != "scenarios":
        report["extras"]["construction"] = construction()
        report["extras"]["server"] = server_overhead(rounds=7 if args.quick else 21)
        report["extras"]["memory"] = memory_over_runs(runs=200, device=args.device)
        print_extras(report["extras"])
    if args.json:
        args.json.write_text(json.dumps(report, indent=2) + "\n")
        print(f"written to {args.json}")
    return 0


def _nnsight_installed() -> bool:
    try:
        import nnsight  # noqa: F401
    except ImportError:
        return False
    return True


def machine(device: str) -> dict:
    import os

    cpu = platform.processor() or platform.machine()
    try:
        names = [
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if line.startswith("model name")
        ]
        cpu = names[0] if names else cpu
    except OSError:
        pass
    gpu = torch.cuda.get_device_name(0) if device.startswith("cuda") else None
    versions = {"python": platform.python_version(), "torch": torch.__version__, **_versions()}
    summary = (
        f"{device}: {gpu or cpu}, {os.cpu_count()} cores, torch {torch.__version__}, threads {torch.get_num_threads()}"
    )
    return {
        "device": device,
        "cpu": cpu,
        "cores": os.cpu_count(),
        "gpu": gpu,
        "threads": torch.get_num_threads(),
        "versions": versions,
        "summary": summary,
    }


def _versions() -> dict:
    from importlib.metadata import PackageNotFoundError, version

    found = {}
    for name in ("transformers", "ndif-jupyter", "nnsight"):
        with contextlib.suppress(PackageNotFoundError):
            found[name] = version(name)
    return found


def check_same_values(scenario: Scenario) -> None:
    """Every contender saves the same tensors as the raw hooks, so the times compare the same work."""
    expected = scenario.contenders["hooks"]()
    for name, run in scenario.contenders.items():
        got = run()
        same = len(got) == len(expected) and all(
            torch.allclose(a.float().cpu(), b.float().cpu(), atol=1e-5) for a, b in zip(got, expected)
        )
        if not same:
            raise SystemExit(f"{scenario.key}: {name} saved different values than the raw hooks; not comparable")


def row(scenario: Scenario, medians: dict[str, float]) -> dict:
    hooks, ours, nnsight = medians["hooks"], medians["ours"], medians.get("nnsight")
    return {
        "scenario": scenario.key,
        "title": scenario.title,
        "ours_ms": ours * 1e3,
        "hooks_ms": hooks * 1e3,
        "nnsight_ms": None if nnsight is None else nnsight * 1e3,
        "ours_over_hooks": ours / hooks,
        "nnsight_over_hooks": None if nnsight is None else nnsight / hooks,
        "ours_over_nnsight": None if nnsight is None else ours / nnsight,
        "target_ours_over_hooks": scenario.target,
        "met": ours / hooks <= scenario.target,
        "target_ours_over_nnsight": NNSIGHT_TARGET if scenario.key == "tiny-gpt2-forward" else None,
    }


def print_table(rows: list[dict]) -> None:
    header = (
        f"{'scenario':<22} {'ours ms':>9} {'hooks ms':>9} {'nnsight ms':>10} {'ours/hooks':>11} {'target':>7} "
        f"{'nnsight/hooks':>13} {'ours/nnsight':>12}"
    )
    print(header)
    for entry in rows:
        nnsight = "-" if entry["nnsight_ms"] is None else f"{entry['nnsight_ms']:.2f}"
        over_nnsight = "-" if entry["ours_over_nnsight"] is None else f"{entry['ours_over_nnsight']:.3f}"
        nnsight_ratio = "-" if entry["nnsight_over_hooks"] is None else f"{entry['nnsight_over_hooks']:.3f}"
        mark = "ok" if entry["met"] else "MISSED"
        print(
            f"{entry['scenario']:<22} {entry['ours_ms']:>9.2f} {entry['hooks_ms']:>9.2f} {nnsight:>10} "
            f"{entry['ours_over_hooks']:>11.3f} {'<=' + str(entry['target_ours_over_hooks']):>7} "
            f"{nnsight_ratio:>13} {over_nnsight:>12}  {mark}"
        )


def print_extras(extras: dict) -> None:
    built = extras["construction"]
    print(
        f"Model() of the default model, no weights: {built['first_seconds']:.2f} s in a fresh process after "
        f"{built['import_seconds']:.2f} s of import "
        f"(+{built['first_rss_mb']:.0f} MB resident), {built['again_seconds']:.2f} s for another in the same process "
        f"(+{built['again_rss_mb']:.0f} MB)"
    )
    server = extras["server"]
    print(
        f"through the server extension on loopback: small job {server['server_ms']:.1f} ms "
        f"vs {server['kernel_ms']:.1f} ms in the kernel (+{server['server_ms'] - server['kernel_ms']:.1f} ms); "
        f"a {server['result_mb']:.0f} MB result "
        f"in {server['large_server_ms']:.0f} ms vs {server['large_kernel_ms']:.0f} ms "
        f"({server['transfer_mb_per_s']:.0f} MB/s for the extra)"
    )
    memory = extras["memory"]
    print(
        f"{memory['runs']} consecutive traces: resident memory {memory['rss_before_mb']:.1f} -> "
        f"{memory['rss_after_mb']:.1f} MB ({memory['rss_growth_mb']:+.1f} MB), hooks left registered: "
        f"{memory['hooks_left']}"
    )


if __name__ == "__main__":
    sys.exit(main())

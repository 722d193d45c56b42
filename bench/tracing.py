"""Tracing against running: how long recording a block takes next to running it, cold and warm, for 1, 12 and 30
generation steps on the default model (and Hugging Face's own `generate` of the same tokens, for scale).

Each figure comes from a fresh process with the weights loaded before the block, so "running" is the graph's run
alone. In that process the block is recorded and run four times:
- cold: the first block of the process (every shape the block needs is new);
- second and third length: the same block on prompts of two other lengths (each again new to the shape oracle);
- warm: the first prompt again.
The block saves the last layer's output at every step (`for step in generator.steps`), as a steering or lens
cell over a whole generation does.

Each figure is the median over `--repeat` fresh processes (3 by default): a cold start varies by tens of
milliseconds from one process to the next.

    python bench/tracing.py [--steps 1 12 30] [--repeat 3] [--tiny gpt2|llama] [--json FILE]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
from pathlib import Path

from models import default_checkpoint, tiny_checkpoint

PROMPTS = [
    "The Eiffel Tower is in the city of",
    "Hello world, this is",
    "In a hole in the ground there lived a hobbit, not a nasty",
]

_ONE_PROCESS = """
import json, sys, time, warnings
warnings.filterwarnings("ignore")
import torch
from ndif_jupyter import Model

folder, steps, prompts = sys.argv[1], int(sys.argv[2]), json.loads(sys.argv[3])
model = Model(folder)
torch_model = model.dispatch("cpu")
layers = model.transformer.h if hasattr(model.config, "n_layer") else model.model.layers
timings = {}

def timed_runner(block, times):
    run = block.runner
    def runner(graph):
        times["tracing"] = time.perf_counter() - times["opened"]
        started = time.perf_counter()
        result = run(graph)
        times["running"] = time.perf_counter() - started
        return result
    block.runner = runner

def block_on(prompt):
    times = {}
    times["opened"] = time.perf_counter()
    with model.generate(max_new_tokens=steps, do_sample=False, device_map="cpu") as generator:
        timed_runner(generator, times)
        with generator.invoke(prompt):
            for step in generator.steps:
                layers[-1].output.save()
    del times["opened"]
    return times, generator.output

for name, prompt in zip(("cold", "second length", "third length", "warm"), prompts + prompts[:1]):
    timings[name], output = block_on(prompt)

ids = model.tokenizer(prompts[0], return_tensors="pt")
with torch.no_grad():
    started = time.perf_counter()
    pad = model.loaded.pad_token_id
    reference = torch_model.generate(**ids, max_new_tokens=steps, do_sample=False, pad_token_id=pad)
    timings["hugging face generate"] = {"running": time.perf_counter() - started}
assert torch.equal(reference, output), "the block generated other tokens than Hugging Face"
print(json.dumps(timings))
"""


def measure(folder: str, steps: int) -> dict:
    """The four blocks' tracing and running seconds (and HF generate's) in one fresh process."""
    run = subprocess.run(
        [sys.executable, "-c", _ONE_PROCESS, folder, str(steps), json.dumps(PROMPTS)],
        capture_output=True,
        text=True,
    )
    if run.returncode:
        raise SystemExit(run.stderr[-3000:])
    return json.loads(run.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, nargs="+", default=[1, 12, 30])
    parser.add_argument("--repeat", type=int, default=3, help="fresh processes per number of steps")
    parser.add_argument("--tiny", choices=["gpt2", "llama"], help="a tiny model instead of the default model")
    parser.add_argument("--json", type=Path, metavar="FILE", help="write the figures as JSON to FILE")
    args = parser.parse_args(argv)
    folder = tiny_checkpoint(args.tiny) if args.tiny else default_checkpoint()
    report = {"model": args.tiny or "default", "steps": {}}
    print(f"{'steps':>5}  {'block':<15} {'tracing s':>10} {'running s':>10} {'tracing/running':>16}")
    for steps in args.steps:
        runs = [measure(folder, steps) for _ in range(args.repeat)]
        figures = {
            name: {kind: statistics.median(run[name][kind] for run in runs) for kind in times}
            for name, times in runs[0].items()
        }
        report["steps"][steps] = figures
        for name, times in figures.items():
            tracing = times.get("tracing")
            ratio = f"{tracing / times['running']:.1%}" if tracing is not None else ""
            shown = f"{tracing:.3f}" if tracing is not None else "-"
            print(f"{steps:>5}  {name:<15} {shown:>10} {times['running']:>10.3f} {ratio:>16}")
    if args.json:
        args.json.write_text(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Co-batching through the real server: 8 notebooks send small jobs at once (a trace of one prompt saving 3 layers,
a 16-token generation saving the last layer at every step); throughput and latency with co-batching on
(batch_jobs=8) and off (batch_jobs=1), one server after the other in the same run, on the same model.

The jobs are recorded once, run in this process for reference, and sent by each notebook's `ServerClient` as they
are: the figures are the server's (request, admission, queue, batched run, result), not each notebook's tracing.
Every result is checked against the reference run: token ids equal, each saved value within 1e-5 of its largest
magnitude (the largest deviation seen is reported).

    python bench/co_batching.py [--tiny gpt2|llama] [--device cpu|cuda] [--clients 8] [--jobs 10] [--json FILE]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

from models import default_checkpoint, tiny_checkpoint

PROMPTS = [
    "The Eiffel Tower is in the city of",
    "Hello world",
    "In a hole in the ground there lived",
    "The capital of Japan is",
    "Water boils at a temperature of",
    "One, two, three,",
    "The quick brown fox",
    "Once upon a time",
]
NEW_TOKENS = 16
TOLERANCE = 1e-5
"""The largest difference from the reference run a result may have, relative to each saved value's largest magnitude
(token ids must be equal): in a batch, a row's sums run in another order on a CPU's BLAS."""


def layers_of(model):
    return model.transformer.h if hasattr(model.config, "n_layer") else model.model.layers


def trace_job(model, prompt: str, device: str):
    layers = layers_of(model)
    with model.trace(prompt, device_map=device) as tracer:
        for layer in (layers[0], layers[len(layers) // 2], layers[-1]):
            layer.output.save()
    return tracer


def generate_job(model, prompt: str, device: str):
    layers = layers_of(model)
    with model.generate(max_new_tokens=NEW_TOKENS, device_map=device) as generator:
        with generator.invoke(prompt) as invoker:
            for step in range(NEW_TOKENS):
                if step:
                    invoker.next()
                layers[-1].output.save()
    return generator


def recorded_jobs(folder: str, device: str) -> list:
    """Each job kind on each prompt: its graph and the result of running it here on `device`."""
    from ndif_jupyter import Model

    model = Model(folder)
    jobs = []
    for prompt in PROMPTS:
        for kind in (trace_job, generate_job):
            block = kind(model, prompt, device)
            jobs.append((block.graph(), block.result))
    return jobs


def deviation(result, reference) -> float:
    """How far a result is from the reference run: infinite when its saved values or token ids differ, else the
    largest difference of a saved value relative to that value's largest magnitude."""
    import torch

    if set(result.saved) != set(reference.saved) or (result.output_ids is None) != (reference.output_ids is None):
        return float("inf")
    if result.output_ids is not None and not torch.equal(result.output_ids, reference.output_ids):
        return float("inf")
    worst = 0.0
    for key, value in reference.saved.items():
        scale = max(float(value.abs().max()), 1.0)
        worst = max(worst, float((result.saved[key] - value).abs().max()) / scale)
    return worst


def measure(folder: str, device: str, jobs: list, batch_jobs: int, clients: int, rounds: int) -> dict:
    from ndif_jupyter.client import ServerClient
    from ndif_testing.jupyter_process import JupyterServerProcess

    config = {
        "NDIFServer": {
            "models": [folder],
            "response_path": tempfile.mkdtemp(prefix="bench-co-batching-"),
            "device_map": device,
            "batch_jobs": batch_jobs,
        }
    }
    with JupyterServerProcess(config) as server:
        notebooks = [ServerClient(server.url + "ndif/api/", server.token, quiet_seconds=30) for _ in range(clients)]
        for graph, reference in jobs:  # the model loaded and each job's shapes known to the server before the clock
            assert deviation(notebooks[0].run(graph, folder), reference) <= TOLERANCE
        latencies: list[float] = []
        deviations: list[float] = []
        lock = threading.Lock()
        start = threading.Barrier(clients + 1)

        def client(index: int) -> None:
            start.wait()
            for number in range(rounds):
                which = (index * rounds + number) % len(jobs)
                graph, reference = jobs[which]
                began = time.perf_counter()
                result = notebooks[index].run(graph, folder)
                with lock:
                    latencies.append(time.perf_counter() - began)
                    deviations.append(deviation(result, reference))

        threads = [threading.Thread(target=client, args=(index,)) for index in range(clients)]
        for thread in threads:
            thread.start()
        start.wait()
        began = time.perf_counter()
        for thread in threads:
            thread.join()
        elapsed = time.perf_counter() - began
        batches = [job["batch"] for job in server.get("ndif/api/jobs")["jobs"] if job["status"] == "done"]
    if max(deviations) > TOLERANCE:
        raise SystemExit(f"{sum(d > TOLERANCE for d in deviations)} results differ from the reference run")
    latencies.sort()
    return {
        "jobs_per_s": len(latencies) / elapsed,
        "p50_s": statistics.median(latencies),
        "p95_s": latencies[min(len(latencies) - 1, round(0.95 * (len(latencies) - 1)))],
        "mean_batch": statistics.mean(batches[len(jobs) :]) if len(batches) > len(jobs) else 0.0,
        "jobs": len(latencies),
        "largest_deviation": max(deviations),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tiny", choices=["gpt2", "llama"], help="a tiny model instead of the default model")
    parser.add_argument("--device", default="cpu", help="where the server and the reference run load the weights")
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--jobs", type=int, default=10, help="jobs each client sends, one after the other")
    parser.add_argument("--json", help="write the figures to this file")
    arguments = parser.parse_args()
    folder = tiny_checkpoint(arguments.tiny) if arguments.tiny else default_checkpoint()
    jobs = recorded_jobs(folder, arguments.device)
    figures: dict = {"model": f"tiny {arguments.tiny}" if arguments.tiny else "default model"}
    figures["clients"], figures["jobs_per_client"] = arguments.clients, arguments.jobs
    figures["device"] = arguments.device
    figures["off"] = measure(folder, arguments.device, jobs, 1, arguments.clients, arguments.jobs)
    figures["on"] = measure(folder, arguments.device, jobs, 8, arguments.clients, arguments.jobs)
    figures["throughput_ratio"] = figures["on"]["jobs_per_s"] / figures["off"]["jobs_per_s"]
    json.dump(figures, sys.stdout, indent=2)
    print()
    if arguments.json:
        Path(arguments.json).write_text(json.dumps(figures, indent=2))


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    main()

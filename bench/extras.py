"""The measurements without a target: Model() construction, the server extension's overhead, memory over many runs."""

from __future__ import annotations

import gc
import json
import os
import subprocess
import sys
import tempfile

import torch
from models import default_checkpoint, tiny_checkpoint
from timing import interleaved_medians

_CONSTRUCTION = """
import json, time, psutil
process = psutil.Process()
started = time.perf_counter()
from ndif_jupyter import Model
imported = time.perf_counter()
before = process.memory_info().rss
model = Model()
built = time.perf_counter()
after_first = process.memory_info().rss
again = Model()
built_again = time.perf_counter()
after_second = process.memory_info().rss
print(json.dumps({
    "import_seconds": imported - started, "first_seconds": built - imported, "again_seconds": built_again - built,
    "first_rss_mb": (after_first - before) / 2**20, "again_rss_mb": (after_second - after_first) / 2**20,
    "weights_loaded": model.local_model is not None,
}))
"""


def construction() -> dict:
    """`Model()` of the default model in a fresh process (its checkpoint already cached): time and resident memory."""
    default_checkpoint()
    run = subprocess.run([sys.executable, "-c", _CONSTRUCTION], capture_output=True, text=True, check=True)
    return json.loads(run.stdout.strip().splitlines()[-1])


def server_overhead(rounds: int) -> dict:
    """A small job and a 100 MB result through the server extension on loopback, against the same in the kernel."""
    from ndif_jupyter import Model
    from ndif_testing.jupyter_process import JupyterServerProcess

    folder = tiny_checkpoint("gpt2")
    config = {"NDIFServer": {"models": [folder], "response_path": tempfile.mkdtemp(prefix="bench-responses-")}}
    prompt = "The Eiffel Tower is in the city of"
    model = Model(folder)
    copies = round(100e6 / (len(model.tokenizer(prompt)["input_ids"]) * model.config.n_embd * 4))

    def small(device_map: str):
        def run():
            with model.trace(prompt, device_map=device_map):
                hidden = model.transformer.h[-1].output.save()
            return hidden.value

        return run

    def large(device_map: str):
        def run():
            with model.trace(prompt, device_map=device_map):
                hidden = model.transformer.h[0].output.repeat(copies, 1, 1).save()
            return hidden.value

        return run

    with JupyterServerProcess(config) as server:
        saved = {name: os.environ.get(name) for name in ("NDIF_SERVER_URL", "NDIF_SERVER_TOKEN")}
        os.environ["NDIF_SERVER_URL"] = server.url + "ndif/api/"
        os.environ["NDIF_SERVER_TOKEN"] = server.token
        try:
            assert torch.equal(small("server")(), small("cpu")()), "the server gave other values than the kernel"
            small_medians = interleaved_medians({"kernel": small("cpu"), "server": small("server")}, rounds, 2)
            large_medians = interleaved_medians({"kernel": large("cpu"), "server": large("server")}, 5, 1)
            result_bytes = large("cpu")().numel() * 4
        finally:
            for name, value in saved.items():
                if value is None:
                    os.environ.pop(name, None)
                else:
                    os.environ[name] = value
    extra = large_medians["server"] - large_medians["kernel"]
    return {
        "kernel_ms": small_medians["kernel"] * 1e3,
        "server_ms": small_medians["server"] * 1e3,
        "result_mb": result_bytes / 1e6,
        "large_kernel_ms": large_medians["kernel"] * 1e3,
        "large_server_ms": large_medians["server"] * 1e3,
        "transfer_mb_per_s": result_bytes / 1e6 / extra if extra > 0 else None,
    }


def memory_over_runs(runs: int, device: str) -> dict:
    """Resident memory before and after `runs` consecutive traces on the default model (batch 8x9, every layer
    saved), after 20 warm-up traces; and how many hooks are left on the model."""
    import psutil

    from ndif_jupyter import Model

    model = Model(default_checkpoint())
    ids = torch.randint(3, model.config.vocab_size - 1, (8, 9), generator=torch.Generator().manual_seed(0))

    def trace():
        with model.trace(ids, device_map=device):
            saved = [layer.output.save() for layer in model.model.layers]
        return saved

    process = psutil.Process()
    for _ in range(20):
        trace()
    gc.collect()
    before = process.memory_info().rss
    for _ in range(runs):
        trace()
    gc.collect()
    after = process.memory_info().rss
    hooks = sum(len(m._forward_hooks) + len(m._forward_pre_hooks) for m in model.local_model.modules())
    return {
        "runs": runs,
        "rss_before_mb": before / 2**20,
        "rss_after_mb": after / 2**20,
        "rss_growth_mb": (after - before) / 2**20,
        "hooks_left": hooks,
    }

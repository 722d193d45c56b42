"""Jobs: one request's life (queued, running, done, error, cancelled), kept on disk under the response path."""

from __future__ import annotations

import asyncio
import contextlib
import json
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

JobStatus = Literal["queued", "running", "done", "error", "cancelled"]
FINISHED: frozenset[JobStatus] = frozenset({"done", "error", "cancelled"})


@dataclass
class Job:
    """What GET jobs/{id} reports. `phase` says what a running job is doing; `step` of `steps` its forward passes."""

    id: str
    model: str
    kind: str
    steps: int
    owner: str = ""
    status: JobStatus = "queued"
    phase: str = "queued"
    step: int = 0
    created: float = field(default_factory=time.time)
    started: float | None = None
    finished: float | None = None
    result_bytes: int = 0
    error: dict[str, Any] | None = None
    cancel_requested: bool = field(default=False, repr=False)

    def document(self) -> dict[str, Any]:
        """The job as JSON, with its timings in seconds."""
        now = time.time()
        queued_until = self.started or self.finished or now
        return {
            "id": self.id,
            "model": self.model,
            "kind": self.kind,
            "owner": self.owner,
            "status": self.status,
            "phase": self.phase,
            "step": self.step,
            "steps": self.steps,
            "created": self.created,
            "started": self.started,
            "finished": self.finished,
            "queued_seconds": round(queued_until - self.created, 6),
            "run_seconds": round((self.finished or now) - self.started, 6) if self.started else None,
            "result_bytes": self.result_bytes,
            "error": self.error,
        }

    @classmethod
    def from_document(cls, document: dict[str, Any]) -> Job:
        keys = (
            "id",
            "model",
            "kind",
            "steps",
            "owner",
            "status",
            "phase",
            "step",
            "created",
            "started",
            "finished",
            "result_bytes",
            "error",
        )
        return cls(**{key: document[key] for key in keys if key in document})


class JobStore:
    """Every job of this server, each saved as `{id}.json` next to its result `{id}.safetensors`.

    The `keep` most recent finished jobs are kept; older ones are removed, with their results, as new jobs come.

    Worker threads change jobs through `update`; request handlers wait for a change with `wait_for_change`.
    Jobs found on disk at start keep their results; those that had not finished are marked as failed.
    """

    def __init__(self, folder: Path, keep: int = 1000):
        self.folder = folder
        self.keep = keep
        folder.mkdir(parents=True, exist_ok=True)
        self._jobs: dict[str, Job] = {}
        self._lock = threading.Lock()
        self._save_locks: dict[str, threading.Lock] = {}
        self._waiters: dict[str, list[asyncio.Future]] = {}
        self._loop: asyncio.AbstractEventLoop | None = None
        self._load()

    def new(self, model: str, kind: str, steps: int, owner: str) -> Job:
        job = Job(uuid.uuid4().hex, model, kind, steps, owner)
        with self._lock:
            self._jobs[job.id] = job
            finished = sorted((j for j in self._jobs.values() if j.status in FINISHED), key=lambda j: j.created)
        self._save(job)
        for old in finished[: max(0, len(finished) - self.keep)]:
            self.remove(old.id)
        return job

    def get(self, job_id: str) -> Job | None:
        with self._lock:
            return self._jobs.get(job_id)

    def all(self) -> list[Job]:
        with self._lock:
            return sorted(self._jobs.values(), key=lambda job: job.created)

    def update(self, job: Job, **changes: Any) -> None:
        """Change a job (from any thread), save it, and wake whoever waits on it, even when saving fails."""
        with self._lock:
            for key, value in changes.items():
                setattr(job, key, value)
        try:
            if changes.keys() - {"step"} or job.step in (1, job.steps):
                self._save(job)
        finally:
            loop = self._loop
            if loop is not None and not loop.is_closed():
                loop.call_soon_threadsafe(self._wake, job.id)

    def remove(self, job_id: str) -> None:
        with self._lock:
            self._jobs.pop(job_id, None)
            self._save_locks.pop(job_id, None)
        for path in (self.record_path(job_id), self.result_path(job_id)):
            path.unlink(missing_ok=True)

    def result_path(self, job_id: str) -> Path:
        return self.folder / f"{job_id}.safetensors"

    def record_path(self, job_id: str) -> Path:
        return self.folder / f"{job_id}.json"

    async def wait_for_change(self, job: Job, timeout: float, until_finished: bool = False) -> None:
        """Return when `job` changes (or, with `until_finished`, finishes), or after `timeout` seconds.

        Call on the server's event loop.
        """
        self._loop = asyncio.get_running_loop()
        deadline = self._loop.time() + timeout
        while job.status not in FINISHED and self._loop.time() < deadline:
            future = self._loop.create_future()
            self._waiters.setdefault(job.id, []).append(future)
            try:
                await asyncio.wait_for(asyncio.shield(future), deadline - self._loop.time())
            except asyncio.TimeoutError:
                return
            finally:
                waiters = self._waiters.get(job.id, [])
                if future in waiters:
                    waiters.remove(future)
            if not until_finished:
                return

    def bind_loop(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop

    def _wake(self, job_id: str) -> None:
        for future in self._waiters.pop(job_id, []):
            if not future.done():
                future.set_result(None)

    def _save(self, job: Job) -> None:
        """Write the job's record whole: saves of one job run one at a time, each writing the state as it starts.

        One save at a time per job is what lets every save of it use the same temporary file.
        """
        with self._lock:
            save_lock = self._save_locks.setdefault(job.id, threading.Lock())
        with save_lock:
            with self._lock:
                document = job.document()
            path = self.record_path(job.id)
            partial = path.with_name(path.name + ".partial")
            try:
                partial.write_text(json.dumps(document))
                partial.replace(path)
            except BaseException:
                with contextlib.suppress(OSError):
                    partial.unlink(missing_ok=True)
                raise

    def _load(self) -> None:
        for path in self.folder.glob("*.json"):
            try:
                job = Job.from_document(json.loads(path.read_text()))
            except (ValueError, TypeError, KeyError):
                continue
            if job.status not in FINISHED:
                job.status, job.phase, job.finished = "error", "stopped", time.time()
                job.error = {"type": "ServerStopped", "message": "the server stopped before the job finished"}
                self._save(job)
            self._jobs[job.id] = job

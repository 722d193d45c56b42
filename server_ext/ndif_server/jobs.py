"""Jobs: one request's life (queued, running, done, error, cancelled), kept on disk under the response path."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import secrets
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

JobStatus = Literal["queued", "running", "done", "error", "cancelled"]
FINISHED: frozenset[JobStatus] = frozenset({"done", "error", "cancelled"})
# What a finished job keeps whatever a late update says: its outcome and its timings.
OUTCOME_FIELDS = frozenset({"status", "phase", "step", "result_bytes", "error", "started", "finished"})


class StoreUnavailable(Exception):
    """Job records cannot be written or removed: the response folder is read-only, missing or full.

    `reason` is the error's type and cause, never a path; the message says what to do.
    """

    def __init__(self, action: str, error: OSError):
        self.reason = os_error_reason(error)
        self.message = store_unavailable_message(action, self.reason)
        super().__init__(self.message)


def os_error_reason(error: OSError) -> str:
    """An OSError's type and cause without the file names it carries, e.g. "PermissionError: permission denied"."""
    cause = error.strerror or "the file system refused"
    return f"{type(error).__name__}: {cause[:1].lower()}{cause[1:]}"


def store_unavailable_message(action: str, reason: str) -> str:
    return f"the server cannot {action} job records ({reason}); try again later or tell the server's administrator"


@dataclass
class Job:
    """What GET jobs/{id} reports. `phase` says what a running job is doing; `step` of `steps` its forward passes;
    `prompt` (the first words of its first prompt) and `origin` (the notebook and cell that sent it) tell it apart."""

    id: str
    model: str
    kind: str
    steps: int
    owner: str = ""
    client: str = ""
    status: JobStatus = "queued"
    phase: str = "queued"
    step: int = 0
    created: float = field(default_factory=time.time)
    started: float | None = None
    finished: float | None = None
    result_bytes: int = 0
    error: dict[str, Any] | None = None
    cost: dict[str, int] | None = None
    expired: bool = False
    batch: int = 0
    prompt: str = ""
    origin: dict[str, str] | None = None
    cancel_requested: bool = field(default=False, repr=False)

    def capped_step(self, step: int) -> int:
        """A forward pass of the job's run as the job's step: no further than its own steps (a batch runs as long as
        its longest job)."""
        return min(step, max(self.steps, 1))

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
            "expired": self.expired,
            "error": self.error,
            "cost": self.cost,
            "batch": self.batch,
            "prompt": self.prompt,
            "origin": self.origin,
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
            "expired",
            "phase",
            "step",
            "created",
            "started",
            "finished",
            "result_bytes",
            "error",
            "cost",
            "batch",
            "prompt",
            "origin",
        )
        return cls(**{key: document[key] for key in keys if key in document})


class JobStore:
    """Every job of this server, each saved as `{id}.json` next to its result `{id}.safetensors`.

    The `keep` most recent finished jobs are kept; older ones are removed, with their results, as new jobs come. Each
    owner's results together stay within `keep_bytes_per_owner`: when a new one passes it, the owner's oldest results
    are removed (their jobs stay, marked `expired`).

    Worker threads change jobs through `update`, which saves the record at every change; request handlers wait for a
    change with `wait_for_change`. When a record cannot be saved, a new job is refused (`StoreUnavailable`) and a
    running one fails and is asked to stop, so that no job stays "running" for ever.
    Jobs found on disk at start keep their results; those that had not finished are marked as failed.
    """

    def __init__(self, folder: Path, keep: int = 1000, log: Any = None, keep_bytes_per_owner: int | None = None):
        self.folder = folder
        self.keep = keep
        self.keep_bytes_per_owner = keep_bytes_per_owner
        self.log = log if log is not None else logging.getLogger("ndif_server")
        self._jobs: dict[str, Job] = {}
        self._lock = threading.Lock()
        self._save_locks: dict[str, threading.Lock] = {}
        self._unsaved: set[str] = set()
        self._waiters: dict[str, list[asyncio.Future]] = {}
        self._loop: asyncio.AbstractEventLoop | None = None
        try:
            folder.mkdir(parents=True, exist_ok=True)
        except OSError as error:
            self.log.error(
                "ndif: the response folder %s cannot be made (%r); no job can run until it can", folder, error
            )
        self._load()

    def new(
        self,
        model: str,
        kind: str,
        steps: int,
        owner: str,
        cost: dict[str, int] | None = None,
        client: str = "",
        prompt: str = "",
        origin: dict[str, str] | None = None,
    ) -> Job:
        """A queued job with an unguessable id (128 random bits), saved; StoreUnavailable when its record cannot be
        written (then no job was made)."""
        job = Job(secrets.token_hex(16), model, kind, steps, owner, client, cost=cost, prompt=prompt, origin=origin)
        with self._lock:
            self._jobs[job.id] = job
            finished = sorted((j for j in self._jobs.values() if j.status in FINISHED), key=lambda j: j.created)
        try:
            self._save(job)
        except OSError as error:
            self._forget(job.id)
            self.log.error(
                "ndif: a new job's record cannot be written in %s (%r); the job is refused", self.folder, error
            )
            raise StoreUnavailable("write", error) from error
        self._save_unsaved()
        for old in finished[: max(0, len(finished) - self.keep)]:
            try:
                self.remove(old.id)
            except StoreUnavailable:
                break
        return job

    def get(self, job_id: str) -> Job | None:
        with self._lock:
            return self._jobs.get(job_id)

    def all(self) -> list[Job]:
        with self._lock:
            return sorted(self._jobs.values(), key=lambda job: job.created)

    def update(self, job: Job, **changes: Any) -> None:
        """Change a job (from any thread), save it, and wake whoever waits on it, even when saving fails.

        A finished job keeps its outcome: changes of its `OUTCOME_FIELDS` are ignored. When the record cannot be
        saved, a job that is not finished fails (StoreUnavailable) and is asked to stop; nothing is raised.
        """
        with self._lock:
            if job.status in FINISHED and changes.keys() & OUTCOME_FIELDS:
                self.log.debug("ndif job %s is %s already; ignoring %s", job.id, job.status, changes)
                changes = {key: value for key, value in changes.items() if key not in OUTCOME_FIELDS}
            for key, value in changes.items():
                setattr(job, key, value)
            stale = job.id in self._unsaved
        try:
            if changes or stale:
                self._save(job)
        except OSError as error:
            self._fail_unsaved(job, error)
        finally:
            loop = self._loop
            if loop is not None and not loop.is_closed():
                loop.call_soon_threadsafe(self._wake, job.id)
        if changes.get("status") == "done" and job.status == "done":
            self._expire_results(job.owner)

    def stored_bytes(self, owner: str) -> int:
        """The bytes of the results kept for `owner`."""
        with self._lock:
            return sum(job.result_bytes for job in self._jobs.values() if _holds_result(job, owner))

    def _expire_results(self, owner: str) -> None:
        """Remove `owner`'s oldest results until the rest fit in `keep_bytes_per_owner`; their jobs stay, expired."""
        if self.keep_bytes_per_owner is None:
            return
        with self._lock:
            held = [job for job in self._jobs.values() if _holds_result(job, owner)]
        held.sort(key=lambda job: job.finished or 0)
        total = sum(job.result_bytes for job in held)
        for job in held[:-1]:
            if total <= self.keep_bytes_per_owner:
                break
            try:
                self.result_path(job.id).unlink(missing_ok=True)
            except OSError as error:
                self.log.error("ndif job %s: its expired result cannot be removed (%r)", job.id, error)
                break
            total -= job.result_bytes
            self.update(job, expired=True)
            self.log.info("ndif job %s: its result expired (%s holds more than the limit per user)", job.id, owner)

    def remove(self, job_id: str) -> None:
        """Remove a job, its record, its result and any partial file of it; StoreUnavailable when a file cannot be
        removed (then the job is kept, to be removed again later)."""
        try:
            for path in self._files_of(job_id):
                path.unlink(missing_ok=True)
        except OSError as error:
            self.log.error("ndif job %s: its files cannot be removed from %s (%r)", job_id, self.folder, error)
            raise StoreUnavailable("remove", error) from error
        self._forget(job_id)

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

    def _files_of(self, job_id: str) -> list[Path]:
        record, result = self.record_path(job_id), self.result_path(job_id)
        return [record, result, _partial(record), _partial(result)]

    def _forget(self, job_id: str) -> None:
        with self._lock:
            self._jobs.pop(job_id, None)
            self._save_locks.pop(job_id, None)
            self._unsaved.discard(job_id)

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
            partial = _partial(path)
            try:
                partial.write_text(json.dumps(document))
                partial.replace(path)
            except BaseException:
                with contextlib.suppress(OSError):
                    partial.unlink(missing_ok=True)
                raise
            with self._lock:
                saved_again = job.id in self._unsaved
                self._unsaved.discard(job.id)
        if saved_again:
            self.log.info("ndif job %s: its record is saved again", job.id)

    def _save_unsaved(self) -> None:
        """Save the records that could not be saved before, now that saving works again."""
        with self._lock:
            unsaved = [self._jobs[job_id] for job_id in self._unsaved if job_id in self._jobs]
        for job in unsaved:
            with contextlib.suppress(OSError):
                self._save(job)

    def _fail_unsaved(self, job: Job, error: OSError) -> None:
        """After a failed save: fail the job if it is not finished, and ask it to stop; log once until it saves."""
        with self._lock:
            first = job.id not in self._unsaved
            self._unsaved.add(job.id)
            failing = job.status not in FINISHED
            if failing:
                job.error = {
                    "type": "StoreUnavailable",
                    "message": store_unavailable_message("write", os_error_reason(error)),
                    "hint": None,
                    "source": None,
                    "phase": job.phase,
                }
                job.status, job.phase, job.finished = "error", "failed", time.time()
                job.cancel_requested = True
        if first:
            outcome = "fails and is asked to stop" if failing else f"stays {job.status}"
            self.log.error(
                "ndif job %s: its record cannot be saved in %s (%r); the job %s", job.id, self.folder, error, outcome
            )

    def _load(self) -> None:
        for partial in self.folder.glob("*.partial"):
            try:
                partial.unlink()
            except OSError as error:
                self.log.warning("ndif: a partial file left by an earlier server cannot be removed (%r)", error)
        for path in self.folder.glob("*.json"):
            try:
                job = Job.from_document(json.loads(path.read_text()))
            except (OSError, ValueError, TypeError, KeyError):
                continue
            if job.status not in FINISHED:
                _mark_restarted(job)
                try:
                    self._save(job)
                except OSError as error:
                    self.log.error("ndif job %s: its record cannot be marked as stopped (%r)", job.id, error)
            self._jobs[job.id] = job


def _mark_restarted(job: Job) -> None:
    """A job that was queued or running when the server stopped: failed, with the step it had reached."""
    passes = "forward pass" if job.steps == 1 else "forward passes"
    job.error = {
        "type": "ServerRestarted",
        "message": (
            f"the server restarted before the job finished (it had run {job.step} of {job.steps} {passes}); "
            "run the block again"
        ),
        "hint": None,
        "source": None,
        "phase": job.phase,
    }
    job.status, job.phase, job.finished = "error", "stopped", time.time()


def _holds_result(job: Job, owner: str) -> bool:
    return job.owner == owner and job.status == "done" and not job.expired


def _partial(path: Path) -> Path:
    return path.with_name(path.name + ".partial")

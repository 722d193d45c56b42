"""The job store and the local backend's worker under faults: concurrent saves of one job, a job whose record
cannot be written, a folder that cannot be written or emptied, and the jobs a stopped server left unfinished."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import shutil
import threading
import time
from pathlib import Path

import pytest

from ndif_jupyter.protocol.limits import Limits
from ndif_server.backends.local import LocalBackend
from ndif_server.jobs import FINISHED, JobStore, StoreUnavailable

pytestmark = pytest.mark.server


def test_concurrent_updates_of_one_job_all_save_and_leave_its_latest_state(tmp_path):
    store = JobStore(tmp_path / "jobs")
    job = store.new("m", "trace", 1_000_000, "u")
    errors: list[BaseException] = []
    start = threading.Barrier(3, timeout=10)

    def updates(name: str, count: int) -> None:
        start.wait()
        try:
            for step in range(count):
                store.update(job, step=step, phase=f"{name} {step}")
                if step % 100 == 0:
                    store.update(job, status="running")
        except BaseException as error:
            errors.append(error)

    threads = [threading.Thread(target=updates, args=(f"worker {index}", 2_000)) for index in range(2)]
    began = time.monotonic()
    for thread in threads:
        thread.start()
    start.wait()
    for thread in threads:
        thread.join(timeout=60)
    assert not any(thread.is_alive() for thread in threads), "the updates finished in time"
    assert not errors, f"{len(errors)} updates failed, the first: {errors[:1]!r}"
    assert time.monotonic() - began < 60
    fields = ("status", "phase", "step", "finished")
    saved = json.loads(store.record_path(job.id).read_text())
    assert {key: saved[key] for key in fields} == {key: job.document()[key] for key in fields}, (
        "the last save holds the last update"
    )

    store.update(job, status="cancelled", phase="cancelled", step=7, finished=time.time())
    saved = json.loads(store.record_path(job.id).read_text())
    assert {key: saved[key] for key in fields} == {key: job.document()[key] for key in fields}
    assert sorted(path.name for path in store.folder.iterdir()) == [f"{job.id}.json"], "no temporary files left"


def test_of_two_racing_saves_the_file_keeps_the_later_update(tmp_path):
    store = JobStore(tmp_path / "jobs")
    job = store.new("m", "trace", 10, "u")
    rounds = 300
    barrier = threading.Barrier(3, timeout=10)
    errors: list[BaseException] = []

    def updates(name: str) -> None:
        try:
            for index in range(rounds):
                barrier.wait()
                store.update(job, phase=f"{name} {index}")
                barrier.wait()
        except BaseException as error:
            errors.append(error)
            barrier.abort()

    threads = [threading.Thread(target=updates, args=(f"worker {index}",)) for index in range(2)]
    for thread in threads:
        thread.start()
    try:
        for index in range(rounds):
            barrier.wait()
            barrier.wait()
            saved = json.loads(store.record_path(job.id).read_text())
            assert saved["phase"] == job.phase, f"round {index}: an earlier state overwrote a later one"
    except BaseException:
        barrier.abort()
        raise
    finally:
        for thread in threads:
            thread.join(timeout=10)
    assert not errors, f"{len(errors)} updates failed, the first: {errors[:1]!r}"


def test_a_job_whose_record_cannot_be_written_fails_and_is_logged(tmp_path, caplog):
    store = JobStore(tmp_path / "jobs")
    log = logging.getLogger("ndif-test-local-backend")
    limits = Limits(max_result_bytes=1_000_000)
    backend = LocalBackend(["no-such-model"], store, device_map="cpu", limits=limits, log=log)
    try:
        job = store.new("no-such-model", "trace", 1, "u")
        shutil.rmtree(store.folder)
        store.folder.write_text("not a folder")
        with caplog.at_level(logging.ERROR, logger=log.name):
            backend.submit(job, graph=None)
            deadline = time.monotonic() + 10
            while (job.status not in FINISHED or backend.running) and time.monotonic() < deadline:
                time.sleep(0.01)
        assert job.status == "error", f"the job ended {job.status!r} ({job.phase!r})"
        assert job.error and job.error["message"] and job.finished is not None
        assert any(record.levelno == logging.ERROR and job.id in record.getMessage() for record in caplog.records), (
            "the failure is logged"
        )
        assert store.get(job.id).status == "error"
    finally:
        backend.shutdown()


@contextlib.contextmanager
def replaced_by_a_file(folder: Path):
    """The folder moved aside and a plain file in its place for the time of the block: nothing can be written in it
    or removed from it, whoever runs the test."""
    aside = folder.with_name(folder.name + ".aside")
    folder.rename(aside)
    folder.write_text("not a folder")
    try:
        yield
    finally:
        folder.unlink()
        aside.rename(folder)


def saved(store: JobStore, job_id: str) -> dict:
    return json.loads(store.record_path(job_id).read_text())


def test_a_failed_save_fails_the_running_job_wakes_its_waiter_and_asks_it_to_stop(tmp_path, caplog):
    store = JobStore(tmp_path / "jobs", log=logging.getLogger("ndif-test-store"))
    job = store.new("m", "generate", 50, "u")
    store.update(job, status="running", phase="running", started=time.time(), step=3)

    async def wait_while_the_save_fails() -> float:
        store.bind_loop(asyncio.get_running_loop())
        began = time.monotonic()
        waiting = asyncio.create_task(store.wait_for_change(job, timeout=10, until_finished=True))
        await asyncio.sleep(0.05)
        await asyncio.to_thread(store.update, job, step=4)
        await waiting
        return time.monotonic() - began

    with replaced_by_a_file(store.folder), caplog.at_level(logging.DEBUG, logger="ndif-test-store"):
        waited = asyncio.run(wait_while_the_save_fails())
        store.update(job, step=5)
        store.update(job, status="cancelled", phase="cancelled", finished=time.time())
    assert waited < 5, "the waiter was woken by the failed save"
    assert (job.status, job.phase, job.step, job.cancel_requested) == ("error", "failed", 4, True)
    assert job.error is not None and job.finished is not None
    assert job.error["type"] == "StoreUnavailable" and job.error["phase"] == "running"
    assert job.error["message"].startswith("the server cannot write job records (NotADirectoryError: not a directory)")
    assert str(tmp_path) not in job.error["message"]
    failures = [record for record in caplog.records if record.levelno == logging.ERROR and job.id in record.message]
    assert len(failures) == 1, "a job's failing saves are logged once"
    assert saved(store, job.id)["status"] == "running", "the record kept its last saved state"

    store.update(job, phase="late")
    assert saved(store, job.id)["status"] == "error", "the first save that works writes the failed job"
    assert saved(store, job.id)["error"]["type"] == "StoreUnavailable"


def test_a_finished_job_keeps_its_outcome_whatever_a_late_update_says(tmp_path):
    store = JobStore(tmp_path / "jobs")
    job = store.new("m", "generate", 10, "u")
    store.update(job, status="running", phase="running", step=4)
    finished = time.time()
    store.update(job, status="cancelled", phase="cancelled", finished=finished)
    store.update(job, status="done", phase="done", step=10, result_bytes=99, finished=finished + 5, error={"x": 1})
    expected = {"status": "cancelled", "phase": "cancelled", "step": 4, "result_bytes": 0, "finished": finished}
    assert {key: job.document()[key] for key in expected} == expected
    assert job.error is None
    assert {key: saved(store, job.id)[key] for key in expected} == expected


def test_every_step_is_saved(tmp_path):
    store = JobStore(tmp_path / "jobs")
    job = store.new("m", "generate", 100, "u")
    store.update(job, status="running", phase="running")
    for step in range(1, 8):
        store.update(job, step=step)
        assert saved(store, job.id)["step"] == step


def test_a_new_job_is_refused_without_a_trace_when_its_record_cannot_be_written(tmp_path):
    store = JobStore(tmp_path / "jobs")
    with replaced_by_a_file(store.folder), pytest.raises(StoreUnavailable) as refused:
        store.new("m", "trace", 1, "u")
    assert refused.value.reason == "NotADirectoryError: not a directory"
    assert str(refused.value) == (
        "the server cannot write job records (NotADirectoryError: not a directory); "
        "try again later or tell the server's administrator"
    )
    assert store.all() == [], "the refused job is not kept"
    assert list(store.folder.iterdir()) == []
    job = store.new("m", "trace", 1, "u")
    assert [j.id for j in store.all()] == [job.id] and saved(store, job.id)["status"] == "queued"


def test_remove_deletes_record_result_and_partial_files_or_keeps_the_job(tmp_path):
    store = JobStore(tmp_path / "jobs")
    job = store.new("m", "trace", 1, "u")
    store.result_path(job.id).write_bytes(b"result")
    store.update(job, status="done", phase="done", finished=time.time(), result_bytes=6)
    for leftover in (f"{job.id}.json.partial", f"{job.id}.safetensors.partial"):
        (store.folder / leftover).write_text("left over")
    other = store.new("m", "trace", 1, "u")
    with replaced_by_a_file(store.folder), pytest.raises(StoreUnavailable) as refused:
        store.remove(job.id)
    assert str(refused.value).startswith("the server cannot remove job records (NotADirectoryError")
    assert store.get(job.id) is job, "a job whose files stay is kept, to be removed again"
    store.remove(job.id)
    assert store.get(job.id) is None
    assert sorted(path.name for path in store.folder.iterdir()) == [f"{other.id}.json"]


def test_at_start_unfinished_jobs_are_marked_restarted_at_their_step_and_partial_files_go(tmp_path):
    first = JobStore(tmp_path / "jobs")
    running = first.new("m", "generate", 50, "u")
    first.update(running, status="running", phase="running", started=time.time())
    for step in range(1, 8):
        first.update(running, step=step)
    queued = first.new("m", "trace", 1, "u")
    done = first.new("m", "trace", 1, "u")
    first.update(done, status="done", phase="done", finished=time.time())
    (first.folder / f"{done.id}.safetensors.partial").write_text("left over")
    (first.folder / f"{running.id}.json.partial").write_text("left over")

    later = JobStore(first.folder)
    restarted = later.get(running.id)
    assert restarted is not None and restarted.error is not None
    assert (restarted.status, restarted.phase, restarted.step) == ("error", "stopped", 7)
    assert restarted.error["type"] == "ServerRestarted"
    assert restarted.error["message"] == (
        "the server restarted before the job finished (it had run 7 of 50 forward passes); run the block again"
    )
    assert saved(later, running.id)["error"] == restarted.error and saved(later, running.id)["step"] == 7
    never_ran = later.get(queued.id)
    assert never_ran is not None and never_ran.error is not None
    assert never_ran.status == "error" and "it had run 0 of 1 forward pass)" in never_ran.error["message"]
    assert later.get(done.id).status == "done" and later.get(done.id).error is None
    assert not list(later.folder.glob("*.partial"))


def test_a_jobs_prompt_and_origin_are_kept_across_a_restart(tmp_path):
    first = JobStore(tmp_path / "jobs")
    origin = {"notebook": "work/a.ipynb", "cell": "c-1"}
    job = first.new("m", "trace", 1, "u", prompt="The Eiffel Tower is in", origin=origin)
    first.update(job, status="done", phase="done", finished=time.time())
    plain = first.new("m", "trace", 1, "u")
    later = JobStore(first.folder)
    assert later.get(job.id).document()["prompt"] == "The Eiffel Tower is in"
    assert later.get(job.id).document()["origin"] == origin
    assert (later.get(plain.id).prompt, later.get(plain.id).origin) == ("", None)


def test_at_start_a_mark_that_cannot_be_saved_is_logged_and_the_server_goes_on(tmp_path, caplog):
    first = JobStore(tmp_path / "jobs")
    running = first.new("m", "generate", 50, "u")
    first.update(running, status="running", phase="running", step=2)
    (first.folder / f"{running.id}.json.partial").mkdir()  # a directory in the way of the save

    with caplog.at_level(logging.WARNING, logger="ndif_server"):
        later = JobStore(first.folder)
    restarted = later.get(running.id)
    assert restarted is not None and restarted.error is not None
    assert restarted.status == "error" and restarted.error["type"] == "ServerRestarted"
    assert saved(later, running.id)["status"] == "running", "the record could not be changed"
    assert any(record.levelno == logging.ERROR and running.id in record.message for record in caplog.records)

"""The job store and the local backend's worker under faults: concurrent saves of one job, and a job whose record
cannot be written."""

from __future__ import annotations

import json
import logging
import shutil
import threading
import time

import pytest

from ndif_server.backends.local import LocalBackend
from ndif_server.jobs import FINISHED, JobStore

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
    backend = LocalBackend(["no-such-model"], store, device_map="cpu", max_result_bytes=1_000_000, log=log)
    try:
        job = store.new("no-such-model", "trace", 1, "u")
        shutil.rmtree(store.folder)
        store.folder.write_text("not a folder")
        with caplog.at_level(logging.ERROR, logger=log.name):
            backend.submit(job, graph=None)
            deadline = time.monotonic() + 10
            while job.status not in FINISHED and time.monotonic() < deadline:
                time.sleep(0.01)
            backend._workers[job.model].submit(lambda: None).result(timeout=10)
        assert job.status == "error", f"the job ended {job.status!r} ({job.phase!r})"
        assert job.error and job.error["message"] and job.finished is not None
        assert any(record.levelno == logging.ERROR and job.id in record.getMessage() for record in caplog.records), (
            "the failure is logged"
        )
        assert store.get(job.id).status == "error"
    finally:
        backend.shutdown()

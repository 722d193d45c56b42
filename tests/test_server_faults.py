"""A real `jupyter server` with the extension under faults: a response folder that turns read-only, a restart in the
middle of a job, and a kernel's client that loses its server while it waits."""

from __future__ import annotations

import contextlib
import json
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from ndif_jupyter import Model
from ndif_jupyter.client import ServerClient
from ndif_jupyter.errors import NDIFError
from ndif_jupyter.protocol.request import encode_request
from ndif_testing.jupyter_process import FileModeBoundServerProcess, JupyterServerProcess
from ndif_testing.tiny_models import build_llama

pytestmark = [pytest.mark.server, pytest.mark.slow]

PROMPT = "The Eiffel Tower is in the city of"
LONG = 2000  # new tokens: a job that runs for many seconds on the tiny Llama, long past any step a test waits for
GRACE_SECONDS = 1  # a server stopping with a job running waits for it; the tests need not
OTHER_EXTENSIONS = ("jupyterlab", "jupyter_lsp", "jupyter_server_terminals", "notebook_shim")


class Recorded(Exception):
    """Leaves a block once its graph is taken, so that the graph is only sent, never run in the test."""


@pytest.fixture(scope="module")
def long_llama_dir(tmp_path_factory) -> Path:
    """The tiny Llama with room for long generations: its rotary positions need no table, only a larger bound."""
    folder = build_llama(tmp_path_factory.mktemp("tiny-long-llama"))
    config = json.loads((folder / "config.json").read_text())
    config["max_position_embeddings"] = 8 * LONG
    (folder / "config.json").write_text(json.dumps(config))
    return folder


@pytest.fixture(scope="module")
def llama_model(long_llama_dir) -> Model:
    return Model(str(long_llama_dir))


@pytest.fixture(scope="module")
def faults_process(long_llama_dir, tmp_path_factory):
    """A server serving the tiny Llama, bound by file modes, its responses in a folder the tests can turn read-only."""
    settings = {
        "models": [str(long_llama_dir)],
        "response_path": str(tmp_path_factory.mktemp("responses")),
        "max_new_tokens": 4 * LONG,
    }
    config = {"ServerApp": {"jpserver_extensions": dict.fromkeys(OTHER_EXTENSIONS, False)}, "NDIFServer": settings}
    with FileModeBoundServerProcess(config) as process:
        yield process


@pytest.fixture
def faults_server(faults_process):
    """The module's server, started again if a test before ended it."""
    if faults_process.process.poll() is not None:
        faults_process.restart()
    return faults_process


def responses(process: JupyterServerProcess) -> Path:
    return Path(process.config["NDIFServer"]["response_path"])


def generation(model: Model, new_tokens: int):
    with pytest.raises(Recorded):
        with model.generate(max_new_tokens=new_tokens) as block:
            with block.invoke(PROMPT):
                model.model.layers[0].output.save()
            graph = block.graph()
            raise Recorded
    return graph


def call(process: JupyterServerProcess, method: str, path: str, body: bytes | None = None) -> tuple[int, bytes]:
    """The status and body of one API call, error statuses included."""
    request = urllib.request.Request(process.url + "ndif/api/" + path, data=body, method=method)
    request.add_header("Authorization", f"token {process.token}")
    try:
        with urllib.request.urlopen(request, timeout=60) as answer:
            return answer.status, answer.read()
    except urllib.error.HTTPError as error:
        return error.code, error.read()


def post(process: JupyterServerProcess, model: Model, new_tokens: int) -> dict:
    status, body = call(process, "POST", "jobs", encode_request(generation(model, new_tokens), model.name))
    assert status == 202, body
    return json.loads(body)


def job_when(process: JupyterServerProcess, job_id: str, reached, timeout: float = 60) -> dict:
    """The job once `reached(job)` holds (or it finished), asked with long polls."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        job = process.get(f"ndif/api/jobs/{job_id}?wait=1")
        if reached(job) or job["status"] in ("done", "error", "cancelled"):
            return job
    raise AssertionError(f"job {job_id} did not get there in {timeout} s: {job}")


def finished(process: JupyterServerProcess, job_id: str) -> dict:
    job = job_when(process, job_id, lambda job: False)
    assert job["status"] in ("done", "error", "cancelled"), job
    return job


def running_at(step: int):
    return lambda job: job["status"] == "running" and job["step"] >= step


@contextlib.contextmanager
def read_only(folder: Path):
    """The folder made read-only (0o555) for the time of the block."""
    mode = folder.stat().st_mode
    folder.chmod(0o555)
    try:
        yield
    finally:
        folder.chmod(mode)


def test_a_new_job_gets_503_while_the_response_folder_is_read_only_and_runs_once_it_is_writable(
    faults_server, llama_model
):
    graph = generation(llama_model, 2)
    client = ServerClient(faults_server.url + "ndif/api/", faults_server.token)
    before = [job["id"] for job in faults_server.get("ndif/api/jobs")["jobs"]]
    with read_only(responses(faults_server)):
        status, answer = call(faults_server, "POST", "jobs", encode_request(graph, llama_model.name))
        began = time.monotonic()
        with pytest.raises(NDIFError, match="cannot take requests now: the server cannot write job records"):
            client.run(graph, llama_model.name)
        assert time.monotonic() - began < 5, "a refused job is not sent again"
        assert [job["id"] for job in faults_server.get("ndif/api/jobs")["jobs"]] == before, "no job was kept"
    assert status == 503, answer
    assert len(answer) < 1024
    message = json.loads(answer)["message"]
    assert "cannot write job records (PermissionError: permission denied)" in message
    assert str(responses(faults_server)) not in message and str(faults_server.folder) not in message

    job = post(faults_server, llama_model, 2)
    assert finished(faults_server, job["id"])["status"] == "done"


def test_a_running_job_fails_when_the_response_folder_turns_read_only_and_the_api_still_answers(
    faults_server, llama_model
):
    for new_tokens in (LONG, 2 * LONG):
        job = post(faults_server, llama_model, new_tokens)
        assert job_when(faults_server, job["id"], running_at(2))["status"] == "running"
        with read_only(responses(faults_server)):
            failed = finished(faults_server, job["id"])
            status, listing = call(faults_server, "GET", "jobs")
        if failed["status"] != "done":  # else it finished before the folder turned read-only: again, longer
            break
    assert failed["status"] == "error", failed
    assert failed["phase"] == "failed" and failed["step"] < failed["steps"]
    assert failed["error"]["type"] == "StoreUnavailable"
    assert "cannot write job records (PermissionError: permission denied)" in failed["error"]["message"]
    assert str(responses(faults_server)) not in failed["error"]["message"]
    assert status == 200 and job["id"] in [listed["id"] for listed in json.loads(listing)["jobs"]]

    later = post(faults_server, llama_model, 2)
    assert finished(faults_server, later["id"])["status"] == "done"
    record = json.loads((responses(faults_server) / f"{job['id']}.json").read_text())
    assert record["status"] == "error" and record["error"]["type"] == "StoreUnavailable", (
        "once records can be written again, the failed job's record says so"
    )


def test_delete_removes_a_finished_jobs_record_result_and_partial_files(faults_server, llama_model):
    job = finished(faults_server, post(faults_server, llama_model, 2)["id"])
    assert job["status"] == "done"
    folder = responses(faults_server)
    files = [folder / f"{job['id']}{suffix}" for suffix in (".json", ".safetensors")]
    assert all(path.is_file() for path in files)
    leftovers = [path.with_name(path.name + ".partial") for path in files]
    for path in leftovers:
        path.write_text("left over")

    with read_only(folder):
        refused, answer = call(faults_server, "DELETE", f"jobs/{job['id']}")
    assert refused == 503, answer
    assert len(answer) < 1024 and str(folder) not in json.loads(answer)["message"]
    assert all(path.is_file() for path in files)
    assert call(faults_server, "GET", f"jobs/{job['id']}")[0] == 200, "a job whose files stay is still listed"

    assert call(faults_server, "DELETE", f"jobs/{job['id']}")[0] == 204
    assert not [path.name for path in files + leftovers if path.exists()]
    assert call(faults_server, "GET", f"jobs/{job['id']}")[0] == 404


def run_in_thread(client: ServerClient, graph, model: Model) -> tuple[threading.Thread, dict]:
    """`client.run(graph, ...)` in a thread; `outcome` gets what the run gives ("result") or raises ("error")."""
    outcome: dict = {}

    def run() -> None:
        try:
            outcome["result"] = client.run(graph, model.name)
        except BaseException as error:
            outcome["error"] = error

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread, outcome


def listed_job(process: JupyterServerProcess, reached, thread: threading.Thread, outcome: dict) -> dict:
    """The one job of the server's list for which `reached(job)` holds, once there is one."""
    deadline = time.monotonic() + 60
    while True:
        jobs = [job for job in process.get("ndif/api/jobs")["jobs"] if reached(job)]
        if jobs:
            (job,) = jobs
            return job
        assert time.monotonic() < deadline and thread.is_alive(), outcome
        time.sleep(0.1)


def raised(thread: threading.Thread, outcome: dict) -> BaseException:
    thread.join(timeout=60)
    assert not thread.is_alive(), "the client stopped waiting"
    assert "error" in outcome, outcome
    return outcome["error"]


def test_a_restart_mid_job_fails_the_job_at_its_step_and_the_waiting_clients_hear_of_it(
    faults_server, llama_model, capsys, monkeypatch
):
    """The running job is failed at the step it had reached, and its client, riding out the restart, gets that
    error; the queued job's record is lost in the restart, and its client is told that the job is gone (on the
    progress line, here a terminal's)."""
    monkeypatch.setattr(sys.stdout, "isatty", lambda: True)
    url, graph = faults_server.url + "ndif/api/", generation(llama_model, LONG)
    first = run_in_thread(ServerClient(url, faults_server.token, reconnect_seconds=60), graph, llama_model)
    running = listed_job(faults_server, running_at(5), *first)
    second = run_in_thread(ServerClient(url, faults_server.token, reconnect_seconds=60), graph, llama_model)
    queued = listed_job(faults_server, lambda job: job["status"] == "queued", *second)
    seen = faults_server.get(f"ndif/api/jobs/{running['id']}")
    assert seen["status"] == "running"
    leftover = responses(faults_server) / f"{running['id']}.safetensors.partial"
    leftover.write_text("a result cut short")
    first_process = faults_server.process.pid

    faults_server.stop(GRACE_SECONDS)
    (responses(faults_server) / f"{queued['id']}.json").unlink()
    faults_server.restart()

    assert faults_server.process.pid != first_process
    assert 0 < faults_server.resident_bytes() <= faults_server.peak_resident_bytes()
    after = faults_server.get(f"ndif/api/jobs/{running['id']}")
    assert (after["status"], after["phase"], after["error"]["type"]) == ("error", "stopped", "ServerRestarted")
    assert seen["step"] <= after["step"] < after["steps"] == LONG
    assert not leftover.exists()
    restarted = raised(*first)
    assert isinstance(restarted, NDIFError) and "cannot be reached" not in str(restarted), restarted
    assert (
        "ServerRestarted: the server restarted before the job finished "
        f"(it had run {after['step']} of {LONG} forward passes); run the block again"
    ) in str(restarted)
    gone = raised(*second)
    assert isinstance(gone, NDIFError), gone
    assert f"Job {queued['id']} no longer exists on the ndif server" in str(gone) and "Run the block again" in str(gone)
    assert "connection lost, retrying" in capsys.readouterr().out


def test_a_waiting_client_gives_up_on_a_server_gone_for_good(faults_server, llama_model, capsys, monkeypatch):
    monkeypatch.setattr(sys.stdout, "isatty", lambda: True)
    client = ServerClient(faults_server.url + "ndif/api/", faults_server.token, reconnect_seconds=3)
    waiting = run_in_thread(client, generation(llama_model, LONG), llama_model)
    job = listed_job(faults_server, lambda job: job["status"] == "running", *waiting)
    killed = time.monotonic()
    faults_server.kill()
    error = raised(*waiting)
    gave_up_after = time.monotonic() - killed
    assert isinstance(error, NDIFError), error
    assert f"for 3 s while waiting for job {job['id']}" in str(error), error
    assert f"ServerClient.result('{job['id']}')" in str(error)
    assert 3 <= gave_up_after <= 3 + 15
    assert "connection lost, retrying" in capsys.readouterr().out

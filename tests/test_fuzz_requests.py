"""Fuzzed request bodies against admission, the executor and a real server: every body gets an admission or a short
4xx refusal, an admitted graph runs or ends in a job error within its estimated memory and the time limit, and a
server sent fuzzed bodies answers each with 202 or a short 4xx, finishes every job it took and keeps serving."""

from __future__ import annotations

import json
import re
import time
import traceback
import urllib.error
import urllib.request
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import torch
from hypothesis import HealthCheck, Phase, given, note, settings
from hypothesis import strategies as st

from ndif_jupyter.errors import NDIFError
from ndif_jupyter.execution.guard import RunGuard
from ndif_jupyter.execution.session import run_request
from ndif_jupyter.protocol.admission import Refusal, admit
from ndif_jupyter.protocol.container import CONTENT_TYPE
from ndif_jupyter.protocol.limits import Limits
from ndif_testing.jupyter_process import JupyterServerProcess
from ndif_testing.request_fuzzing import FuzzTarget, describe_body, fuzz_target, request_bodies

LIMITS = Limits(
    max_nodes=200,
    max_new_tokens=8,
    max_batch_size=4,
    max_prompt_tokens=64,
    max_result_bytes=4_000_000,
    max_request_bytes=1_000_000,
    max_memory_bytes=64_000_000,
    max_job_seconds=20,
)
LONGEST_MESSAGE_BYTES = 1024
SUPPRESSED = [HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.filter_too_much]
FINISHED = ("done", "error", "cancelled")


@dataclass
class Outcomes:
    """What the fuzzed requests came to, by class, and the slowest refusal."""

    counts: Counter[str] = field(default_factory=Counter)
    job_errors: Counter[str] = field(default_factory=Counter)
    slowest_refusal: dict[str, Any] = field(default_factory=lambda: {"seconds": 0.0})
    refusal_seconds: list[float] = field(default_factory=list)
    slowest_run_seconds: float = 0.0
    problems: dict[str, dict[str, Any]] = field(default_factory=dict)

    @property
    def total(self) -> int:
        return sum(self.counts.values())

    def refused(self, refusal: Refusal, seconds: float) -> None:
        self.counts[str(refusal.status)] += 1
        self.refusal_seconds.append(seconds)
        if seconds > self.slowest_refusal["seconds"]:
            self.slowest_refusal = {"seconds": seconds, "status": refusal.status, "message": refusal.message}

    def ran(self, error: NDIFError | None, seconds: float) -> None:
        self.counts["admitted-ran-ok" if error is None else "admitted-job-error"] += 1
        if error is not None:
            self.job_errors[type(error).__name__] += 1
        self.slowest_run_seconds = max(self.slowest_run_seconds, seconds)

    def broken(self, error: Exception, body: bytes) -> None:
        """A body that broke the property, kept (the smallest few of each kind) for the report; an exception other
        than a failed check is an outcome of its own."""
        if not isinstance(error, AssertionError):
            self.counts[f"raised-{type(error).__name__}"] += 1
        message = str(error).strip().splitlines()[0] if str(error).strip() else ""
        frames = traceback.extract_tb(error.__traceback__)
        frame = next((f for f in reversed(frames) if "ndif_jupyter" in f.filename), frames[-1])
        where = f"{Path(frame.filename).name}:{frame.lineno}"
        shape = re.sub(r"[0-9]+", "#", re.sub(r"`[^`]*`", "`…`", message))
        kind = f"{type(error).__name__} at {where}: {shape[:120]}"
        problem = self.problems.setdefault(kind, {"count": 0, "smallest": []})
        problem["count"] += 1
        problem["smallest"] = sorted([*problem["smallest"], (len(body), message[:300], describe_body(body, 2000))])[:3]

    def document(self) -> dict[str, Any]:
        return {
            "examples": self.total,
            "counts": dict(self.counts.most_common()),
            "job_errors": dict(self.job_errors.most_common()),
            "slowest_refusal": self.slowest_refusal,
            "refusal_seconds": self.refusal_percentiles(),
            "slowest_run_seconds": self.slowest_run_seconds,
            "limits": LIMITS.__dict__,
            "problems": self.problems,
        }

    def refusal_percentiles(self) -> dict[str, float]:
        ordered = sorted(self.refusal_seconds) or [0.0]
        return {f"p{p}": ordered[min(len(ordered) - 1, len(ordered) * p // 100)] for p in (50, 90, 99, 100)}

    def summary(self) -> str:
        counts = ", ".join(f"{name} {count}" for name, count in self.counts.most_common())
        slowest = self.slowest_refusal
        broken = sum(problem["count"] for problem in self.problems.values())
        return (
            f"{self.total} fuzzed requests: {counts}; slowest refusal {slowest['seconds'] * 1000:.1f} ms "
            f"({slowest.get('status')}); slowest run {self.slowest_run_seconds:.2f} s; {broken} broke the property"
        )

    def assert_every_class_seen(self) -> None:
        """The run met every outcome, so that it cannot pass by refusing (or admitting) everything."""
        assert self.counts["admitted-ran-ok"] >= 0.02 * self.total, self.summary()
        assert self.counts["400"] > 0 and self.counts["413"] > 0, self.summary()


@pytest.fixture(scope="module")
def fuzzing(gpt2_dir, llama_dir) -> tuple[FuzzTarget, dict[str, torch.nn.Module]]:
    """The fuzz target of the tiny GPT-2 and Llama, and each served model with its weights, to run on."""
    target = fuzz_target(gpt2_dir, llama_dir)
    return target, {name: served.loaded.dispatch("cpu") for name, served in target.models.items()}


def check_request(body: bytes, target: FuzzTarget, torch_models: dict[str, torch.nn.Module], outcomes: Outcomes):
    """The property: an admission or a short 4xx refusal; an admitted graph runs or fails as a job, within the
    memory its cost estimated and the server's time limit."""
    started = time.perf_counter()
    try:
        admission = admit(body, target.served, LIMITS, target.names)
    except Refusal as refusal:
        outcomes.refused(refusal, time.perf_counter() - started)
        assert refusal.status in (400, 413), f"a refusal with status {refusal.status}: {refusal.message}"
        assert_short_message(refusal.message)
        return
    guard = RunGuard(seconds=LIMITS.max_job_seconds, max_value_bytes=LIMITS.max_memory_bytes)
    started = time.perf_counter()
    failure: NDIFError | None = None
    try:
        run_request(admission.request, torch_models[admission.model.name], guard=guard)
    except NDIFError as error:
        failure = error
        note(f"the job failed: {type(error).__name__}: {str(error)[:300]}")
    seconds = time.perf_counter() - started
    outcomes.ran(failure, seconds)
    assert guard.peak_bytes <= admission.cost.peak_bytes, (
        f"the run held {guard.peak_bytes} bytes of graph values; its cost estimated at most {admission.cost.peak_bytes}"
    )
    assert seconds <= LIMITS.max_job_seconds, f"the run took {seconds:.1f} s"


def assert_short_message(message: Any) -> None:
    """A refusal's message: text a client can print and a log can write, shorter than 1 KiB."""
    assert isinstance(message, str) and message, f"a refusal without a message: {message!r}"
    try:
        size = len(message.encode())
    except UnicodeEncodeError:
        raise AssertionError(f"a refusal message that is not UTF-8 text: {message[:300]!a}") from None
    assert size < LONGEST_MESSAGE_BYTES, f"a refusal message of {size} bytes: {message[:300]}"


def fuzz_admission(
    target: FuzzTarget, torch_models: dict[str, torch.nn.Module], examples: int, keep_going: bool = False
) -> Outcomes:
    """Check the property on `examples` bodies: the first body that breaks it fails (shrunk by Hypothesis), or,
    `keep_going`, every body is checked and those that break it are kept in the outcomes."""
    outcomes = Outcomes()

    @settings(max_examples=examples, deadline=None, derandomize=True, suppress_health_check=SUPPRESSED)
    @given(body=request_bodies(target, LIMITS))
    def every_body_is_admitted_or_refused(body: bytes) -> None:
        note(describe_body(body))
        if not keep_going:
            check_request(body, target, torch_models, outcomes)
            return
        try:
            check_request(body, target, torch_models, outcomes)
        except Exception as error:
            outcomes.broken(error, body)

    every_body_is_admitted_or_refused()
    return outcomes


def test_admission_of_fuzzed_requests(fuzzing):
    target, torch_models = fuzzing
    outcomes = fuzz_admission(target, torch_models, examples=300)
    print(outcomes.summary())
    outcomes.assert_every_class_seen()


@pytest.mark.slow
def test_admission_of_many_fuzzed_requests(fuzzing, test_output):
    target, torch_models = fuzzing
    outcomes = fuzz_admission(target, torch_models, examples=10_000, keep_going=True)
    (test_output / "fuzz-admission.json").write_text(json.dumps(outcomes.document(), indent=2))
    print(outcomes.summary())
    problems = [
        f"{kind} ({found['count']} bodies), smallest: {found['smallest'][0][2]}"
        for kind, found in outcomes.problems.items()
    ]
    assert not problems, "bodies that break the property:\n" + "\n".join(problems)
    outcomes.assert_every_class_seen()


# ----- a real server -----
def drawn_bodies(strategy: st.SearchStrategy[bytes], count: int) -> list[bytes]:
    """`count` bodies from `strategy`, the same ones on every run."""
    bodies: list[bytes] = []

    @settings(
        max_examples=count,
        database=None,
        derandomize=True,
        phases=[Phase.generate],
        deadline=None,
        suppress_health_check=SUPPRESSED,
    )
    @given(strategy)
    def collect(body: bytes) -> None:
        bodies.append(body)

    collect()
    return bodies


def post_job(server: JupyterServerProcess, body: bytes) -> tuple[int, dict[str, Any], dict[str, str]]:
    """POST a body to `jobs`: the status, the JSON answer and the headers."""
    request = urllib.request.Request(
        server.url + "ndif/api/jobs",
        data=body,
        method="POST",
        headers={"Content-Type": CONTENT_TYPE, "Authorization": f"token {server.token}"},
    )
    try:
        with urllib.request.urlopen(request, timeout=120) as response:
            return response.status, json.loads(response.read()), dict(response.headers)
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read()), dict(error.headers)


def posted_until_not_busy(server: JupyterServerProcess, body: bytes, busy: Counter[str]) -> tuple[int, dict]:
    """POST `body`, waiting and sending it again while the server answers 429 (too many of this user's jobs)."""
    for _ in range(120):
        try:
            status, answer, headers = post_job(server, body)
        except (OSError, ValueError) as error:
            raise AssertionError(f"POST jobs failed: {error!r}; the body was {describe_body(body, 600)}") from error
        if status != 429:
            return status, answer
        busy["429"] += 1
        time.sleep(min(float(headers.get("Retry-After", 1)), 0.5))
    raise AssertionError(f"the server stayed busy (429) for two minutes; the body was {describe_body(body, 600)}")


def finished_job(server: JupyterServerProcess, job_id: str, seconds: float) -> dict[str, Any]:
    deadline = time.monotonic() + seconds
    job: dict[str, Any] = {}
    while time.monotonic() < deadline:
        job = server.get(f"ndif/api/jobs/{job_id}?wait=5&until=finished")
        if job["status"] in FINISHED:
            return job
    raise AssertionError(f"job {job_id} did not finish in {seconds:.0f} s: {job}")


@pytest.mark.server
@pytest.mark.slow
def test_a_real_server_keeps_serving_under_fuzzed_requests(gpt2_dir, tmp_path, test_output):
    target = fuzz_target(gpt2_dir)
    oversized = target.captured[0].body + bytes(LIMITS.max_request_bytes)
    bodies = [*drawn_bodies(request_bodies(target, LIMITS), 200), oversized]
    settings_of_limits = {name: getattr(LIMITS, name) for name in LIMITS.__dataclass_fields__}
    config = {
        "ServerApp": {"jpserver_extensions": {"ndif_server": True}},
        "NDIFServer": {
            "models": [str(gpt2_dir)],
            "response_path": str(tmp_path / "responses"),
            "device_map": "cpu",
            "max_queued_jobs": 8,
            "max_queued_per_user": 4,
            **settings_of_limits,
        },
    }
    answers: Counter[str] = Counter()
    jobs: list[str] = []
    started = time.monotonic()
    with JupyterServerProcess(config) as server:
        for body in bodies:
            status, answer = posted_until_not_busy(server, body, answers)
            answers[str(status)] += 1
            where = describe_body(body, 600)
            assert status == 202 or 400 <= status < 500, f"answered {status} {answer}; the body was {where}"
            if status == 202:
                jobs.append(answer["id"])
                continue
            try:
                assert_short_message(answer.get("message"))
            except AssertionError as error:
                raise AssertionError(f"answered {status}: {error}; the body was {where}") from None
        ends = Counter(finished_job(server, job_id, 3 * LIMITS.max_job_seconds)["status"] for job_id in jobs)

        status, answer = posted_until_not_busy(server, target.captured[0].body, Counter())
        assert status == 202, answer
        assert finished_job(server, answer["id"], 120)["status"] == "done"
        peak_resident = server.peak_resident_bytes()
        resident = server.resident_bytes()
    report = {
        "bodies": len(bodies),
        "answers": dict(answers.most_common()),
        "jobs": dict(ends.most_common()),
        "peak_resident_bytes": peak_resident,
        "resident_bytes_at_end": resident,
        "seconds": time.monotonic() - started,
        "limits": config["NDIFServer"],
    }
    (test_output / "fuzz-server.json").write_text(json.dumps(report, indent=2))
    print(
        f"{len(bodies)} fuzzed bodies: answers {dict(answers)}, jobs {dict(ends)}, "
        f"peak resident {peak_resident / 1e6:.0f} MB"
    )
    assert answers["202"] > 0 and answers["400"] > 0 and answers["413"] > 0, report

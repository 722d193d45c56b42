"""A lab group on one JupyterHub: a real hub and proxy on loopback, configured for NDIF only through `configure_hub`,
with the service in front of a real Kernel Gateway, and users alice and bob (and carol, a hub admin) each with a real
single-user server run as their own unix user and a real kernel in it."""

from __future__ import annotations

import http.client
import json
import os
import subprocess
import time
import uuid
from pathlib import Path
from urllib.parse import urlparse

import pytest
from conftest import BROWSER_TESTS, CHROMIUM

from ndif_testing.hub_process import (
    JupyterHubProcess,
    descendants,
    ensure_unix_users,
    http_status,
    make_interpreter_reachable,
    missing_hub_parts,
    shared_folder,
)
from ndif_testing.jupyter_process import KernelGatewayProcess, RemoteKernel, free_port
from ndif_testing.tiny_models import build_llama

pytestmark = [pytest.mark.hub, pytest.mark.gateway, pytest.mark.slow]

PROXY = Path(__file__).parent / "hub" / "node_modules" / ".bin" / "configurable-http-proxy"
SERVER_USERS = ["alice", "bob", "carol"]
ADMIN = "carol"  # a hub admin
SCOPE_ADMIN = "dave"  # no hub admin, but holds custom:ndif:admin through configure_hub(admins=...)
QUEUE_CAP = 20
MB = 1024**2
REQUEST_LIMIT = 16 * MB
SLOW_TOKENS = 120


class Lab:
    """The running hub with its users' kernels."""

    def __init__(self, hub: JupyterHubProcess, gateway: KernelGatewayProcess, llama: Path, responses: Path):
        self.hub = hub
        self.gateway = gateway
        self.llama = llama
        self.responses = responses
        self.kernels: dict[str, RemoteKernel] = {}

    def run(self, user: str, code: str, timeout: float = 300) -> str:
        """Run `code` in `user`'s kernel; its stdout (the test fails with the kernel's error, if any)."""
        outcome = self.kernels[user].execute(code, timeout)
        assert outcome.status == "ok", f"{user}'s kernel failed: {outcome.error}\n{outcome.stderr[-3000:]}"
        return outcome.stdout

    def run_json(self, user: str, code: str, timeout: float = 300):
        return json.loads(self.run(user, code, timeout).strip().splitlines()[-1])


@pytest.fixture(scope="module")
def lab():
    missing = missing_hub_parts(PROXY)
    if missing:
        message = "hub test parts missing: " + ", ".join(missing)
        if os.environ.get("NDIF_REQUIRE_HUB") == "1":
            pytest.fail(message)
        pytest.skip(message)
    ensure_unix_users(SERVER_USERS)
    make_interpreter_reachable()
    models = shared_folder("ndif-hub-models-")
    llama = build_llama(models / "tiny-llama")
    for path in models.rglob("*"):
        path.chmod(0o755 if path.is_dir() else 0o644)
    service_folder = shared_folder("ndif-hub-service-")
    service_folder.chmod(0o700)  # the service's results: its own
    responses = service_folder / "responses"
    with KernelGatewayProcess() as gateway:
        hub_config = "\n".join(
            [
                "from ndif_server.hub import configure_hub",
                "configure_hub(",
                "    c,",
                f"    models=[{str(llama)!r}],",
                f"    port={free_port()},",
                f"    admins=[{SCOPE_ADMIN!r}],",
                f"    response_path={str(responses)!r},",
                "    backend='gateway',",
                f"    gateway_url={gateway.url!r},",
                f"    gateway_auth_token={gateway.token!r},",
                "    device_map='cpu',",
                f"    max_queued_per_user={QUEUE_CAP},",
                f"    max_request_bytes={REQUEST_LIMIT},",
                ")",
            ]
        )
        with JupyterHubProcess(hub_config, [*SERVER_USERS, SCOPE_ADMIN], [ADMIN], PROXY) as hub:
            lab = Lab(hub, gateway, llama, responses)
            try:
                for user in SERVER_USERS:
                    lab.kernels[user] = hub.start_server(user).start_kernel()
                for user in SERVER_USERS:
                    lab.run(user, f"from ndif_jupyter import Model\nmodel = Model({str(llama)!r})")
                yield lab
            except BaseException:
                print(hub.log_text()[-20000:])
                raise
        left = gateway.get("api/kernels")
        assert left == [], f"the service left its kernels on the gateway when the hub stopped it: {left}"


RUN_BOTH_WAYS = """
import json, torch
def run(device_map):
    with model.generate(max_new_tokens=4, device_map=device_map) as generator:
        with generator.invoke("the quick brown fox") as invoker:
            first = model.model.layers[1].output[0].save()
            invoker.next()
            second = model.model.layers[2].mlp.output.save()
        with generator.invoke(["a longer second prompt", "and a third"]):
            norm = model.model.norm.output.save()
    return [first.value, second.value, norm.value], generator.output
server_values, server_ids = run("server")
local_values, local_ids = run("cpu")
print(json.dumps({
    "equal": all(torch.equal(a, b) for a, b in zip(server_values, local_values)) and torch.equal(server_ids, local_ids),
    "url": __import__("os").environ["NDIF_SERVER_URL"],
}))
"""


LIST_MINE = """
import json
from ndif_jupyter.client import ServerClient
print(json.dumps(ServerClient.from_environment().jobs()))
"""


def test_a_users_kernel_runs_on_the_service_with_nothing_set_and_equals_a_local_run(lab):
    outcome = lab.run_json("alice", RUN_BOTH_WAYS)
    assert outcome["url"] == lab.hub.service_api(), "the kernel was told the service's URL by the hub"
    assert outcome["equal"], "the service's values and tokens equal the kernel's own run, bit for bit"
    jobs = lab.run_json("alice", LIST_MINE)
    assert jobs and {job["owner"] for job in jobs} == {"alice"}


SUBMIT = f"""
from ndif_jupyter.client import ServerClient
client = ServerClient.from_environment()
with model.generate(max_new_tokens={SLOW_TOKENS}, device_map="server") as generator:
    with generator.invoke("a slow job"):
        kept = model.model.norm.output.save()
graph = generator.graph()
"""

WAIT_FOR_MINE = """
import time
while [job for job in client.jobs() if job["status"] in ("queued", "running")]:
    time.sleep(0.2)
"""

CALL_AS_USER = """
import json, os, urllib.error, urllib.request
from ndif_jupyter.client import ServerClient
client = ServerClient.from_environment()
def status(method, path):
    url, token = os.environ["NDIF_SERVER_URL"], os.environ["NDIF_SERVER_TOKEN"]
    request = urllib.request.Request(url + path, method=method, headers={"Authorization": f"token {token}"})
    try:
        urllib.request.urlopen(request, timeout=30)
        return 200
    except urllib.error.HTTPError as error:
        return error.code
"""


def test_another_users_job_is_unknown_to_them_and_admins_see_and_cancel_every_job(lab):
    lab.run("alice", SUBMIT)
    alice_jobs = lab.run_json("alice", "print(json.dumps([client.submit(graph, model.name) for _ in range(3)]))")
    assert {job["owner"] for job in alice_jobs} == {"alice"}
    job_id = alice_jobs[-1]["id"]  # waiting behind the other two while bob tries it
    lab.run("bob", CALL_AS_USER)
    bob = lab.run_json(
        "bob",
        f"print(json.dumps({{'job': status('GET', 'jobs/{job_id}'), 'result': status('GET', 'jobs/{job_id}/result'),"
        f" 'cancel': status('DELETE', 'jobs/{job_id}'), 'unknown': status('GET', 'jobs/{'0' * 32}'),"
        f" 'listed': [job['id'] for job in client.jobs()]}}))",
    )
    assert (bob["job"], bob["result"], bob["cancel"]) == (404, 404, 404), "another user's job is as unknown as none"
    assert bob["unknown"] == 404
    assert job_id not in bob["listed"]

    token = lab.hub.token_for(SCOPE_ADMIN, ["access:services!service=ndif", "custom:ndif:admin"])
    status, cancelled = http_status(lab.hub.service_api() + f"jobs/{job_id}", token, "DELETE")
    assert status == 202 and cancelled["owner"] == "alice", "the holder of custom:ndif:admin cancels alice's job"
    lab.run("alice", WAIT_FOR_MINE)
    outcomes = lab.run_json("alice", f"print(json.dumps([client.job(job['id'])['status'] for job in {alice_jobs!r}]))")
    assert outcomes == ["done", "done", "cancelled"], "bob's cancel did nothing; the admin's cancelled the job"

    lab.run("bob", "with model.trace('bob was here', device_map='server'):\n    model.model.norm.output.save()\n")
    admin = lab.run_json("carol", LIST_MINE)
    assert {"alice", "bob"} <= {job["owner"] for job in admin}, "a hub admin sees every user's jobs"
    status, listing = http_status(lab.hub.service_api() + "jobs", token)
    assert status == 200 and {"alice", "bob"} <= {job["owner"] for job in listing["jobs"]}


SCAN = """
import json, os
needle = {reversed!r}[::-1].encode()
control = {control!r}[::-1].encode()
hits, scanned, controls = [], 0, []
if any(needle.decode() in value for value in os.environ.values()):
    hits.append("this kernel's environment")
for pid in os.listdir("/proc"):
    for part in ("environ", "cmdline") if pid.isdigit() else ():
        try:
            data = open(f"/proc/{{pid}}/{{part}}", "rb").read()
        except OSError:
            continue
        scanned += 1
        if needle in data:
            hits.append(f"/proc/{{pid}}/{{part}}")
for top in {roots!r}:
    for folder, folders, names in os.walk(top):
        folders[:] = [name for name in folders if name not in {{"node_modules", ".venv", "site-packages", ".git"}}]
        for name in names:
            path = os.path.join(folder, name)
            try:
                if not os.path.isfile(path) or os.path.getsize(path) > 5_000_000:
                    continue
                data = open(path, "rb").read()
            except OSError:
                continue
            scanned += 1
            if needle in data:
                hits.append(path)
            if control in data:
                controls.append(path)
import urllib.request, urllib.error
try:
    urllib.request.urlopen({gateway!r} + "api/kernels", timeout=10)
    gateway = 200
except urllib.error.HTTPError as error:
    gateway = error.code
print(json.dumps({{"hits": hits, "scanned": scanned, "controls": controls, "gateway": gateway, "uid": os.getuid()}}))
"""


def test_no_kernel_can_read_the_gateways_token(lab):
    control = uuid.uuid4().hex  # planted where any user can read it: the scan must find it
    planted = shared_folder("ndif-scan-control-") / "readable.txt"
    planted.write_text(f"a readable file: {control}")
    planted.chmod(0o644)
    roots = ["/tmp", "/home", "/etc", "/var/tmp", "/dev/shm", "/run", str(lab.hub.folder), str(lab.gateway.folder)]
    roots.append(str(lab.responses))
    code = SCAN.format(reversed=lab.gateway.token[::-1], control=control[::-1], roots=roots, gateway=lab.gateway.url)
    for user in ("alice", "bob"):
        outcome = lab.run_json(user, code, timeout=600)
        assert outcome["uid"] != 0, f"{user}'s kernel runs as {user}, not as root"
        assert outcome["controls"] == [str(planted)], "the scan reads what a user can read"
        assert outcome["scanned"] > 100
        assert outcome["hits"] == [], f"{user}'s kernel can read the gateway's token in {outcome['hits']}"
        assert outcome["gateway"] in (401, 403), "without the token, the gateway refuses a kernel"


def test_requests_without_credentials_or_without_the_services_scope_are_refused(lab):
    api = lab.hub.service_api()
    assert http_status(api + "jobs")[0] == 401
    assert http_status(api + "jobs", "not-a-token")[0] == 401
    narrow = lab.hub.token_for("alice", ["read:users:name!user=alice"])
    status, body = http_status(api + "jobs", narrow)
    assert status == 403 and "access:services!service=ndif" in body["message"]


def test_a_users_server_shows_the_services_models_and_only_their_own_jobs(lab):
    server = lab.hub.start_server("bob")  # already running: the same server
    models = server.get("ndif/api/models")
    assert [model["name"] for model in models["models"]] == [str(lab.llama)]
    assert models["user"] == {"name": "bob", "admin": False}
    assert {job["owner"] for job in server.get("ndif/api/jobs")["jobs"]} <= {"bob"}


ADMIN_WAITS_FOR_ALL = """
import json, time
from ndif_jupyter.client import ServerClient
admin = ServerClient.from_environment()
while [job for job in admin.jobs() if job["status"] in ("queued", "running")]:
    time.sleep(0.5)
print(json.dumps(admin.jobs()))
"""


def test_jobs_are_taken_in_turn_across_users_on_one_copy_of_the_model_and_a_users_queue_is_capped(lab):
    lab.run("alice", SUBMIT)
    lab.run("alice", WAIT_FOR_MINE)
    alice_ids = lab.run_json(
        "alice", f"print(json.dumps([client.submit(graph, model.name)['id'] for _ in range({QUEUE_CAP})]))"
    )
    lab.run("alice", "from ndif_jupyter.client import ServerRefused")
    refused = lab.run_json(
        "alice",
        "try:\n    client.submit(graph, model.name)\n    print(json.dumps([0, '']))\n"
        "except ServerRefused as refused:\n    print(json.dumps([refused.status, str(refused)]))",
    )
    assert refused[0] == 429 and "max_queued_per_user" in refused[1]
    places = lab.run_json("alice", f"print(json.dumps(client.job({alice_ids[-1]!r})['queue_position']))")
    assert places is not None and places >= QUEUE_CAP - 2, "the last of alice's jobs waits behind her others"

    bob_started = time.time()
    lab.run("bob", "with model.trace('just one', device_map='server'):\n    model.model.norm.output.save()\n")
    bob_seconds = time.time() - bob_started
    listing = lab.run_json("carol", ADMIN_WAITS_FOR_ALL, timeout=600)
    jobs = {job["id"]: job for job in listing}
    bob_job = max((job for job in jobs.values() if job["owner"] == "bob"), key=lambda job: job["created"])
    third_from_last = jobs[alice_ids[-3]]
    assert all(jobs[job_id]["status"] == "done" for job_id in alice_ids)
    assert bob_job["finished"] < third_from_last["finished"], (
        f"bob's one job finished after alice's third from last ({bob_seconds:.1f} s)"
    )
    finished_before_bob = sum(jobs[job_id]["finished"] < bob_job["finished"] for job_id in alice_ids)
    assert finished_before_bob <= 3, f"{finished_before_bob} of alice's queued jobs ran before bob's single one"
    kernels = lab.gateway.get("api/kernels")
    assert len(kernels) == 1, f"three users' jobs ran on one copy of the model, not {len(kernels)}"
    alice_seconds = max(jobs[job_id]["finished"] for job_id in alice_ids) - min(
        jobs[job_id]["created"] for job_id in alice_ids
    )
    print(
        f"bob's job: {bob_seconds:.1f} s with {finished_before_bob} of alice's {QUEUE_CAP} jobs finished before it; "
        f"alice's jobs took {alice_seconds:.1f} s in all"
    )


@pytest.mark.browser
def test_each_users_sidebar_shows_the_services_models_and_their_jobs(lab, browser_parts, test_output):
    lab.run("bob", "with model.trace('a job to list', device_map='server'):\n    model.model.norm.output.save()\n")
    lab.run("alice", "with model.trace('and one of alice', device_map='server'):\n    model.model.norm.output.save()\n")
    seen = {}
    for user in ("bob", ADMIN):
        run = subprocess.run(
            ["node", str(BROWSER_TESTS / "hub_sidebar.mjs"), lab.hub.url, user, str(test_output)],
            capture_output=True,
            text=True,
            timeout=300,
            env=dict(os.environ, CHROMIUM=CHROMIUM),
        )
        assert run.returncode == 0, f"{run.stderr}\n--- hub log ---\n{lab.hub.log_text()[-4000:]}"
        seen[user] = json.loads(run.stdout.strip().splitlines()[-1])
    for view in seen.values():
        assert view["models"] and view["models"][0].startswith(str(lab.llama)), view
        assert view["message"] == "Backend: gateway"
        assert view["jobs"] > 0
    assert seen["bob"]["user"] == "signed in as bob" and seen["bob"]["owners"] == []
    assert seen[ADMIN]["user"].startswith(f"signed in as {ADMIN}") and "admin" in seen[ADMIN]["user"]
    assert {"alice", "bob"} <= set(seen[ADMIN]["owners"]), "an admin's sidebar shows every user's jobs, with owners"
    assert not seen["bob"]["consoleErrors"] and not seen[ADMIN]["consoleErrors"]
    assert seen["bob"]["serviceOwners"] == ["bob"], "in the browser too, bob's API answers only his jobs"
    assert {"alice", "bob"} <= set(seen[ADMIN]["serviceOwners"])
    assert seen["bob"]["serviceUrl"].endswith("/services/ndif/api/jobs"), "the OAuth login came back to the API"


def post_to_service(
    lab: Lab, token: str, body: bytes, declared: int | None = None, filler: int = 0, direct: bool = False
):
    """POST a job body (with `filler` zero bytes, or only a declared length) through the hub's proxy, or `direct`ly
    to the service's own address."""
    port = urlparse(lab.hub.api("GET", "services/ndif")["url"]).port if direct else lab.hub.port
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
    connection.putrequest("POST", "/services/ndif/api/jobs")
    connection.putheader("Authorization", f"token {token}")
    connection.putheader("Content-Type", "application/vnd.ndif.safetensors")
    connection.putheader("Content-Length", str(declared if declared is not None else len(body) + filler))
    connection.endheaders()
    if declared is None:
        connection.send(body)
        for start in range(0, filler, MB):
            connection.send(bytes(min(MB, filler - start)))
    response = connection.getresponse()
    answer = response.read()
    connection.close()
    return response.status, json.loads(answer or b"{}")


def memory_kb(pid: int, key: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(f"{key}:"):
            return int(line.split()[1])
    raise AssertionError(f"no {key} for process {pid}")


def test_hostile_requests_to_the_service_get_short_4xxs_and_it_keeps_serving(lab):
    (service,) = [
        pid
        for pid in descendants(lab.hub.process.pid)
        if b"ndif_server.service" in Path(f"/proc/{pid}/cmdline").read_bytes()
    ]
    token = lab.hub.token_for("bob", ["access:services!service=ndif"])
    assert http_status(lab.hub.service_api() + "models", token)[0] == 200  # the model's meta tree, built once
    Path(f"/proc/{service}/clear_refs").write_text("5")  # the peak (VmHWM) starts again from the resident size
    before = memory_kb(service, "VmRSS")
    raw = b"[" * 100_000 + b"]" * 100_000
    document = json.dumps({"format": "ndif.request"}).encode()
    header = json.dumps({"__metadata__": {"ndif": (document[:-1] + b', "x": ' + raw + b"}").decode()}}).encode()
    status, answer = post_to_service(lab, token, len(header).to_bytes(8, "little") + header)
    assert status == 400 and "nested more than 48 levels deep" in answer["message"]
    status, answer = post_to_service(lab, token, b"", filler=3 * REQUEST_LIMIT)
    assert status == 413 and len(answer["message"]) < 600
    # The proxy waits for a body it was promised before it answers: the service's own address refuses it unread.
    status, answer = post_to_service(lab, token, b"", declared=600 * 1024**3, direct=True)
    assert status == 413 and "644245.1 MB" in answer["message"]
    status, listing = http_status(lab.hub.service_api() + "jobs", token)
    assert status == 200 and all(job["owner"] == "bob" for job in listing["jobs"]), "nothing queued for bob"
    assert http_status(lab.hub.service_api() + "models", token)[0] == 200, "the service goes on serving"
    peak = memory_kb(service, "VmHWM")
    assert peak < before + 3 * REQUEST_LIMIT // 1024 + 64 * 1024, f"the service grew from {before} kB to {peak} kB"

"""The rules of a shared service without a server: the fair queue, who a caller is and what they see, and the hub
configuration `configure_hub` writes."""

from __future__ import annotations

import json
import threading
import time
from types import SimpleNamespace

import pytest
from traitlets.config import Config

from ndif_server.fair_queue import FairQueue
from ndif_server.hub import configure_hub
from ndif_server.identity import ADMIN_SCOPE, Caller, client_of, hub_caller
from ndif_server.service import SETTINGS_ENV, read_settings


def drain(queue: FairQueue) -> list:
    return [queue.take_nowait() for _ in range(len(queue))]


def test_one_users_many_jobs_never_hold_another_users_single_job_behind_them():
    queue: FairQueue[str] = FairQueue()
    for index in range(50):
        queue.put(f"alice-{index}", "alice")
    assert queue.take_nowait() == "alice-0"
    queue.put("bob-0", "bob")
    assert queue.take_nowait() == "bob-0", "bob, who has had no turn, goes before alice's second"
    queue.put("carol-0", "carol")
    queue.put("bob-1", "bob")
    assert drain(queue)[:4] == ["carol-0", "alice-1", "bob-1", "alice-2"]


def test_a_batch_takes_the_jobs_that_fit_in_fair_order_and_passes_over_the_others():
    queue: FairQueue[str] = FairQueue()
    for index in range(3):
        queue.put(f"alice-{index}", "alice")
    queue.put("bob-long", "bob")
    queue.put("bob-0", "bob")
    queue.put("carol-0", "carol")
    assert queue.take_nowait() == "alice-0"
    fits = lambda item: not item.endswith("long")  # noqa: E731
    taken = queue.take_also(fits, 3)
    assert taken == ["carol-0", "alice-1", "alice-2"], (
        "each taken job counts as its user's turn; a notebook's jobs keep their order"
    )
    assert queue.order() == ["bob-long", "bob-0"], "a job passed over keeps its place at the front"
    assert queue.take_also(lambda item: False, 5) == [] and len(queue) == 2


def test_a_batch_takes_no_more_than_asked_and_is_accepted_once_per_taken_job():
    queue: FairQueue[str] = FairQueue()
    for index in range(6):
        queue.put(f"job-{index}", f"user-{index}")
    asked = []

    def accept(item: str) -> bool:
        asked.append(item)
        return True

    assert queue.take_also(accept, 2) == ["job-0", "job-1"]
    assert asked == ["job-0", "job-1"]


def test_a_users_notebooks_take_turns_and_each_keeps_its_order():
    queue: FairQueue[str] = FairQueue()
    for index in range(3):
        queue.put(f"a{index}", "alice", "notebook-a")
    queue.put("b0", "alice", "notebook-b")
    queue.put("b1", "alice", "notebook-b")
    assert drain(queue) == ["a0", "b0", "a1", "b1", "a2"]


def test_order_is_the_order_take_gives_and_changes_nothing():
    queue: FairQueue[str] = FairQueue()
    for item, user, client in [("a0", "a", "x"), ("a1", "a", "y"), ("a2", "a", "x"), ("b0", "b", ""), ("c0", "c", "")]:
        queue.put(item, user, client)
    queue.take_nowait()
    planned = queue.order()
    assert planned == queue.order(), "asking for the order twice gives it twice"
    assert drain(queue) == planned == ["b0", "c0", "a1", "a2"]


def test_a_removed_item_leaves_the_line_and_turns_are_remembered_across_pauses():
    queue: FairQueue[str] = FairQueue()
    queue.put("a0", "alice")
    queue.put("a1", "alice")
    assert queue.remove("a1") and not queue.remove("a1")
    assert queue.take_nowait() == "a0" and len(queue) == 0
    queue.put("b0", "bob")
    queue.put("b1", "bob")
    queue.take_nowait()
    queue.put("a2", "alice")
    assert queue.take_nowait() == "a2", "alice's last turn is older than bob's: she goes before his second"
    queue.put("a3", "alice")
    assert queue.take_nowait() == "b1", "sending one job at a time does not jump the line"


def test_take_waits_for_an_item_and_close_wakes_it():
    queue: FairQueue[str] = FairQueue()
    taken: list = []
    worker = threading.Thread(target=lambda: taken.append(queue.take()))
    worker.start()
    time.sleep(0.1)
    queue.put("job", "alice")
    worker.join(5)
    assert taken == ["job"]
    closer = threading.Thread(target=lambda: taken.append(queue.take()))
    closer.start()
    queue.close()
    closer.join(5)
    assert taken == ["job", None] and not closer.is_alive()


def test_a_caller_sees_their_own_jobs_and_an_admin_sees_all():
    mine, theirs = SimpleNamespace(owner="alice"), SimpleNamespace(owner="bob")
    assert Caller("alice").sees(mine) and not Caller("alice").sees(theirs)
    assert Caller("carol", admin=True).sees(theirs)


@pytest.mark.parametrize(
    ("model", "expected"),
    [
        ({"kind": "user", "name": "alice", "admin": False, "scopes": ["access:services"]}, ("alice", False)),
        ({"kind": "user", "name": "carol", "admin": True, "scopes": []}, ("carol", True)),
        ({"kind": "user", "name": "dave", "admin": False, "scopes": [ADMIN_SCOPE]}, ("dave", True)),
        ({"kind": "service", "name": "alice", "scopes": []}, ("service:alice", False)),
    ],
)
def test_the_caller_is_who_the_hub_says(model, expected):
    caller = hub_caller(model)
    assert (caller.name, caller.admin) == expected


def test_a_client_id_out_of_shape_counts_as_none():
    assert client_of("3f9a-kernel_1.x") == "3f9a-kernel_1.x"
    assert client_of(None) == client_of("") == client_of("a" * 65) == client_of("../x y") == ""


def test_configure_hub_registers_the_service_its_scopes_and_what_users_servers_need():
    c = Config()
    c.JupyterHub.load_roles = [{"name": "teachers", "scopes": ["list:users"], "users": ["t"]}]
    c.Spawner.environment = {"KEEP": "me"}
    configure_hub(c, models=["tiny"], admins=["dave"], response_path="/srv/ndif", gateway_auth_token="secret")
    (service,) = c.JupyterHub.services
    assert service["command"][1:] == ["-m", "ndif_server.service"] and "secret" not in json.dumps(service["command"])
    settings = read_settings(service["environment"][SETTINGS_ENV])
    assert (settings.models, settings.response_path, settings.gateway_auth_token) == (["tiny"], "/srv/ndif", "secret")
    roles = {role["name"]: role for role in c.JupyterHub.load_roles}
    assert "teachers" in roles, "roles configured before stay"
    assert roles["user"]["scopes"] == ["self", "access:services!service=ndif"]
    assert roles["ndif-admins"]["users"] == ["dave"] and ADMIN_SCOPE in roles["ndif-admins"]["scopes"]
    assert ADMIN_SCOPE in c.JupyterHub.custom_scopes
    assert "access:services!service=ndif" in c.Spawner.server_token_scopes
    assert "access:servers!server" in c.Spawner.server_token_scopes, "a server's token keeps its own scopes"
    environment = c.Spawner.environment
    assert environment["KEEP"] == "me"
    spawner = SimpleNamespace(
        api_token="t0k3n",
        public_hub_url="",
        user=SimpleNamespace(settings={"proxy": SimpleNamespace(public_url="http://:8000/"), "base_url": "/"}),
    )
    assert environment["NDIF_SERVER_URL"](spawner) == "http://127.0.0.1:8000/services/ndif/api/"
    assert environment["NDIF_SERVER_TOKEN"](spawner) == "t0k3n"
    spawner.public_hub_url = "https://hub.lab.example/hub/"
    assert environment["NDIF_SERVER_URL"](spawner) == "https://hub.lab.example/services/ndif/api/"


def test_configure_hub_refuses_a_setting_it_does_not_know():
    with pytest.raises(TypeError, match="max_queued_per_usr"):
        configure_hub(Config(), models=["tiny"], max_queued_per_usr=3)

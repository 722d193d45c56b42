"""Caller: who sent a request, as the server's authentication says (never as the request says), and what they see."""

from __future__ import annotations

import getpass
import os
import re
from dataclasses import dataclass
from typing import Any

ADMIN_SCOPE = "custom:ndif:admin"
"""The JupyterHub scope of those who see and cancel every user's jobs (hub admins do too)."""

_CLIENT = re.compile(r"[A-Za-z0-9_.-]{1,64}")
"""`X-NDIF-Client` says which of a user's notebooks sent a job: a random id each kernel makes up. It only orders a
user's own jobs, so it is taken from the request; anything but 1-64 letters, digits, `_.-` counts as no client."""


@dataclass(frozen=True)
class Caller:
    """An authenticated user: `name` owns the jobs they send; an `admin` sees and cancels everyone's."""

    name: str
    admin: bool = False

    def sees(self, job: Any) -> bool:
        return self.admin or job.owner == self.name

    def document(self) -> dict[str, Any]:
        return {"name": self.name, "admin": self.admin}


def server_user() -> Caller:
    """The one user of a single-user Jupyter server: every request it authenticates is theirs."""
    return Caller(os.environ.get("JUPYTERHUB_USER") or getpass.getuser())


def hub_caller(model: dict[str, Any]) -> Caller:
    """The caller JupyterHub identified (a user, or a service as `service:<name>`), admin when the hub says so or
    their token holds ADMIN_SCOPE."""
    name = model["name"] if model.get("kind", "user") == "user" else f"service:{model['name']}"
    return Caller(name, bool(model.get("admin")) or ADMIN_SCOPE in (model.get("scopes") or ()))


def client_of(header: str | None) -> str:
    """The client id a request names, or "" when it names none or one out of shape."""
    return header if header is not None and _CLIENT.fullmatch(header) else ""

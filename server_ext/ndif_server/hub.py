"""`configure_hub(c, models=[...], ...)`: one call in `jupyterhub_config.py` sets up a hub's NDIF service.

It registers the service (started and restarted by JupyterHub: `python -m ndif_server.service`), the scopes and roles
users need, and what users' servers need so that, in any user's kernel, `device_map="server"` and `%%ndif ...
--server` send their jobs to the service with nothing set by the user, and the JupyterLab sidebar shows the service's
models and the user's own jobs. The settings, the gateway's token among them, reach only the service's process
(in its environment, never on a command line); users' servers get the service's URL and their own hub token.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Iterable
from typing import Any
from urllib.parse import urlparse, urlunparse

from ndif_jupyter.client import SERVER_TOKEN_ENV, SERVER_URL_ENV

from .identity import ADMIN_SCOPE
from .service import IP_ENV, SETTINGS_ENV
from .settings import setting_names

SERVER_ROLE_SCOPES = ("users:activity!user", "access:servers!server")
"""The scopes of JupyterHub's `server` role, what a user server's token has by default."""


def configure_hub(
    c: Any,
    models: Iterable[str] | None = None,
    *,
    name: str = "ndif",
    port: int = 10101,
    url: str | None = None,
    ip: str | None = None,
    url_for_users: str | None = None,
    admins: Iterable[str] = (),
    groups: Iterable[str] | None = None,
    service_user: str | None = None,
    environment: dict[str, str] | None = None,
    cwd: str | None = None,
    python: str = sys.executable,
    **settings: Any,
) -> None:
    """Register the NDIF service `name` on the hub configured by `c`.

    `models` and `settings` are NDIFSettings (`response_path`, `backend`, `gateway_url`, `gateway_auth_token`,
    `device_map`, the limits, ...). The hub's proxy reaches the service at `url` (default `http://127.0.0.1:<port>`),
    where it listens, or on `ip` when set (for example the hub pod's address on Kubernetes, where the proxy runs in
    a pod of its own); users reach it through the hub's proxy
    at `/services/<name>/`, at `url_for_users` when set (for example `http://proxy-public/services/ndif/api/` on
    Kubernetes), else at the hub's public URL (`JupyterHub.public_url`, else `bind_url`). Every user may use it, or
    only the members of `groups`. Hub admins and the users in `admins` (through the scope `custom:ndif:admin`) see
    and cancel every user's jobs. `service_user`: the unix user the service runs as (the hub's by default);
    `environment` and `cwd`: more of its environment (`NDIF_CHECKPOINTS`, `HF_HOME`, ...) and its working folder.
    `python`: the interpreter that runs it.
    """
    values = dict(settings)
    if models is not None:
        values["models"] = list(models)
    unknown = sorted(set(values) - set(setting_names()))
    if unknown:
        raise TypeError(f"configure_hub got unknown NDIF settings {unknown}; the settings are {setting_names()}")
    access = f"access:services!service={name}"
    service_environment = {**(environment or {}), SETTINGS_ENV: json.dumps(values)}
    if ip:
        service_environment[IP_ENV] = ip
    service: dict[str, Any] = {
        "name": name,
        "url": url or f"http://127.0.0.1:{port}",
        "command": [python, "-m", "ndif_server.service"],
        "environment": service_environment,
        "oauth_no_confirm": True,
        "oauth_client_allowed_scopes": [ADMIN_SCOPE],
        "display": False,
    }
    if service_user:
        service["user"] = service_user
    if cwd:
        service["cwd"] = cwd
    c.JupyterHub.services = [*_configured(c.JupyterHub, "services", []), service]
    c.JupyterHub.custom_scopes = {
        **_configured(c.JupyterHub, "custom_scopes", {}),
        ADMIN_SCOPE: {"description": "See and cancel every user's jobs on the NDIF service."},
    }
    roles = list(_configured(c.JupyterHub, "load_roles", []))
    if groups is None:
        roles = _with_scope(roles, "user", access, default_scopes=["self"])
    else:
        roles.append({"name": f"{name}-users", "scopes": [access], "groups": list(groups)})
    roles.append({"name": f"{name}-admins", "scopes": [access, ADMIN_SCOPE], "users": list(admins)})
    c.JupyterHub.load_roles = roles
    c.Spawner.server_token_scopes = _token_scopes(c.Spawner, [access, ADMIN_SCOPE])
    c.Spawner.environment = {
        **_configured(c.Spawner, "environment", {}),
        SERVER_URL_ENV: _users_url(name, url_for_users),
        SERVER_TOKEN_ENV: _server_token,
    }


def _configured(section: Any, key: str, default: Any) -> Any:
    """What the configuration holds for `key` so far (traitlets' lazy sections answer an unset key with a section)."""
    return section[key] if key in section else default  # noqa: SIM401 (get() makes a section)


def _with_scope(roles: list[dict], role: str, scope: str, default_scopes: list[str]) -> list[dict]:
    """`roles` with `scope` added to the role named `role` (made with `default_scopes` when absent)."""
    for index, existing in enumerate(roles):
        if existing.get("name") == role:
            roles[index] = {**existing, "scopes": [*existing.get("scopes", default_scopes), scope]}
            return roles
    return [*roles, {"name": role, "scopes": [*default_scopes, scope]}]


def _token_scopes(spawner: Any, extra: list[str]) -> Any:
    """The scopes of a user server's token with `extra` added (JupyterHub keeps those the user holds)."""
    configured = _configured(spawner, "server_token_scopes", list(SERVER_ROLE_SCOPES))
    if callable(configured):
        return lambda server: [*configured(server), *extra]
    return [*configured, *extra]


def _users_url(name: str, url_for_users: str | None) -> Callable[[Any], str] | str:
    if url_for_users:
        return url_for_users

    def url(spawner: Any) -> str:
        """The service's API at the hub's public URL (as the proxy serves it), seen from a user's server."""
        proxy = spawner.user.settings.get("proxy")
        public = urlparse(spawner.public_hub_url or (proxy.public_url if proxy is not None else "http://:8000/"))
        host = public.hostname if public.hostname not in (None, "", "0.0.0.0", "::") else "127.0.0.1"
        netloc = f"[{host}]" if ":" in host else host
        netloc += f":{public.port}" if public.port else ""
        base = spawner.user.settings.get("base_url", "/")
        return urlunparse((public.scheme or "http", netloc, f"{base}services/{name}/api/", "", "", ""))

    return url


def _server_token(spawner: Any) -> str:
    """The user server's own hub token (also its `JUPYTERHUB_API_TOKEN`): the user's credentials for the service."""
    return spawner.api_token

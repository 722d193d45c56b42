"""Which Model a `%%ndif` cell runs on, and the listing of `%ndif models`."""

from __future__ import annotations

import difflib
import os
from typing import Any

from IPython.core.error import UsageError

from ..client import SERVER_URL_ENV, ServerClient
from ..errors import NDIFError
from ..loading.checkpoints import DEFAULT_MODEL, checkpoint_dir, is_local, list_cached
from ..model import Model


class ModelChoice:
    """Resolves the MODEL of a cell; keeps the models the magic built itself, so each loads its weights once.

    A cell's MODEL is the name of a `Model` in the namespace, else a repo id or a checkpoint folder. Without one:
    the model chosen with `%ndif use`, else the namespace's `model` if it is a `Model`, else the embedded default.
    """

    def __init__(self) -> None:
        self.built: dict[str, Model] = {}
        self.chosen: str | None = None

    def resolve(self, name: str | None, namespace: dict[str, Any]) -> Model:
        """The Model for a cell's MODEL argument (None when the cell names none); builds it when needed."""
        found, target = self._pick(name, namespace)
        if found is not None:
            return found
        try:
            return self._build(target)
        except UsageError as error:
            if name is None and self.chosen is None:
                raise
            raise UsageError(f"{error}\n{_namespace_hint(target, namespace)}") from None

    def peek(self, name: str | None, namespace: dict[str, Any]) -> Model | None:
        """As `resolve`, but never downloads: None where the model would have to be fetched first."""
        found, target = self._pick(name, namespace)
        if found is not None:
            return found
        if target in self.built or is_local(target):
            try:
                return self._build(target)
            except (NDIFError, UsageError):
                return None
        return None

    def _pick(self, name: str | None, namespace: dict[str, Any]) -> tuple[Model | None, str]:
        """A `Model` from the namespace for the cell, or None and the name of the model to build."""
        target = name or self.chosen
        if target is None:
            candidate = namespace.get("model")
            return (candidate, "model") if isinstance(candidate, Model) else (None, DEFAULT_MODEL)
        candidate = namespace.get(target)
        return (candidate if isinstance(candidate, Model) else None), target

    def use(self, name: str, namespace: dict[str, Any]) -> Model:
        """Make `name` the model of later cells that name none; it is resolved now, so a bad name fails here."""
        model = self.resolve(name, namespace)
        self.chosen = name
        return model

    def _build(self, name: str) -> Model:
        if name not in self.built:
            try:
                self.built[name] = Model(name)
            except NDIFError as error:
                raise UsageError(str(error)) from None
        return self.built[name]

    def listing(self, namespace: dict[str, Any]) -> str:
        """The text of `%ndif models`: models in the namespace, those the magic built, and the checkpoint cache."""
        rows = []
        seen = set()
        for variable, value in namespace.items():
            if isinstance(value, Model) and not variable.startswith("_"):
                rows.append((variable, value))
                seen.add(id(value))
        for name, model in self.built.items():
            if id(model) not in seen:
                rows.append((f"(built for {name!r})", model))
                seen.add(id(model))
        current = self._current_text(namespace)
        lines = [f"Cells without a MODEL run on: {current}", ""]
        if rows:
            lines.append("Models in this kernel:")
            width = max(len(label) for label, _ in rows)
            for label, model in rows:
                lines.append(f"  {label:<{width}}  {_describe(model)}")
        else:
            lines.append("Models in this kernel: none yet.")
        cached = list_cached()
        lines.append("")
        lines.append(f"Checkpoint cache ({checkpoint_dir()}):")
        lines.extend(f"  {name}" for name in cached or ["empty"])
        lines.extend(_served_lines())
        return "\n".join(lines)

    def _current_text(self, namespace: dict[str, Any]) -> str:
        if self.chosen is not None:
            return f"{self.chosen} (chosen with %ndif use)"
        if isinstance(namespace.get("model"), Model):
            return "`model` from the namespace"
        return f"the embedded default model, {DEFAULT_MODEL}"


def _served_lines() -> list[str]:
    """What the Jupyter server extension serves (for `--server` cells), when this kernel knows of one."""
    if not os.environ.get(SERVER_URL_ENV):
        return []
    try:
        answer = ServerClient.from_environment(request_timeout=5).models()
    except NDIFError as error:
        return ["", f"The Jupyter server's models (for --server) cannot be listed: {error}"]
    lines = ["", f"Served by the Jupyter server (for --server; backend {answer['backend']}):"]
    for model in answer["models"]:
        state = "loaded" if model["loaded"] else "not loaded yet"
        lines.append(f"  {model['name']}: {model['class']}, {_count(model['parameters'])} parameters, {state}")
    return lines


def _namespace_hint(name: str, namespace: dict[str, Any]) -> str:
    names = sorted(key for key, value in namespace.items() if isinstance(value, Model) and not key.startswith("_"))
    if not names:
        return f"No Model named `{name}` is in the namespace either; it has none."
    close = difflib.get_close_matches(name, names, n=1)
    hint = f" Did you mean `{close[0]}`?" if close else ""
    return f"No Model named `{name}` is in the namespace either ({', '.join(names)}).{hint}"


def _describe(model: Model) -> str:
    parameters = sum(p.numel() for p in model.loaded.meta_model.parameters())
    layers = getattr(model.config, "num_hidden_layers", None) or getattr(model.config, "n_layer", None)
    where = f"loaded ({model.loaded.device_map})" if model.local_model is not None else "weights not loaded"
    shape = f"{layers} layers, " if layers else ""
    return f"{model.name}: {type(model.loaded.meta_model).__name__}, {shape}{_count(parameters)} parameters, {where}"


def _count(number: int) -> str:
    for unit, size in (("B", 1e9), ("M", 1e6), ("K", 1e3)):
        if number >= size:
            return f"{number / size:.1f}{unit}"
    return str(number)

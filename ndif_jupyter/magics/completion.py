"""Tab completion in a `%%ndif` cell body: module paths of the cell's model (`model.model.la<TAB>`), and bound names."""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

from IPython.core.completer import CompletionContext, SimpleCompletion, context_matcher
from IPython.core.error import UsageError

from ..loading.inner_ops import OPS, inner_operations
from ..model import Model
from .arguments import CELL_COMMANDS, parse_line
from .models import ModelChoice

_MODULE_EXPRESSION = re.compile(r"(?<![\w.\])])model((?:\.\w+|\[\s*-?\d+\s*\])*)\.(\w*)$")
_STEP = re.compile(r"\.(\w+)|\[\s*(-?\d+)\s*\]")
_WORD = re.compile(r"(?<![\w.])(\w+)$")
_EVENTS = ("output", "input", "inputs", "skip")
_BLOCK_NAMES = {
    "generate": ("model", "invoke", "next", "generator", "invoker"),
    "trace": ("model", "invoke", "tracer", "invoker"),
}


def cell_matcher(magic_func: Any, choice: ModelChoice, namespace: Callable[[], dict[str, Any]]):
    """An IPython completion matcher for `%%ndif` cells; `magic_func` parses the header, `choice` finds the model."""

    @context_matcher(identifier="ndif_jupyter.module_paths", priority=1)
    def match_module_paths(context: CompletionContext) -> dict[str, Any]:
        header = _header(context)
        if header is None:
            return {"completions": [], "suppress": False}
        try:
            options = parse_line(magic_func, header)
        except UsageError:
            return {"completions": [], "suppress": False}
        if options.command not in CELL_COMMANDS:
            return {"completions": [], "suppress": False}
        before = context.text_until_cursor
        path_match = _MODULE_EXPRESSION.search(before)
        if path_match is not None:
            model = choice.peek(options.model, namespace())
            if model is None:
                return {"completions": [], "suppress": False}
            names = _names_after(model, path_match.group(1))
            partial = path_match.group(2)
            return _completions(context.token, partial, names, "module")
        word = _WORD.search(before)
        if word is not None:
            bound = [name for name in _BLOCK_NAMES[options.command] if name.startswith(word.group(1))]
            result = _completions(context.token, word.group(1), bound, "bound")
            result["suppress"] = False
            return result
        return {"completions": [], "suppress": False}

    return match_module_paths


def _header(context: CompletionContext) -> str | None:
    """The arguments of the `%%ndif` line when the cursor is in the body of a `%%ndif` cell."""
    lines = context.full_text.split("\n")
    first = next((index for index, line in enumerate(lines) if line.strip()), None)
    if first is None or not lines[first].lstrip().startswith("%%ndif") or context.cursor_line <= first:
        return None
    return lines[first].lstrip()[len("%%ndif") :]


def _names_after(model: Model, steps: str) -> list[str]:
    """The names that may follow `model<steps>.`: child modules, the module events and `skip`, weights, `ops` (then
    the module's inner operations, then their events), and at the root the Model's API."""
    module = model.loaded.meta_model
    matches = list(_STEP.finditer(steps))
    for position_in_steps, match in enumerate(matches):
        name, index = match.groups()
        if name == OPS and OPS not in dict(module.named_children()):
            return _names_after_operations(module, [m.group(1) for m in matches[position_in_steps + 1 :]])
        named = dict(module.named_children())
        if name is not None:
            if name in _EVENTS or name not in named:
                return []
            module = named[name]
        else:
            children = list(named.values())
            position = int(index)
            if not -len(children) <= position < len(children):
                return []
            module = children[position]
    weights = [name for name, _ in [*module.named_parameters(recurse=False), *module.named_buffers(recurse=False)]]
    names = [name for name, _ in module.named_children() if not name.isdigit()] + list(_EVENTS) + weights
    if inner_operations(module):
        names.append(OPS)
    if not steps:
        names += [name for name in dir(model) if not name.startswith("_") and name not in names]
    return names


def _names_after_operations(module: Any, rest: list[str | None]) -> list[str]:
    """After `module.ops.`: the inner operations of `module`; after `module.ops.<operation>.`, its events."""
    names = [operation.name for operation in inner_operations(module)]
    if not rest:
        return names
    if len(rest) == 1 and rest[0] in names:
        return [event for event in _EVENTS if event != "skip"]
    return []


def _completions(token: str, partial: str, names: list[str], kind: str) -> dict[str, Any]:
    if not token.endswith(partial):
        return {"completions": [], "suppress": False}
    stem = token[: len(token) - len(partial)]
    chosen = [SimpleCompletion(stem + name, type=kind) for name in names if name.startswith(partial)]
    return {"completions": chosen, "suppress": bool(chosen)}

"""After a run: which saved values were never computed and why, and errors that name the user's line."""

from __future__ import annotations

import traceback

from ..errors import ExecutionError
from ..ir.graph import GraphKind, Node
from .scheduler import Scheduler

EventKey = tuple[str, str, int]
"""A module event: (module path, "pre" or "post", generation step)."""


def unfinished_nodes(
    nodes: list[Node], scheduler: Scheduler, event_of: dict[int, EventKey], kind: GraphKind, steps_run: int
) -> dict[int, str]:
    """The nodes that never ran because generation stopped early, with the reason.

    Any other node that never ran is an error: it is raised as an ExecutionError at the line of the first node in
    its way, saying which module event never happened.
    """
    missing: dict[int, str] = {}
    for node in nodes:
        if scheduler.done[node.id]:
            continue
        event = event_of.get(node.id)
        if event is not None and event[2] >= steps_run and kind == "generate":
            missing[node.id] = (
                f"generation stopped after {steps_run} forward passes (every prompt reached its end-of-sequence "
                f"token), so step {event[2]} never ran"
            )
            continue
        blocker = scheduler.first_blocker(node.id)
        if blocker in missing:
            missing[node.id] = missing[blocker]
            continue
        blocking = nodes[blocker]
        key = event_of.get(blocker)
        what = f"{event_text(key)} never happened" if key is not None else "it never ran"
        if key is not None and key[1].startswith("grad"):
            value = event_text(key).removeprefix("the gradient of ")
            what = f"the backward pass brought no gradient to {value}: the loss does not depend on it"
        raise ExecutionError(f"`{display(blocking)}` never ran: {what}.", blocking.source)
    return missing


def event_text(key: EventKey) -> str:
    """A module event as the user knows it: `model.transformer.h[0] (output, step 2)`, `the backward pass`,
    `the gradient of model.transformer.h[0].output[0] (step 0)`."""
    path, phase, step = key
    where = f"model.{path}" if path else "model"
    if phase == "backward":
        return "the backward pass"
    if phase == "grad trainable":
        return "the gradient of a trainable tensor"
    if phase.startswith("grad weight "):
        return f"the gradient of {where}.{phase[len('grad weight ') :]}"
    if phase.startswith("grad "):
        return f"the gradient of {where}.{phase[len('grad ') :]} (step {step})"
    return f"{where} ({'input' if phase == 'pre' else 'output'}, step {step})"


def display(node: Node) -> str:
    """A node as the user wrote it (its source line), else its operation name."""
    if node.source is not None and node.source.line:
        return node.source.line.strip()
    return node.op


def raised_at(error: BaseException) -> str:
    """Where inside the model an error was raised: ` (raised at FILE, line N)`, or "" when unknown."""
    frames = traceback.extract_tb(error.__traceback__)
    if not frames:
        return ""
    last = frames[-1]
    return f" (raised at {last.filename}, line {last.lineno})"

"""Admitting a request: every check a server makes before it queues one, cheapest first, each refusal a short 4xx.

The order keeps refusals cheap whatever was sent: the body's size, the container and its document with bounded
parsing (depth, values, string lengths), the counts a document declares (nodes, prompts, tokens, new tokens), the
model, and only then the schema, the graph's rules and its cost on the meta device.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from ..errors import NDIFError, ProtocolError
from ..ir.session import Request
from ..loading.loaded import LoadedModel
from .container import unpack
from .cost import Cost, estimate_request_cost
from .limits import Limits, cut, quote
from .origin import Origin
from .request import request_from_document
from .schema import check_document
from .validation import check_sizes, validate_request

LONGEST_MESSAGE = 600
"""The longest refusal message, in characters (a refusal never quotes more of what was sent)."""


class Refusal(Exception):
    """A request the server will not run: the HTTP status to answer (413, 400, ...) and a short message; for a 429,
    the seconds after which sending it again may succeed (`retry_after`, None: the server's usual wait)."""

    def __init__(self, status: int, message: str, retry_after: int | None = None):
        self.status = status
        self.message = cut(message, LONGEST_MESSAGE)
        self.retry_after = retry_after
        super().__init__(self.message)


@dataclass(frozen=True)
class Admission:
    """A request that passed every check: the served model it runs on, its graph (or a session's graphs), its cost,
    and where it was sent from (display only; None when the request does not say)."""

    model: LoadedModel
    request: Request
    cost: Cost
    origin: Origin | None = None


def admit(
    body: bytes | bytearray,
    served: Callable[[str], LoadedModel | None],
    limits: Limits,
    names: Sequence[str] = (),
) -> Admission:
    """Check a request body against `limits` and the models `served` resolves (a name to a LoadedModel, or None
    when it is not served; `names` lists them in that refusal); raise Refusal with the status and message."""
    check_body_size(len(body), limits)
    try:
        document, tensors = unpack(body, limits.max_document_items, first=lambda found: check_sizes(found, limits))
        model = _served_model(document, served, names)
        check_document(document, "request")
        request = request_from_document(document, tensors)
        validate_request(request, model.meta_model, limits)
        cost = estimate_request_cost(request, model, limits)
    except ProtocolError as error:
        raise Refusal(400, f"the request is not valid: {error}") from None
    return Admission(model, request, cost, Origin.from_document(document))


def check_body_size(size: int, limits: Limits) -> None:
    """Refuse (413) a body over the server's `max_request_bytes`."""
    if size > limits.max_request_bytes:
        raise Refusal(413, too_large_message(size, limits))


def too_large_message(size: int | None, limits: Limits) -> str:
    """What a 413 says: the body's size when known, the limit, and what to do."""
    told = f"the request is {size / 1e6:.1f} MB, " if size is not None else "the request is "
    return (
        f"{told}over this server's limit of {limits.max_request_bytes / 1e6:.1f} MB; send smaller constants "
        "(tensors) with the graph"
    )


def _served_model(document: dict, served: Callable[[str], LoadedModel | None], names: Sequence[str]) -> LoadedModel:
    requested = document.get("model")
    if not isinstance(requested, str):
        raise ProtocolError("the request names no model (`model` must be a string)")
    try:
        model = served(requested)
    except NDIFError as error:
        raise Refusal(503, f"the served model {quote(requested)} cannot be read now: {cut(str(error))}") from None
    if model is None:
        listed = f"; this server serves: {cut(', '.join(names))}" if names else ""
        raise Refusal(400, f"the model {quote(requested)} is not served here{listed}")
    return model

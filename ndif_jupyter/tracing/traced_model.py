"""TracedModel: what tracing keeps of one model: its loaded model, shape oracle, module tree and open block."""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING

from ..errors import TraceError
from ..loading.loaded import LoadedModel
from .envoy import Envoy
from .source import user_source

if TYPE_CHECKING:
    from .replay import EditSet
    from .session import SessionContext
    from .tracer import Tracer


class TracedModel:
    """The recording side of a model: one block may be open on it at a time; its module tree needs no weights."""

    def __init__(self, loaded: LoadedModel):
        self.loaded = loaded
        self.shapes = loaded.shapes
        self.root = Envoy(self, "", loaded.meta_model)
        self.open_block: Tracer | None = None
        self.session: SessionContext | None = None
        """The session open on this model: the blocks opened now run at its end."""
        self.edits: dict[str, EditSet] = {}
        """The persistent edit sets by name, applied by every block opened with edits, in this order."""
        self._lock = threading.Lock()

    def set_edit(self, edit: EditSet) -> None:
        """Keep `edit`, in place of an earlier set of its name."""
        self.edits.pop(edit.name, None)
        self.edits[edit.name] = edit

    def clear_edits(self, name: str | None = None) -> None:
        """Forget the edit set `name`, or every set; a KeyError naming the sets there are for an unknown name."""
        if name is None:
            self.edits.clear()
        elif name in self.edits:
            del self.edits[name]
        else:
            known = ", ".join(f'"{known}"' for known in self.edits) or "none"
            raise KeyError(f'This model has no edit set "{name}" (it has {known}).')

    def module(self, path: str) -> Envoy:
        """The Envoy of the module at dotted `path` ("" is the whole model)."""
        envoy = self.root
        for name in path.split(".") if path else []:
            envoy = envoy[name]
        return envoy

    def begin(self, block: Tracer) -> None:
        """Make `block` the open block; refused while another is open."""
        __tracebackhide__ = True
        with self._lock:
            if self.open_block is not None:
                raise TraceError(
                    "A block is already open on this model; blocks cannot be nested.",
                    user_source(),
                    "End the open `with` block first.",
                )
            self.open_block = block

    def begin_session(self, session: SessionContext) -> None:
        """Open `session`; refused inside a block or another session."""
        __tracebackhide__ = True
        with self._lock:
            if self.session is not None or self.open_block is not None:
                raise TraceError(
                    "A session is opened outside any other session or block of this model.",
                    user_source(),
                    "End the open `with` block first; one session holds as many blocks as you need.",
                )
            self.session = session

    def end_session(self, session: SessionContext) -> None:
        """`session` is no longer open."""
        with self._lock:
            if self.session is session:
                self.session = None

    def end(self, block: Tracer) -> None:
        """`block` is no longer open (nothing happens if another block is)."""
        with self._lock:
            if self.open_block is block:
                self.open_block = None

    def require_open(self, what: str) -> Tracer:
        """The open block; outside one, a TraceError saying that `what` exists only inside a block."""
        __tracebackhide__ = True
        block = self.open_block
        if block is None:
            raise TraceError(
                f"`{what}` exists only inside a `with model.trace(...)` or `with model.generate(...)` block.",
                user_source(),
            )
        return block

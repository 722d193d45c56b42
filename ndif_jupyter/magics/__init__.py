"""The IPython extension: `%load_ext ndif_jupyter` registers the `%ndif`/`%%ndif` magics and their tab completion,
and puts `Model` and `browse` in the notebook's namespace."""

from __future__ import annotations

from typing import Any

from ..model import Model
from ..widgets.browse import browse
from .completion import cell_matcher
from .magic import NDIFMagics

_MATCHER_ATTRIBUTE = "_ndif_jupyter_matcher"


def load_ipython_extension(shell: Any) -> None:
    """Register the magics on `shell`, and the completion of module paths inside `%%ndif` cells; bind `Model` and
    `browse` in the user's namespace, where those names are not taken."""
    for name, value in (("Model", Model), ("browse", browse)):
        shell.user_ns.setdefault(name, value)
    magics = NDIFMagics(shell)
    shell.register_magics(magics)
    matcher = cell_matcher(magics.ndif, magics.models, lambda: shell.user_ns)
    shell.Completer.custom_matchers.append(matcher)
    setattr(shell, _MATCHER_ATTRIBUTE, matcher)


def unload_ipython_extension(shell: Any) -> None:
    """Remove the completion matcher; IPython keeps registered magics, and loading again replaces them."""
    matcher = getattr(shell, _MATCHER_ATTRIBUTE, None)
    if matcher is not None and matcher in shell.Completer.custom_matchers:
        shell.Completer.custom_matchers.remove(matcher)
    if hasattr(shell, _MATCHER_ATTRIBUTE):
        delattr(shell, _MATCHER_ATTRIBUTE)

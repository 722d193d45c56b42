"""The IPython extension: `%load_ext ndif_jupyter` registers the `%ndif`/`%%ndif` magics and their tab completion."""

from __future__ import annotations

from typing import Any

from .completion import cell_matcher
from .magic import NDIFMagics

_MATCHER_ATTRIBUTE = "_ndif_jupyter_matcher"


def load_ipython_extension(shell: Any) -> None:
    """Register the magics on `shell`, and the completion of module paths inside `%%ndif` cells."""
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

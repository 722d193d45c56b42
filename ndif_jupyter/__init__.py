"""ndif_jupyter: read and change the internals of language models from Jupyter, without writing hook code.

    from ndif_jupyter import Model
    model = Model()                       # the embedded default model
    with model.generate(max_new_tokens=3) as generator:
        with generator.invoke("The Eiffel Tower is in the city of") as invoker:
            hidden = model.model.layers[-1].output.save()
    hidden.value

In a notebook, `%load_ext ndif_jupyter` adds the `%%ndif generate` cell magic, which records a whole cell as a block
and shows its saved values in the activation browser; `browse(values)` shows any saved values there.
"""

import importlib.metadata
from typing import TYPE_CHECKING, Any

from .errors import ExecutionError, NDIFError, TraceError, ValueNotReadyError

if TYPE_CHECKING:
    from .model import Model
    from .tracing.proxy import Proxy

_LAZY = {"Model": ".model", "Proxy": ".tracing.proxy"}


def __getattr__(name: str) -> Any:
    """`Model` and `Proxy` load on first use: the server imports only the lower rooms and loads no tracing."""
    if name in _LAZY:
        import importlib

        value = getattr(importlib.import_module(_LAZY[name], __name__), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))


def browse(values, **options):
    """The activation browser for saved values: `_ndif`, a block that has run, or tensors (see `widgets.browse`)."""
    from .widgets import browse as browse_values

    return browse_values(values, **options)


def load_ipython_extension(shell):
    """`%load_ext ndif_jupyter`: the `%ndif`/`%%ndif` magics (see `%%ndif?`)."""
    from .magics import load_ipython_extension as load

    load(shell)


def unload_ipython_extension(shell):
    from .magics import unload_ipython_extension as unload

    unload(shell)


__version__ = importlib.metadata.version("ndif-jupyter")

__all__ = ["ExecutionError", "Model", "NDIFError", "Proxy", "TraceError", "ValueNotReadyError", "__version__", "browse"]

"""`tracer.cache()`: every module's output saved in one call, as a mapping by module path or by TransformerLens name."""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from typing import TYPE_CHECKING, Any, Literal

from ..errors import TraceError
from ..ir.nested import SAVEABLE, leaves
from ..loading.inner_ops import split_path
from .envoy import Envoy
from .proxy import Proxy
from .source import user_source
from .transformer_lens import transformer_lens_values

if TYPE_CHECKING:
    from .tracer import Tracer


class ModuleCache(Mapping):
    """Saved module outputs by name. Inside the block each entry is a traced value (usable in the block); after it,
    the tensor. `left_out` names the modules whose output holds something that cannot be saved (a cache object)."""

    def __init__(self, entries: dict[str, Proxy], left_out: list[str]):
        self._entries = entries
        self.left_out = left_out

    def __getitem__(self, name: str) -> Any:
        if name not in self._entries:
            close = [key for key in self._entries if name in key][:5]
            hint = f" Names containing it: {', '.join(close)}." if close else ""
            raise KeyError(f"{name!r} is not in this cache ({len(self._entries)} entries).{hint}")
        proxy = self._entries[name]
        return proxy.value if proxy.has_value else proxy

    def __iter__(self) -> Iterator[str]:
        return iter(self._entries)

    def __len__(self) -> int:
        return len(self._entries)

    def __repr__(self) -> str:
        names = list(self._entries)
        shown = ", ".join(names[:4]) + (", ..." if len(names) > 4 else "")
        return f"<ModuleCache of {len(names)} values: {shown}>"


def record_cache(
    tracer: Tracer, modules: Iterable[Envoy | str] | None, names: Literal["paths", "transformer_lens"]
) -> ModuleCache:
    """Save the output of every module called at the open invoke's step (or of those of `modules` it calls), by path
    or TransformerLens name."""
    __tracebackhide__ = True
    source = user_source()
    invoker = tracer.require_invoke(source)
    if names not in ("paths", "transformer_lens"):
        raise TraceError(f"`names` is 'paths' or 'transformer_lens', not {names!r}.", source)
    record = tracer.step_record(invoker)
    called = [path for path, module in record.modules.items() if module.post_event >= 0 and split_path(path) is None]
    if modules is None:
        chosen = called
    else:
        wanted = [module.path if isinstance(module, Envoy) else module for module in modules]
        known = set(tracer.traced.root.module_paths())
        unknown = [path for path in wanted if not isinstance(path, str) or path not in known]
        if unknown:
            raise TraceError(
                f"`cache(modules=...)` names {unknown[0]!r}, which is not a module of this model.",
                source,
                "Pass modules of this model (Envoys such as `model.model.layers[3]`, or dotted paths).",
            )
        chosen = [path for path in called if path in set(wanted)]
    entries: dict[str, Proxy] = {}
    left_out: list[str] = []
    if names == "transformer_lens":
        entries = transformer_lens_values(tracer, record, chosen)
        chosen = []
    for path in chosen:
        output = record.modules[path].output
        if not all(isinstance(leaf, SAVEABLE) for leaf in leaves(output)):
            left_out.append(path)
            continue
        entries[path] = tracer.module_get(path, "output")
    for proxy in entries.values():
        proxy.save()
    return ModuleCache(entries, left_out)

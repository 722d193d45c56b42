"""TransformerLens's hook names for the GPT-2 and Llama families, each recorded from the Hugging Face module value
it stands for (`blocks.3.hook_resid_post` is layer 3's output, `blocks.3.attn.hook_z` the input of its output
projection split into heads).

Values are those of the Hugging Face model as it is, as TransformerLens gives them for a model loaded without
weight processing (`from_pretrained_no_processing`): layer norms are not folded into the next weights.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ..errors import TraceError
from ..loading.records import StepRecord
from .proxy import Proxy
from .source import user_source

if TYPE_CHECKING:
    from .tracer import Tracer


@dataclass(frozen=True)
class Hook:
    """One TransformerLens name: the module and which of its values it is, and how that value is reshaped."""

    name: str
    path: str
    kind: str  # "output" or "input"
    heads: int = 0  # split the last dimension into this many heads
    part: int = -1  # the part of a fused projection (GPT-2's c_attn: 0 queries, 1 keys, 2 values)


def transformer_lens_values(tracer: Tracer, record: StepRecord, chosen: list[str]) -> dict[str, Proxy]:
    """The TransformerLens names of the modules in `chosen`, each a traced value at the open invoke."""
    __tracebackhide__ = True
    hooks = _hooks(tracer.traced.loaded.config, record)
    wanted = set(chosen)
    values: dict[str, Proxy] = {}
    for hook in hooks:
        if hook.path not in wanted:
            continue
        value = tracer.module_get(hook.path, hook.kind)
        if isinstance(value.meta, tuple):  # a module's tuple output (an attention's): its first part
            value = value[0]
        if hook.part >= 0:
            value = value.split(value.shape[-1] // 3, dim=-1)[hook.part]
        if hook.heads:
            shape = list(value.shape)
            value = value.reshape(*shape[:-1], hook.heads, shape[-1] // hook.heads)
        values[hook.name] = value
    return values


def _hooks(config: Any, record: StepRecord) -> list[Hook]:
    __tracebackhide__ = True
    modules = record.modules
    if "transformer.h.0.attn.c_attn" in modules:
        heads = {"heads": config.n_head, "kv_heads": config.n_head}
        ends = ([("hook_embed", "transformer.wte"), ("hook_pos_embed", "transformer.wpe")], "transformer.ln_f")
        return _family(ends, "transformer.h", config.n_layer, _GPT2_LAYER, heads)
    if "model.layers.0.self_attn.q_proj" in modules and "model.layers.0.mlp.gate_proj" in modules:
        count = config.num_attention_heads
        heads = {"heads": count, "kv_heads": getattr(config, "num_key_value_heads", None) or count}
        ends = ([("hook_embed", "model.embed_tokens")], "model.norm")
        return _family(ends, "model.layers", config.num_hidden_layers, _LLAMA_LAYER, heads)
    raise TraceError(
        f"TransformerLens names are known for GPT-2 and Llama-family models, not for {type(config).__name__}.",
        user_source(),
        "Use `tracer.cache()` with module paths (the default).",
    )


# Per layer: TransformerLens's name, the module's path inside the layer ("" for the layer), which value, and how it
# is split ("heads" or "kv_heads" into heads; a number: that part of a fused projection, then into heads).
_GPT2_LAYER = [
    ("hook_resid_pre", "", "input", None),
    ("ln1.hook_normalized", "ln_1", "output", None),
    ("attn.hook_q", "attn.c_attn", "output", 0),
    ("attn.hook_k", "attn.c_attn", "output", 1),
    ("attn.hook_v", "attn.c_attn", "output", 2),
    ("attn.hook_z", "attn.c_proj", "input", "heads"),
    ("hook_attn_out", "attn", "output", None),
    ("hook_resid_mid", "ln_2", "input", None),
    ("ln2.hook_normalized", "ln_2", "output", None),
    ("mlp.hook_pre", "mlp.c_fc", "output", None),
    ("mlp.hook_post", "mlp.c_proj", "input", None),
    ("hook_mlp_out", "mlp", "output", None),
    ("hook_resid_post", "", "output", None),
]
_LLAMA_LAYER = [
    ("hook_resid_pre", "", "input", None),
    ("ln1.hook_normalized", "input_layernorm", "output", None),
    ("attn.hook_q", "self_attn.q_proj", "output", "heads"),
    ("attn.hook_k", "self_attn.k_proj", "output", "kv_heads"),
    ("attn.hook_v", "self_attn.v_proj", "output", "kv_heads"),
    ("attn.hook_z", "self_attn.o_proj", "input", "heads"),
    ("hook_attn_out", "self_attn", "output", None),
    ("hook_resid_mid", "post_attention_layernorm", "input", None),
    ("ln2.hook_normalized", "post_attention_layernorm", "output", None),
    ("mlp.hook_pre", "mlp.gate_proj", "output", None),
    ("mlp.hook_pre_linear", "mlp.up_proj", "output", None),
    ("mlp.hook_post", "mlp.down_proj", "input", None),
    ("hook_mlp_out", "mlp", "output", None),
    ("hook_resid_post", "", "output", None),
]


def _family(
    ends: tuple[list[tuple[str, str]], str],
    stack: str,
    count: int,
    table: list[tuple[str, str, str, Any]],
    heads: dict[str, int],
) -> list[Hook]:
    """Every hook of a family: its embeddings, each layer's rows of `table` (head counts from `heads`), its final
    norm."""
    embeddings, final_norm = ends
    hooks = [Hook(name, path, "output") for name, path in embeddings]
    for index in range(count):
        for name, inner, kind, split in table:
            path = f"{stack}.{index}" + (f".{inner}" if inner else "")
            if isinstance(split, int):  # a part of a fused projection, split into the query heads
                hook = Hook(f"blocks.{index}.{name}", path, kind, heads["heads"], split)
            else:
                hook = Hook(f"blocks.{index}.{name}", path, kind, heads[split] if split else 0)
            hooks.append(hook)
    return [*hooks, Hook("ln_final.hook_normalized", final_norm, "output")]

"""Attribution patching, one block against plain PyTorch (forward hooks and autograd) and nnsight, in one run.

The block: a clean and a corrupted prompt as two invokes, the metric (logit difference of the right and the wrong
answer at the corrupted prompt's last token), its backward pass, and per layer the gradient at the last token times
the clean - corrupted difference. Plain PyTorch does the same work by hand: a run of the clean prompt under
`no_grad`, a run of the corrupted one with every layer's output kept for autograd, `backward`, the same products.
Every contender's scores are checked against plain PyTorch's (within 1e-4 of the largest score) before timing.

    python bench/gradients.py [--tiny gpt2|llama] [--rounds 20] [--without-nnsight] [--json FILE]
"""

from __future__ import annotations

import argparse
import json
import sys
import warnings
from pathlib import Path

import torch
from models import default_checkpoint, load_torch_model, tiny_checkpoint
from timing import interleaved_medians

CLEAN = "The Eiffel Tower is in the city of"
CORRUPT = "The Colosseum is in the city of"
TOLERANCE = 1e-4


def layer_modules(model: torch.nn.Module) -> list[torch.nn.Module]:
    return list(model.transformer.h if hasattr(model, "transformer") else model.model.layers)


def answers(tokenizer) -> tuple[int, int]:
    return tokenizer(" Paris")["input_ids"][-1], tokenizer(" Rome")["input_ids"][-1]


def plain_pytorch(model: torch.nn.Module, tokenizer, right: int, wrong: int):
    clean = tokenizer(CLEAN, return_tensors="pt")
    corrupt = tokenizer(CORRUPT, return_tensors="pt")
    layers = layer_modules(model)

    def run() -> list[torch.Tensor]:
        kept: list[torch.Tensor] = []

        def keep(module, args, output):
            if not output.requires_grad:
                output = output.detach().requires_grad_(True)
            output.retain_grad()
            kept.append(output)
            return output

        clean_values: list[torch.Tensor] = []
        handles = [layer.register_forward_hook(lambda m, a, out: clean_values.append(out[:, -1])) for layer in layers]
        with torch.no_grad():
            model(**clean)
        for handle in handles:
            handle.remove()
        handles = [layer.register_forward_hook(keep) for layer in layers]
        logits = model(**corrupt).logits[0, -1]
        for handle in handles:
            handle.remove()
        (logits[right] - logits[wrong]).backward()
        with torch.no_grad():
            return [((c - v[:, -1]) * v.grad[:, -1]).sum() for c, v in zip(clean_values, kept)]

    return run


def ours(model, right: int, wrong: int):
    layers = list(model.transformer.h) if hasattr(model.config, "n_layer") else list(model.model.layers)

    def run() -> list[torch.Tensor]:
        with model.trace(device_map="cpu") as tracer:
            with tracer.invoke(CLEAN):
                clean = [layer.output[:, -1] for layer in layers]
            with tracer.invoke(CORRUPT):
                corrupt = [layer.output for layer in layers]
                logits = model.lm_head.output[0, -1]
                metric = logits[right] - logits[wrong]
            with metric.backward():
                scores = [((c - v[:, -1]) * v.grad[:, -1]).sum().save() for c, v in zip(clean, corrupt)]
        return [score.value for score in scores]

    return run


def nnsight_run(hf_model: torch.nn.Module, tokenizer, right: int, wrong: int):
    from nnsight import LanguageModel

    wrapped = LanguageModel(hf_model, tokenizer=tokenizer)
    layers = list(wrapped.transformer.h if hasattr(hf_model, "transformer") else wrapped.model.layers)

    def run() -> list[torch.Tensor]:
        with wrapped.trace() as tracer:
            clean = list().save()
            corrupt_last = list().save()
            grads = list().save()
            with tracer.invoke(CLEAN):
                for layer in layers:
                    clean.append(layer.output[:, -1])
            with tracer.invoke(CORRUPT):
                corrupt = [layer.output for layer in layers]
                for value in corrupt:
                    corrupt_last.append(value[:, -1])
                logits = wrapped.lm_head.output[0, -1]
                metric = logits[right] - logits[wrong]
                with metric.backward():
                    for value in reversed(corrupt):  # nnsight reads gradients in the order backward computes them
                        grads.insert(0, value.grad[:, -1])
        return [((c - v) * g).sum() for c, v, g in zip(clean, corrupt_last, grads)]

    return run


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tiny", choices=["gpt2", "llama"], help="a tiny model instead of the default model")
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--without-nnsight", action="store_true")
    parser.add_argument("--json", type=Path, metavar="FILE")
    args = parser.parse_args(argv)
    warnings.filterwarnings("ignore")
    from ndif_jupyter import Model

    folder = tiny_checkpoint(args.tiny) if args.tiny else default_checkpoint()
    model = Model(folder)
    model.dispatch("cpu")
    right, wrong = answers(model.tokenizer)
    reference = load_torch_model(folder, "cpu", model.loaded.dtype).requires_grad_(False)
    contenders = {
        "plain pytorch": plain_pytorch(reference, model.tokenizer, right, wrong),
        "ours": ours(model, right, wrong),
    }
    if not args.without_nnsight:
        nnsight_model = load_torch_model(folder, "cpu", model.loaded.dtype)  # nnsight needs the parameters' graph
        contenders["nnsight"] = nnsight_run(nnsight_model, model.tokenizer, right, wrong)
    expected = torch.stack(contenders["plain pytorch"]())
    scale = expected.abs().max().item()
    deviations = {}
    for name, run in contenders.items():
        got = torch.stack([torch.as_tensor(value).reshape(()) for value in run()])
        deviations[name] = (got - expected).abs().max().item() / scale
        if deviations[name] > TOLERANCE:
            raise SystemExit(f"{name}'s attribution scores differ from plain PyTorch's by {deviations[name]:.2e}")
    medians = interleaved_medians(contenders, args.rounds, warmup=3)
    base = medians["plain pytorch"]
    print(f"attribution patching, {len(expected)} layers, medians of {args.rounds} interleaved rounds")
    for name, seconds in medians.items():
        print(
            f"  {name:<14} {seconds * 1000:8.1f} ms  {seconds / base:5.2f}x plain PyTorch   "
            f"deviation {deviations[name]:.1e}"
        )
    if args.json:
        args.json.write_text(json.dumps({"medians": medians, "deviations": deviations, "layers": len(expected)}))
    return 0


if __name__ == "__main__":
    sys.exit(main())

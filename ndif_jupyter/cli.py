"""The `ndif-jupyter` command: `demo` runs the seed example on a model and prints what it generated and saved."""

from __future__ import annotations

import argparse
import sys
import time

PROMPT = "The Eiffel Tower is in the city of"


def demo(model_name: str | None, prompt: str, max_new_tokens: int, device_map: str | None) -> int:
    from .model import Model

    started = time.perf_counter()
    model = Model(model_name)
    print(f"Model {model.name}: module tree ready in {time.perf_counter() - started:.2f} s (no weights loaded yet)")
    layers = _layers(model)
    started = time.perf_counter()
    with model.generate(max_new_tokens=max_new_tokens, device_map=device_map, do_sample=False) as generator:
        with generator.invoke(prompt) as invoker:
            hidden = [layers[-1].output.save()]
            for _ in range(max_new_tokens - 1):
                invoker.next()
                hidden.append(layers[-1].output.save())
    elapsed = time.perf_counter() - started
    text = model.tokenizer.decode(generator.output[0], skip_special_tokens=True)
    print(f"Generated in {elapsed:.2f} s (weights loaded on first run): {text!r}")
    for step, proxy in enumerate(hidden):
        value = proxy.value
        print(
            f"  last layer output, step {step}: shape {list(value.shape)}, "
            f"dtype {str(value.dtype).replace('torch.', '')}, "
            f"norm of last token {value[0, -1].norm():.3f}"
        )
    return 0


def _layers(model):
    for path in ("model.layers", "transformer.h", "gpt_neox.layers", "model.decoder.layers"):
        node = model
        try:
            for part in path.split("."):
                node = getattr(node, part)
            return node
        except AttributeError:
            continue
    raise SystemExit(f"Cannot find the list of layers of {model.name}.")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="ndif-jupyter", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    run_demo = commands.add_parser("demo", help="generate from a prompt and save the last layer's hidden states")
    run_demo.add_argument("--model", default=None, help="repo id or checkpoint folder (default: the embedded model)")
    run_demo.add_argument("--prompt", default=PROMPT)
    run_demo.add_argument("--max-new-tokens", type=int, default=3)
    run_demo.add_argument("--device-map", default=None, help='"cpu", "cuda" or "auto" (default: cuda if present)')
    args = parser.parse_args(argv)
    if args.command == "demo":
        return demo(args.model, args.prompt, args.max_new_tokens, args.device_map)
    return 2


if __name__ == "__main__":
    sys.exit(main())

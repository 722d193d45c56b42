"""The options of `%ndif`/`%%ndif`: IPython's argument parser for ours, pass-through options for generate or forward."""

from __future__ import annotations

import ast
import difflib
import inspect
import typing
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import typing_extensions
from IPython.core.error import UsageError
from IPython.core.magic_arguments import argument, magic_arguments
from IPython.utils.process import arg_split

if TYPE_CHECKING:
    from ..model import Model

COMMANDS = ("generate", "trace", "models", "use")
CELL_COMMANDS = ("generate", "trace")

# Inputs the engine builds itself from the prompts; a cell cannot pass them.
_ENGINE_INPUTS = frozenset(
    {
        "self",
        "args",
        "kwargs",
        "input_ids",
        "attention_mask",
        "position_ids",
        "inputs_embeds",
        "labels",
        "cache",
        "past_key_values",
        "cache_position",
        "pad_token_id",
    }
)
_SAMPLING_OPTIONS = ("do_sample", "temperature", "top_k", "top_p", "repetition_penalty")
_GENERATION_ONLY = (*_SAMPLING_OPTIONS, "max_new_tokens", "seed")

_ARGUMENTS = (
    argument(
        "command",
        choices=COMMANDS,
        help=(
            "generate: the cell generates tokens; trace: the cell runs one forward pass; "
            "models (line form): list the models; use MODEL (line form): the model of later cells."
        ),
    ),
    argument(
        "model",
        nargs="?",
        metavar="MODEL",
        help=(
            "A Model in the namespace, a repo id or a checkpoint folder. Default: the model set by `%%ndif use`, "
            "else the namespace's `model` if it is a Model, else the embedded default model."
        ),
    ),
    argument("--max-new-tokens", type=int, metavar="N", help="Tokens to generate (generate only)."),
    argument(
        "--prompt",
        "-p",
        action="append",
        metavar="TEXT",
        help=(
            "A prompt; repeat for several. With prompts, the cell is the body of one invoke over them "
            "and `invoker` is bound; without, open invokes with `with invoke(prompt):`."
        ),
    ),
    argument("--device-map", metavar="D", help='Where the weights load: "cpu", "cuda", "auto", ...'),
    argument("--server", action="store_true", help="Run the graph in the Jupyter server extension."),
    argument("--no-display", action="store_true", help="Show nothing after the run."),
    argument("--do-sample", action="store_true", default=None, help="Sample instead of greedy decoding."),
    argument("--temperature", type=float, metavar="T", help="Sampling temperature."),
    argument("--top-k", type=int, metavar="K", help="Sample from the k most likely tokens."),
    argument(
        "--top-p", type=float, metavar="P", help="Sample from the smallest set of tokens with this total probability."
    ),
    argument("--repetition-penalty", type=float, metavar="R", help="Penalty for repeated tokens."),
    argument(
        "--seed",
        type=int,
        metavar="N",
        help="Sample from a generator seeded with N (the same tokens locally, on a server, in a batch).",
    ),
)


def ndif_arguments(func):
    """Decorate the `%ndif` magic with its argument parser, so that `%%ndif?` shows the options."""
    for decorator in reversed(_ARGUMENTS):
        func = decorator(func)
    return magic_arguments()(func)


@dataclass
class CellOptions:
    """What the `%%ndif` line asks for."""

    command: str
    model: str | None
    prompts: list[str] | None = None
    max_new_tokens: int | None = None
    device_map: str | None = None
    display: bool = True
    seed: int | None = None
    passthrough: dict[str, Any] = field(default_factory=dict)

    def block_options(self, model: Model) -> dict[str, Any]:
        """The keyword arguments of `model.generate(...)`/`model.trace(...)`: ours, then validated pass-through ones."""
        options = dict(self.passthrough)
        if self.max_new_tokens is not None:
            options["max_new_tokens"] = self.max_new_tokens
        accepted = accepted_options(model, self.command)
        for key in options:
            if key not in accepted:
                raise UsageError(_unknown_option_message(key, accepted, self.command))
        if self.seed is not None:
            options["seed"] = self.seed
        return options


def parse_line(magic_func, line: str) -> CellOptions:
    """Parse a `%ndif` line: known options with IPython's parser; any other `--name value` is passed through."""
    try:
        argv = arg_split(line, posix=True, strict=True)
    except ValueError as error:
        raise UsageError(f"The %ndif line cannot be split into arguments: {error} (is a quote left open?).") from None
    known, passthrough = _split_passthrough(magic_func, argv)
    args = magic_func.parser.parse_args(known)
    for key in _SAMPLING_OPTIONS:
        if getattr(args, key) is not None:
            passthrough[key] = getattr(args, key)
    if args.server and args.device_map:
        raise UsageError("Give either --server or --device-map, not both: --server runs the graph in the server.")
    if args.command == "trace":
        given = [f"--{key.replace('_', '-')}" for key in _GENERATION_ONLY if getattr(args, key) is not None]
        if given:
            raise UsageError(f"{', '.join(given)} applies to `%%ndif generate`; a trace runs one forward pass.")
    return CellOptions(
        command=args.command,
        model=args.model,
        prompts=args.prompt,
        max_new_tokens=args.max_new_tokens,
        device_map="server" if args.server else args.device_map,
        display=not args.no_display,
        seed=args.seed,
        passthrough=passthrough,
    )


def accepted_options(model: Model, command: str) -> frozenset[str]:
    """Names a pass-through option may have: the model's forward arguments, and for generate its generation config."""
    forward = _forward_arguments(model.loaded.meta_model.forward) - _ENGINE_INPUTS
    if command != "generate":
        return frozenset(forward)
    generation_config = getattr(model.loaded.meta_model, "generation_config", None)
    generation = {key for key in (generation_config.to_dict() if generation_config else {}) if not key.startswith("_")}
    return frozenset((forward | generation) - _ENGINE_INPUTS - {"transformers_version"})


_UNPACK = {getattr(module, "Unpack", None) for module in (typing, typing_extensions)} - {None}


def _forward_arguments(forward: Any) -> set[str]:
    """The forward's named parameters, plus the keys of a `**kwargs: Unpack[SomeTypedDict]` (transformers' kwargs)."""
    names = set()
    for parameter in inspect.signature(forward).parameters.values():
        if parameter.kind is not inspect.Parameter.VAR_KEYWORD:
            names.add(parameter.name)
            continue
        annotation = parameter.annotation
        if typing.get_origin(annotation) in _UNPACK:
            for typed_dict in typing.get_args(annotation):
                names.update(getattr(typed_dict, "__annotations__", {}))
    return names


def _option_strings(magic_func) -> dict[str, bool]:
    """Every option string of our parser, mapped to whether it takes a value."""
    strings = {}
    for action in magic_func.parser._actions:
        takes_value = action.nargs != 0
        for option in action.option_strings:
            strings[option] = takes_value
    return strings


def _split_passthrough(magic_func, argv: list[str]) -> tuple[list[str], dict[str, Any]]:
    """Our parser's tokens, and the other `--name value`, `--name=value` or bare `--flag` options as a dict."""
    known_options = _option_strings(magic_func)
    known: list[str] = []
    passthrough: dict[str, Any] = {}
    index = 0
    while index < len(argv):
        token = argv[index]
        name, separator, text = token.partition("=")
        has_value = bool(separator)
        if not token.startswith("--") or name in known_options:
            known.append(token)
            if known_options.get(name) and not has_value and index + 1 < len(argv):
                index += 1
                known.append(argv[index])
        else:
            if not has_value and index + 1 < len(argv) and not argv[index + 1].startswith("--"):
                index += 1
                text, has_value = argv[index], True
            passthrough[name[2:].replace("-", "_")] = _literal(text) if has_value else True
        index += 1
    return known, passthrough


def _literal(text: str) -> Any:
    lowered = text.lower()
    if lowered in ("true", "false"):
        return lowered == "true"
    if lowered in ("none", "null"):
        return None
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return text


_OWN_OPTIONS = frozenset(
    name[2:].replace("-", "_") for argument_ in _ARGUMENTS for name in argument_.args if name.startswith("--")
)
"""The magic's own options, as option keys (`prompt`, `max_new_tokens`), for close-name suggestions."""


def _unknown_option_message(key: str, accepted: frozenset[str], command: str) -> str:
    option = "--" + key.replace("_", "-")
    close = difflib.get_close_matches(key, sorted(accepted | _OWN_OPTIONS), n=3, cutoff=0.6)
    target = "Hugging Face's generate or the model's forward" if command == "generate" else "the model's forward"
    message = f"{option} is not an option of %%ndif {command}, nor an argument of {target}."
    if close:
        message += " Did you mean " + ", ".join("--" + c.replace("_", "-") for c in close) + "?"
    return message + " See `%%ndif?` for the options."

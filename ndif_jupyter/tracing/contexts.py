"""The two blocks a user opens: `model.generate(...)` (several tokens, `next()` between them) and `model.trace(...)`."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ..errors import TraceError
from ..ir.graph import several_sequences_problem
from ..ir.options import new_tokens_problem, option_problem
from ..loading.shapes import FORWARD_OPTIONS_FOR_GENERATE
from .invoker import Invoker
from .source import user_source
from .tracer import GraphRunner, Tracer

if TYPE_CHECKING:
    from .traced_model import TracedModel


class GenerateContext(Tracer):
    """`with model.generate(max_new_tokens=N, ...) as generator:` records interventions over N generated tokens.

    Keyword arguments other than `device_map` go to Hugging Face's `generate`. After the block,
    `generator.output` holds the token ids, [batch, prompt + new].
    """

    kind = "generate"

    def _prepared(self, options: dict[str, Any]) -> dict[str, Any]:
        __tracebackhide__ = True
        options = dict(options)
        if options.get("max_new_tokens") is None:
            options["max_new_tokens"] = self.traced.loaded.default_max_new_tokens()
        problem = several_sequences_problem(options)
        if problem is not None:
            raise TraceError(problem[0], user_source(), problem[1])
        check_option_values(options, self.traced.loaded.vocabulary_size, "generate")
        tokens = new_tokens_problem(options)
        if tokens is not None:
            raise TraceError(f"{tokens}.", user_source(), "Lower min_new_tokens, or raise max_new_tokens.")
        return options

    def forward_options(self) -> dict[str, Any]:
        options = {key: self.options[key] for key in FORWARD_OPTIONS_FOR_GENERATE if key in self.options}
        if "logits_to_keep" not in options and self.traced.shapes.takes("logits_to_keep"):
            options["logits_to_keep"] = 1  # as Hugging Face's generate does: the head runs on the last position only
        return options


def check_option_values(options: dict[str, Any], vocabulary: int, kind: str) -> None:
    """A TraceError at the user's line for an option whose value no run accepts (None leaves an option to its
    default and is not checked)."""
    __tracebackhide__ = True
    for key, value in options.items():
        problem = None if value is None else option_problem(key, value, vocabulary)
        if problem is not None:
            raise TraceError(
                f"The option {key}={value!r}: {problem}.",
                user_source(),
                f"Give {key} a value it accepts in `model.{kind}(...)` (or leave it out for its default).",
            )


class TraceContext(Tracer):
    """`with model.trace(prompt) as tracer:` records interventions on one forward pass.

    With a prompt, the whole block is one invoke over it; without one, open invokes with `tracer.invoke(...)`.
    Keyword arguments other than `device_map` go to the model's forward.
    """

    kind = "trace"

    def _prepared(self, options: dict[str, Any]) -> dict[str, Any]:
        __tracebackhide__ = True
        check_option_values(options, self.traced.loaded.vocabulary_size, "trace")
        return dict(options)

    def __init__(
        self,
        traced: TracedModel,
        model: Any,
        runner: GraphRunner,
        prompt: Any,
        device_map: Any,
        options: dict[str, Any],
        use_edits: bool = True,
    ):
        super().__init__(traced, model, runner, device_map, options, use_edits)
        self._prompt = prompt
        self._implicit: Invoker | None = None

    def __enter__(self) -> TraceContext:
        __tracebackhide__ = True
        super().__enter__()
        if self._prompt is not None:
            try:
                self._implicit = self.invoke(self._prompt)
                self._implicit.__enter__()
            except BaseException:
                self.traced.end(self)
                raise
        return self

    def invoke(self, prompt: Any) -> Invoker:
        __tracebackhide__ = True
        if self._implicit is not None:
            raise TraceError(
                "This trace already has its input (the prompt given to `model.trace(...)`).",
                user_source(),
                "Either pass the prompt to `model.trace(...)` or use `tracer.invoke(...)`, not both.",
            )
        return super().invoke(prompt)

    def next(self, count: int = 1) -> None:
        __tracebackhide__ = True
        invoker = self._implicit or self.current
        if invoker is None:
            raise TraceError(
                "`next()` moves to the next generated token; a trace runs one forward pass and has none.",
                user_source(),
                "Use `model.generate(max_new_tokens=N)` to intervene on generated tokens.",
            )
        self.advance(invoker, count)

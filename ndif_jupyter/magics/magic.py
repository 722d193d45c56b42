"""The `%ndif` line magic and `%%ndif` cell magic: a notebook cell becomes an intervention graph."""

from __future__ import annotations

import sys
from typing import Any

from IPython.core.error import UsageError
from IPython.core.magic import Magics, line_cell_magic, magics_class
from IPython.display import display

from ..errors import NDIFError
from ..tracing.tracer import Tracer
from .arguments import CELL_COMMANDS, CellOptions, ndif_arguments, parse_line
from .cell import compile_body, run_body
from .models import ModelChoice
from .result import CellResult
from .running import cell_header
from .tracebacks import report_in_cell, report_syntax_error


@magics_class
class NDIFMagics(Magics):
    """`%%ndif generate|trace [MODEL] [options]` runs its cell as a block; `%ndif models` and `%ndif use MODEL`."""

    def __init__(self, shell: Any = None):
        super().__init__(shell)
        self.models = ModelChoice()

    @line_cell_magic
    @ndif_arguments
    def ndif(self, line: str, cell: str | None = None) -> None:
        """Run a cell as an intervention graph on a language model: read and change its internals while it runs.

        As a cell magic, the cell body is recorded like the body of `with model.generate(...)` (or
        `model.trace(...)`); the graph runs when the cell ends. In the body, `model` is the cell's model, `invoke`
        opens an invoke (`with invoke("prompt"):`), `next()` moves the open invoke to the next generated token, and
        `generator` (or `tracer`) is the block. With --prompt, the body is already inside one invoke over the
        prompts, bound as `invoker`. Every name the body assigns a saved value to holds the tensor after the cell;
        `_ndif` holds the run's output ids, text and saved values. On an error nothing the body assigned is kept.

        Other `--name value` options go to Hugging Face's `generate` (or the model's forward for trace), for
        example `--min-new-tokens 2`, `--no-repeat-ngram-size 3`, `--output-attentions true`.

        As a line magic: `%ndif models` lists the models of this kernel and of the checkpoint cache;
        `%ndif use MODEL` makes MODEL the model of later cells that name none.

        Example::

            %%ndif generate --max-new-tokens 3 --prompt "The Eiffel Tower is in the city of"
            hidden = model.model.layers[-1].output.save()
            next()
            hidden2 = model.model.layers[-1].output.save()
        """
        options = parse_line(self.ndif, line)
        if cell is None:
            return self._line(options)
        if options.command not in CELL_COMMANDS:
            raise UsageError(f"`{options.command}` is a line magic: write `%ndif {options.command} ...` on a line.")
        self._cell(options, cell)
        return None

    def _namespace(self) -> dict[str, Any]:
        """The user namespace of the shell these magics were registered with."""
        if self.shell is None:
            raise UsageError("The ndif magics are not registered with an IPython shell.")
        return self.shell.user_ns

    # ----- %ndif models / use -----
    def _line(self, options: CellOptions) -> None:
        if options.command in CELL_COMMANDS:
            raise UsageError(
                f"`%ndif {options.command}` needs a cell: write `%%ndif {options.command}` as the first line of a cell."
            )
        if options.command == "models":
            print(self.models.listing(self._namespace()))
            return
        if options.model is None:
            raise UsageError("`%ndif use` needs a MODEL: a Model in the namespace, a repo id or a checkpoint folder.")
        model = self.models.use(options.model, self._namespace())
        print(f"Cells without a MODEL now run on {options.model} ({model.name}).")

    # ----- %%ndif generate / trace -----
    def _cell(self, options: CellOptions, cell: str) -> None:
        __tracebackhide__ = True
        model = self.models.resolve(options.model, self._namespace())
        block_options = options.block_options(model)
        block: Tracer
        try:
            if options.command == "generate":
                block = model.generate(device_map=options.device_map, **block_options)
            else:
                block = model.trace(device_map=options.device_map, **block_options)
            invoker = block.invoke(options.prompts) if options.prompts else None
        except NDIFError as error:
            raise UsageError(_without_source(error)) from None
        try:
            body = compile_body(self.shell, cell_header(self.shell), cell)
        except SyntaxError as error:
            if report_syntax_error(self.shell, error):
                return
            raise
        try:
            result = run_body(self.shell, model, block, body, invoker)
        except Exception as error:
            if report_in_cell(self.shell, error, body.filename):
                return
            raise
        self._namespace()["_ndif"] = result
        if options.display:
            display(_browser_or_summary(result))


def _browser_or_summary(result: CellResult) -> Any:
    """The activation browser of the cell's saved values, or the text summary when it saved none.

    The run has succeeded and its values are in the namespace by now, so a browser that cannot be built is reported
    and the summary shown instead of failing the cell.
    """
    if result.catalog is None or not result.catalog.entries:
        return result
    try:
        return result.browse()
    except Exception as error:  # the cell's work is done; only its picture is missing
        print(
            f"The activation browser could not be shown ({type(error).__name__}: {error}); the run's summary "
            "follows. `_ndif` holds the values.",
            file=sys.stderr,
        )
        return result


def _without_source(error: NDIFError) -> str:
    """An error about the `%%ndif` line, without the "Recorded at" line that names no line of the user's."""
    message = getattr(error, "message", None)
    if message is None:
        return str(error)
    hint = getattr(error, "hint", None)
    return f"{message}\n{hint}" if hint else message

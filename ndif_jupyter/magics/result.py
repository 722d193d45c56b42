"""CellResult: what the last `%%ndif` cell produced (`_ndif`), and its text and HTML summary."""

from __future__ import annotations

import html
from dataclasses import dataclass, field
from typing import Any

import torch

from ..ir.nested import labelled_leaves
from ..tracing.record import RunRecord
from ..widgets.catalog import Catalog


@dataclass
class CellResult:
    """The last `%%ndif` run, kept as `_ndif`.

    `output_ids` is the batch of token ids as generated ([rows, prompt + new], left-padded; None for a trace);
    `prompts` and `generated` are the decoded prompt and new text of each row; `saved` maps each name the cell
    assigned a saved value to to that value.
    """

    command: str
    model: str
    prompts: list[str]
    generated: list[str]
    output_ids: torch.Tensor | None
    saved: dict[str, Any] = field(default_factory=dict)
    new_tokens: int = 0
    seconds: float = 0.0
    catalog: Catalog | None = None

    @classmethod
    def from_record(cls, record: RunRecord, tokenizer: Any, saved: dict[str, Any], seconds: float) -> CellResult:
        """The result of a block that has run: each invoke's rows decoded without the batch's padding."""
        prompts, generated = [], []
        output_ids = record.output_ids if record.kind == "generate" else None
        for invoke in record.invokes:
            for index, row in enumerate(invoke.rows):
                prompts.append(tokenizer.decode(row, skip_special_tokens=True))
                new = invoke.generated[index] if output_ids is not None else []
                generated.append(tokenizer.decode(new, skip_special_tokens=True))
        new_tokens = output_ids.shape[1] - record.prompt_length if output_ids is not None else 0
        return cls(record.kind, record.model_name, prompts, generated, output_ids, saved, new_tokens, seconds)

    def browse(self, view: str | None = None) -> Any:
        """The activation browser of this run's saved values (`view`: the view shown first)."""
        from ..widgets import browse  # the widget libraries load with the first browser, not with the magics

        return browse(self, view=view)

    @property
    def text(self) -> list[str]:
        """Each row's prompt followed by its generated text."""
        return [prompt + new for prompt, new in zip(self.prompts, self.generated)]

    def summary(self) -> list[tuple[str, str, str, str]]:
        """One (name, shape, dtype, norm) row per saved tensor; tuples and lists get one row per element."""
        rows = []
        for name, value in self.saved.items():
            for label, leaf in labelled_leaves(name, value):
                if isinstance(leaf, torch.Tensor):
                    norm = f"{leaf.detach().double().norm().item():.4g}" if leaf.is_floating_point() else "-"
                    rows.append((label, str(list(leaf.shape)), str(leaf.dtype).replace("torch.", ""), norm))
                else:
                    rows.append((label, "-", type(leaf).__name__, repr(leaf)[:20]))
        return rows

    def __repr__(self) -> str:
        lines = [self.headline()]
        for index, (prompt, new) in enumerate(zip(self.prompts, self.generated)):
            shown = f"{prompt!r} -> {new!r}" if self.command == "generate" else repr(prompt)
            lines.append(f"  [{index}] {shown}")
        rows = self.summary()
        if rows:
            lines.append("saved:")
            widths = [max(len(row[column]) for row in rows) for column in range(3)]
            for name, shape, dtype, norm in rows:
                lines.append(f"  {name:<{widths[0]}}  {shape:<{widths[1]}}  {dtype:<{widths[2]}}  norm {norm}")
        else:
            lines.append("saved: nothing (call .save() on a value to keep it)")
        return "\n".join(lines)

    def _repr_html_(self) -> str:
        parts = [f"<div class='ndif-result'><div><b>{html.escape(self.headline())}</b></div>"]
        for prompt, new in zip(self.prompts, self.generated):
            parts.append(
                "<div style='font-family:monospace;white-space:pre-wrap'>"
                f"<span style='opacity:0.7'>{html.escape(prompt)}</span><b>{html.escape(new)}</b></div>"
            )
        rows = self.summary()
        if rows:
            parts.append("<table><tr><th>saved</th><th>shape</th><th>dtype</th><th>norm</th></tr>")
            for row in rows:
                parts.append("<tr>" + "".join(f"<td><code>{html.escape(cell)}</code></td>" for cell in row) + "</tr>")
            parts.append("</table>")
        parts.append("</div>")
        return "".join(parts)

    def headline(self) -> str:
        rows = len(self.prompts)
        if self.command == "generate":
            new = self.new_tokens
            what = f"generated {new} token{'s' * (new != 1)} for {rows} prompt{'s' * (rows != 1)}"
        else:
            what = f"traced {rows} prompt{'s' * (rows != 1)}"
        return f"{self.model}: {what} in {self.seconds:.2f} s"

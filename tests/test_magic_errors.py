"""A failing `%%ndif` cell: the traceback starts at the cell's own line, the cell fails, the namespace is untouched."""

from __future__ import annotations

import re

import pytest
import torch
from conftest import hook_count

from ndif_jupyter import ExecutionError, Model, TraceError

pytestmark = pytest.mark.kernel


def run(ip, cell: str):
    return ip.run_cell(cell, store_history=True)


def shown_traceback(capsys) -> str:
    return re.sub(r"\x1b\[[0-9;]*m", "", capsys.readouterr().out)


def assert_points_at(text: str, cell_number: int, line: int, code: str) -> None:
    assert f"Cell In[{cell_number}], line {line}" in text, text
    assert re.search(rf"----> {line}\s+{re.escape(code)}", text), text
    assert "ndif_jupyter" not in text and "run_cell_magic" not in text and "skipping hidden" not in text, text
    assert "site-packages" not in text, text


@pytest.mark.parametrize(
    "line3, error_type, message",
    [
        ("h = model.transformer.hh[0].output", AttributeError, "Did you mean `h`"),
        ("h = model.transformer.h[0].output @ torch.ones(3, 3)", TraceError, "fails on the traced values"),
        ("h = 1 / 0", ZeroDivisionError, "division by zero"),
        ("h = undefined_name", NameError, "undefined_name"),
    ],
)
def test_an_error_in_the_body_points_at_its_cell_line(ip, gpt2: Model, capsys, line3, error_type, message):
    ip.user_ns.update({"gpt2": gpt2, "torch": torch})
    result = run(
        ip,
        f"""%%ndif generate gpt2 --max-new-tokens 2 --prompt "Hello world"
first = model.transformer.h[0].output.save()
{line3}
last = model.transformer.h[-1].output.save()
""",
    )
    assert not result.success, "the cell is marked failed, so Run All stops"
    assert isinstance(result.error_in_exec, error_type) and message in str(result.error_in_exec)
    number = result.execution_count
    assert_points_at(shown_traceback(capsys), number, 3, line3)
    assert ip.last_execution_result is result


def test_a_failed_cell_leaves_the_namespace_as_it_was(ip, gpt2: Model):
    ip.user_ns.update({"gpt2": gpt2, "kept": "before", "_ndif": "previous run"})
    result = run(
        ip,
        """%%ndif generate gpt2 --max-new-tokens 2 --prompt "Hello world"
kept = model.transformer.h[0].output.save()
fresh = model.transformer.h[1].output.save()
def helper():
    return 1
model.transformer.nope
""",
    )
    assert not result.success
    ns = ip.user_ns
    assert ns["kept"] == "before" and "fresh" not in ns and "helper" not in ns
    assert ns["_ndif"] == "previous run"
    for name in ("model", "invoke", "next", "generator", "invoker"):
        assert name not in ns
    assert gpt2.local_model is None, "nothing ran"
    assert run(
        ip,
        """%%ndif trace gpt2 --prompt "Hello world"
again = model.transformer.h[0].output.save()
""",
    ).success, "the model is not left inside an open block"


def test_an_error_while_the_graph_runs_points_at_the_line_that_recorded_it(ip, gpt2: Model, capsys):
    ip.user_ns.update({"gpt2": gpt2, "torch": torch})
    result = run(
        ip,
        """%%ndif trace gpt2 --prompt "Hello world"
before = model.transformer.h[0].output.save()
h = model.transformer.h[1].output

bad = h[:, torch.tensor([100])].save()
""",
    )
    assert not result.success
    assert isinstance(result.error_in_exec, ExecutionError)
    text = shown_traceback(capsys)
    assert_points_at(text, result.execution_count, 5, "bad = h[:, torch.tensor([100])].save()")
    assert f"Recorded at:\n  Cell In[{result.execution_count}], line 5" in text
    assert "before" not in ip.user_ns and "h" not in ip.user_ns
    assert hook_count(gpt2.local_model) == 0


def test_a_syntax_error_points_at_its_cell_line(ip, gpt2: Model, capsys):
    ip.user_ns["gpt2"] = gpt2
    result = run(
        ip,
        """%%ndif trace gpt2 --prompt "Hello world"
h = model.transformer.h[0].output.save()
h2 = (model.transformer.h[1].output.save()
""",
    )
    assert not result.success and isinstance(result.error_in_exec, SyntaxError)
    assert result.error_in_exec.lineno == 3
    text = shown_traceback(capsys)
    assert f"Cell In[{result.execution_count}], line 3" in text and "h2 = (model" in text


def test_an_error_inside_a_function_of_an_earlier_cell_shows_both_lines(ip, gpt2: Model, capsys):
    ip.user_ns["gpt2"] = gpt2
    definition = run(ip, "def project(envoy):\n    return envoy.output @ envoy.output\n")
    assert definition.success
    result = run(
        ip,
        """%%ndif trace gpt2 --prompt "Hello world"
h = project(model.transformer.h[0])
""",
    )
    assert isinstance(result.error_in_exec, TraceError)
    text = shown_traceback(capsys)
    assert f"Cell In[{result.execution_count}], line 2" in text
    assert f"Cell In[{definition.execution_count}], line 2" in text and "return envoy.output @ envoy.output" in text
    assert "ndif_jupyter" not in text


def test_called_from_code_the_magic_raises_so_the_caller_stops(ip, gpt2: Model):
    ip.user_ns["gpt2"] = gpt2
    result = run(
        ip,
        """reached = False
get_ipython().run_cell_magic("ndif", 'trace gpt2 --prompt "Hello world"', "model.transformer.nope")
reached = True
""",
    )
    assert isinstance(result.error_in_exec, AttributeError)
    assert ip.user_ns["reached"] is False

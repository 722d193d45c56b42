"""`%%ndif` in a real Jupyter kernel: results, the error reply of a failing cell, "Run All" stopping, completion."""

from __future__ import annotations

import nbformat
import pytest
from jupyter_client.manager import start_new_kernel
from nbclient import NotebookClient
from nbclient.exceptions import CellExecutionError

pytestmark = [pytest.mark.kernel, pytest.mark.slow]

TIMEOUT = 120


@pytest.fixture(scope="module")
def kernel():
    manager, client = start_new_kernel(kernel_name="python3", startup_timeout=TIMEOUT)
    try:
        yield client
    finally:
        client.stop_channels()
        manager.shutdown_kernel(now=True)


def execute(client, code: str) -> tuple[dict, list[dict]]:
    """Run `code`; the execute reply's content and the IOPub messages it produced."""
    messages: list[dict] = []
    reply = client.execute_interactive(code, timeout=TIMEOUT, output_hook=messages.append)
    return reply["content"], messages


def test_a_cell_runs_in_the_kernel_and_a_failing_cell_replies_with_its_error(kernel, gpt2_dir):
    content, _ = execute(kernel, f"%load_ext ndif_jupyter\ntiny = {str(gpt2_dir)!r}")
    assert content["status"] == "ok"

    content, messages = execute(
        kernel,
        """%%ndif generate $tiny --max-new-tokens 2 --prompt "Hello world"
hidden = model.transformer.h[-1].output.save()
""",
    )
    assert content["status"] == "ok"
    shown = [m["content"]["data"] for m in messages if m["msg_type"] == "display_data"]
    browsers = [data for data in shown if "image/png" in data]
    assert len(browsers) == 1 and "application/vnd.jupyter.widget-view+json" in browsers[0]
    assert "generated 2 tokens for 1 prompt" in browsers[0]["text/plain"]
    assert "hidden: [1, 2, 64] float32 at model.transformer.h[3].output" in browsers[0]["text/plain"]
    streams = "".join(m["content"]["text"] for m in messages if m["msg_type"] == "stream")
    assert "Loading weights" not in streams and "%|" not in streams, "no progress bar is left in the output"
    progress = [data for data in shown if data["text/plain"].startswith("Loading the weights of")]
    updates = [m["content"]["data"]["text/plain"] for m in messages if m["msg_type"] == "update_display_data"]
    assert len(progress) == 1 and updates[-1].startswith(f"Loaded {gpt2_dir} on cpu in "), "one line, then done"
    content, messages = execute(kernel, "tuple(hidden.shape), type(hidden).__name__")
    results = [m["content"]["data"]["text/plain"] for m in messages if m["msg_type"] == "execute_result"]
    assert results == ["((1, 2, 64), 'Tensor')"]

    content, messages = execute(
        kernel,
        """%%ndif generate $tiny --max-new-tokens 2 --prompt "Hello world"
first = model.transformer.h[0].output.save()
second = model.transformer.h[0].output @ model.transformer.h[0].output
""",
    )
    assert content["status"] == "error"
    assert content["ename"] == "TraceError" and "fails on the traced values" in content["evalue"]
    errors = [m["content"] for m in messages if m["msg_type"] == "error"]
    assert len(errors) == 1, "the error is shown once"
    text = "\n".join(errors[0]["traceback"])
    number = content["execution_count"]
    assert f"Cell In[{number}], line 3" in _plain(text)
    assert "ndif_jupyter" not in text and "run_cell_magic" not in text
    content, messages = execute(kernel, "'first' in globals(), 'model' in globals()")
    results = [m["content"]["data"]["text/plain"] for m in messages if m["msg_type"] == "execute_result"]
    assert results == ["(False, False)"]


def test_completion_through_the_kernel(kernel, gpt2_dir):
    execute(kernel, f"%load_ext ndif_jupyter\ntiny = {str(gpt2_dir)!r}")
    code = f"%%ndif generate {gpt2_dir}\nh = model.transformer.h[0].ml"
    kernel.complete(code, len(code))
    reply = kernel.get_shell_msg(timeout=TIMEOUT)
    content = reply["content"]
    assert content["status"] == "ok"
    inserted = [code[: content["cursor_start"]] + match + code[content["cursor_end"] :] for match in content["matches"]]
    assert code[:-2] + "mlp" in inserted


def test_run_all_stops_at_a_failing_ndif_cell(gpt2_dir):
    notebook = nbformat.v4.new_notebook()
    notebook.cells = [
        nbformat.v4.new_code_cell("%load_ext ndif_jupyter"),
        nbformat.v4.new_code_cell(f'%%ndif trace {gpt2_dir} --prompt "Hello world"\nh = model.transformer.hh'),
        nbformat.v4.new_code_cell("reached = True"),
    ]
    client = NotebookClient(notebook, timeout=TIMEOUT, kernel_name="python3")
    with pytest.raises(CellExecutionError) as caught:
        client.execute()
    assert "AttributeError" in str(caught.value) and "Did you mean `h`" in str(caught.value)
    assert notebook.cells[2].execution_count is None and notebook.cells[2].outputs == []


def _plain(text: str) -> str:
    import re

    return re.sub(r"\x1b\[[0-9;]*m", "", text)


def test_loading_the_extension_binds_model_and_browse_where_the_names_are_free(gpt2_dir):
    manager, client = start_new_kernel(kernel_name="python3", startup_timeout=TIMEOUT)
    try:
        content, _ = execute(client, "browse = 'mine'\n%load_ext ndif_jupyter")
        assert content["status"] == "ok"
        content, messages = execute(client, f"model = Model({str(gpt2_dir)!r})\nbrowse, type(model).__module__")
        assert content["status"] == "ok", content
        results = [m["content"]["data"]["text/plain"] for m in messages if m["msg_type"] == "execute_result"]
        assert results == ["('mine', 'ndif_jupyter.model')"]
    finally:
        client.stop_channels()
        manager.shutdown_kernel(now=True)


def test_a_kernel_started_for_a_notebook_names_the_notebook_and_the_running_cell():
    """What a block sent to a server says it came from: `JPY_SESSION_NAME`, which a Jupyter server sets for a
    notebook's kernel, and the `cellId` JupyterLab puts in an execute request's metadata."""
    import os

    environment = {**os.environ, "JPY_SESSION_NAME": "/srv/work/sidebar.ipynb"}
    manager, client = start_new_kernel(kernel_name="python3", startup_timeout=TIMEOUT, env=environment)
    try:
        code = "from ndif_jupyter.runners.origin import running_origin\nprint(running_origin())"
        content = {"code": code, "silent": False, "store_history": True, "user_expressions": {}, "allow_stdin": False}
        request = client.session.msg("execute_request", content, metadata={"cellId": "0b7c1e2a-cell"})
        client.shell_channel.send(request)
        printed = []
        while True:
            message = client.get_iopub_msg(timeout=TIMEOUT)
            if message["parent_header"].get("msg_id") != request["header"]["msg_id"]:
                continue
            if message["msg_type"] == "stream":
                printed.append(message["content"]["text"])
            if message["msg_type"] == "status" and message["content"]["execution_state"] == "idle":
                break
        assert "".join(printed).strip() == "Origin(notebook='/srv/work/sidebar.ipynb', cell='0b7c1e2a-cell')"
        content, messages = execute(client, "print(running_origin())")
        printed = [m["content"]["text"] for m in messages if m["msg_type"] == "stream"]
        assert printed == ["Origin(notebook='/srv/work/sidebar.ipynb', cell='')\n"], "a request without a cell id"
    finally:
        client.stop_channels()
        manager.shutdown_kernel(now=True)

"""A real `jupyter server` process with the extension enabled on install, and a real kernel it started."""

from __future__ import annotations

import pytest

from ndif_testing.jupyter_process import JupyterServerProcess

pytestmark = [pytest.mark.server, pytest.mark.kernel, pytest.mark.slow]

PROMPT = "The Eiffel Tower is in the city of"


def test_a_kernel_runs_graphs_on_its_server_and_gets_the_local_values(gpt2_dir, tmp_path):
    config = {"NDIFServer": {"models": [str(gpt2_dir)], "response_path": str(tmp_path / "responses")}}
    with JupyterServerProcess(config, base_url="/lab/user/") as server:
        assert "ndif_server" in server.log_path.read_text()
        kernel = server.start_kernel()
        run = kernel.execute(f"""
import os, torch
from ndif_jupyter import Model
print(os.environ["NDIF_SERVER_URL"])
model = Model({str(gpt2_dir)!r})
with model.generate(max_new_tokens=3, device_map="server") as remote:
    with remote.invoke({PROMPT!r}):
        remote_hidden = model.transformer.h[-1].output.save()
print("weights in the kernel after the server run:", model.local_model is not None)
with model.generate(max_new_tokens=3) as local:
    with local.invoke({PROMPT!r}):
        local_hidden = model.transformer.h[-1].output.save()
print("equal:", torch.equal(remote_hidden.value, local_hidden.value), torch.equal(remote.output, local.output))
""")
        assert run.status == "ok", run
        assert f"http://127.0.0.1:{server.port}/lab/user/ndif/api/" in run.stdout
        assert "weights in the kernel after the server run: False" in run.stdout
        assert "equal: True True" in run.stdout

        assert kernel.execute("%load_ext ndif_jupyter").status == "ok"
        run = kernel.execute(f"""%%ndif generate model --server --max-new-tokens 3 --prompt {PROMPT!r} --no-display
magic_hidden = model.transformer.h[-1].output.save()
""")
        assert run.status == "ok", run
        assert kernel.execute("print(torch.equal(magic_hidden, local_hidden.value))").stdout.strip() == "True"

        jobs = server.get("ndif/api/jobs")["jobs"]
        assert [job["status"] for job in jobs] == ["done", "done"]
        kernel.restart()
        run = kernel.execute("""
import torch
from ndif_jupyter.client import ServerClient
client = ServerClient.from_environment()
first = client.jobs()[0]
result = client.result(first["id"])
print(first["status"], [tuple(value.shape) for value in result.saved.values()], tuple(result.output_ids.shape))
""")
        assert run.status == "ok", run
        assert run.stdout.strip().startswith("done [(1, ")


def test_the_logit_lens_of_a_server_run_runs_on_the_server(gpt2_dir, tmp_path):
    """After a `--server` cell the kernel has no weights; the browser's lens is a second small job on the server."""
    config = {"NDIFServer": {"models": [str(gpt2_dir)], "response_path": str(tmp_path / "responses")}}
    with JupyterServerProcess(config) as server:
        kernel = server.start_kernel()
        assert (
            kernel.execute(
                f"%load_ext ndif_jupyter\nfrom ndif_jupyter import Model\nmodel = Model({str(gpt2_dir)!r})"
            ).status
            == "ok"
        )
        run = kernel.execute(f"""%%ndif trace model --server --prompt {PROMPT!r}
stack = [block.output.save() for block in model.transformer.h]
""")
        assert run.status == "ok", run
        (shown,) = run.displays
        assert "application/vnd.jupyter.widget-view+json" in shown and "image/png" in shown
        run = kernel.execute("""
import torch
from ndif_jupyter.widgets.lens import logit_lens
browser = _ndif.browse(view="lens")
remote = browser.lens_result()
print("weights in the kernel:", model.local_model is not None)
local = logit_lens(model, torch.stack([hidden[0] for hidden in stack]), k=10, device_map="cpu")
print(browser.lens["status"], torch.equal(remote.ids, local.ids), torch.allclose(remote.probs, local.probs, atol=1e-6))
""")
        assert run.status == "ok", run
        assert "weights in the kernel: False" in run.stdout
        assert "ready True True" in run.stdout
        jobs = server.get("ndif/api/jobs")["jobs"]
        assert [job["status"] for job in jobs] == ["done", "done"]

"""NDIFSettings: what an NDIF server is configured with, the same for the server extension and the hub service."""

from __future__ import annotations

import dataclasses
import os
from typing import Any

from jupyter_core.paths import jupyter_data_dir
from traitlets import Dict, Enum, Float, Integer, List, Unicode, Union, default
from traitlets.config import Configurable

from ndif_jupyter.loading.checkpoints import DEFAULT_MODEL
from ndif_jupyter.protocol.limits import Limits


class NDIFSettings(Configurable):
    """The models served, where jobs run, where results are kept, and every limit a request and a user are held to.

    Set as `c.NDIFServer.<name>` for the server extension, or as keyword arguments of `ndif_server.hub.configure_hub`
    for a hub's service.
    """

    backend = Enum(
        ["local", "gateway"],
        default_value="local",
        config=True,
        help="Where jobs run: 'local' (this process) or 'gateway' (kernels on a Kernel Gateway).",
    )
    gateway_url = Unicode("", config=True, help="The Jupyter Kernel Gateway of the GPU host (backend 'gateway').")
    gateway_auth_token = Unicode("", config=True, help="The gateway's auth token; it never leaves this process.")
    gateway_kernel_name = Unicode("python3", config=True, help="The kernel spec the gateway starts for a model.")
    gateway_ca_certs = Unicode(
        "", config=True, help="A CA bundle (PEM file) to check the gateway's TLS certificate, e.g. a self-signed one."
    )
    gateway_request_timeout = Float(30.0, config=True, help="Seconds to wait for one gateway REST call.")
    gateway_warm_timeout = Float(900.0, config=True, help="Seconds to wait for a gateway kernel to load its model.")
    gateway_job_timeout = Float(3600.0, config=True, help="Seconds to wait for one job on the gateway.")
    models = List(
        Unicode(), config=True, help="The models served: names from the checkpoint cache or hub, or checkpoint folders."
    )
    response_path = Unicode(config=True, help="The folder where job records and results are kept.")
    device_map = Union(
        [Unicode(), Dict()],
        default_value=None,
        allow_none=True,
        config=True,
        help="Where served weights load ('cpu', 'cuda', 'auto', ...); default: the GPU if any.",
    )
    max_new_tokens = Integer(512, config=True, help="The most tokens one job may generate.")
    max_result_bytes = Integer(2 * 1024**3, config=True, help="The largest result one job may produce.")
    max_nodes = Integer(20_000, config=True, help="The most nodes one graph may have.")
    max_batch_size = Integer(64, config=True, help="The most prompts one job may run together.")
    max_prompt_tokens = Integer(8192, config=True, help="The longest prompt, in tokens.")
    keep_jobs = Integer(1000, config=True, help="How many finished jobs (and their results) are kept on disk.")
    max_request_bytes = Integer(
        256 * 1024**2, config=True, help="The largest request body; a larger one is refused (413) unread."
    )
    max_memory_bytes = Integer(
        8 * 1024**3,
        config=True,
        help="The most memory one job's graph values (constants, intermediates, saved copies) may hold at once, "
        "computed before it runs and checked while it runs.",
    )
    max_job_seconds = Float(600.0, config=True, help="The longest one job may run; it then ends with an error.")
    max_queued_jobs = Integer(200, config=True, help="The most jobs waiting for one model; more are refused (429).")
    max_queued_per_user = Integer(
        32, config=True, help="The most jobs one user may have waiting or running; more are refused (429)."
    )
    max_stored_bytes_per_user = Integer(
        8 * 1024**3,
        config=True,
        help="The most result bytes kept for one user: when a new result passes it, the user's oldest results are "
        "removed; a job whose result could not fit beside the user's waiting jobs is refused (429).",
    )
    batch_jobs = Integer(
        8,
        config=True,
        help="The most waiting jobs of one model run together as one batched forward pass (co-batching), each with "
        "its own values, errors and cancel; 1 runs each job alone.",
    )
    replicas = Integer(
        1,
        config=True,
        help="Copies of each served model: worker threads with their own weights (local; see replica_device_maps) or "
        "warm kernels on the gateway. The next batch goes to the least-loaded copy.",
    )
    replica_device_maps = List(
        Union([Unicode(), Dict()]),
        config=True,
        help="Where each local replica's weights load (e.g. ['cuda:0', 'cuda:1']); default: device_map for all.",
    )
    admission_threads = Integer(2, config=True, help="Threads that check requests before they are queued.")
    max_admitting = Integer(
        8, config=True, help="The most requests being checked at once (2 per user); more are refused (429)."
    )

    @default("models")
    def _default_models(self) -> list[str]:
        return [DEFAULT_MODEL]

    @default("response_path")
    def _default_response_path(self) -> str:
        return os.path.join(jupyter_data_dir(), "ndif", "responses")

    @property
    def limits(self) -> Limits:
        return Limits(
            max_nodes=self.max_nodes,
            max_new_tokens=self.max_new_tokens,
            max_batch_size=self.max_batch_size,
            max_prompt_tokens=self.max_prompt_tokens,
            max_result_bytes=self.max_result_bytes,
            max_request_bytes=self.max_request_bytes,
            max_memory_bytes=self.max_memory_bytes,
            max_job_seconds=self.max_job_seconds,
        )

    def limits_document(self) -> dict[str, Any]:
        """The limits as GET models reports them: a request's, and a user's."""
        document: dict[str, Any] = dataclasses.asdict(self.limits)
        document.update(
            max_queued_jobs=self.max_queued_jobs,
            max_queued_per_user=self.max_queued_per_user,
            max_stored_bytes_per_user=self.max_stored_bytes_per_user,
        )
        return document


def setting_names() -> list[str]:
    """The names `configure_hub` and the hub service accept: every configurable trait of NDIFSettings."""
    return sorted(NDIFSettings.class_trait_names(config=True))

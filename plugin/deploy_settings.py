"""What a deployment reads of the run's settings: ``serving.deploy`` takes a ``DeployOptions`` and never imports
the options or the load stage, so this glue fills one from ``Settings``."""

from __future__ import annotations

from plugin.load.workload import default_max_model_len
from plugin.options import Settings
from plugin.serving.deploy import DeployOptions


def deploy_options(settings: Settings) -> DeployOptions:
    """The settings a deployment needs, the server's max-model-len resolved (the workloads' default)."""
    return DeployOptions(
        vllm_python=settings.vllm_python,
        model=settings.model,
        model_cache_dir=settings.model_cache_dir,
        max_model_len=settings.max_model_len or default_max_model_len(settings),
        dtype=settings.dtype,
        vllm_args=settings.vllm_args,
        kv_connector=settings.kv_connector,
        server_start_timeout_s=settings.server_start_timeout_s,
        request_timeout_s=settings.request_timeout_s,
        vllm_url=settings.vllm_url,
        vllm_port=settings.vllm_port,
        ray_address=settings.ray_address,
        nodes={"server": settings.server_node, "prefill": settings.prefill_node, "decode": settings.decode_node},
        ray_placement_timeout_s=settings.ray_placement_timeout_s,
    )

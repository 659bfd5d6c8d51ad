"""Which power sampler a run opens: over its budget's GPUs here (NVML, nvidia-smi, or none saying why), over a
cluster's DCGM exporters (``--power-source``), or over every Ray node with GPUs (``--ray-address``)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from plugin.power import NoneBackend, PowerBackend, Sampler, open_backend
from plugin.power.dcgm import DcgmBackend
from plugin.power.remote_sampler import ray_sampler
from plugin.session import RunSession

if TYPE_CHECKING:
    from plugin.serving.ray_placement import RayPlacement


def power_backend(bench_session: RunSession, gpus: tuple[int, ...]) -> PowerBackend:
    settings = bench_session.settings
    if settings.power_sources:  # a cluster's exporters: their GPUs, wherever the servers run
        return DcgmBackend(settings.power_sources)
    if settings.power_backend == "none":
        return NoneBackend("power not measured: --power-backend none")
    if not gpus:
        why = bench_session.inventory.nvml_error or "no GPU was given with --gpus"
        return NoneBackend(f"power not measured: this run uses no NVIDIA GPU ({why})")
    return open_backend(settings.power_backend, gpus, round(settings.gpu_sample_ms))  # type: ignore[arg-type]


def open_sampler(bench_session: RunSession, ray_cluster: RayPlacement | None) -> Sampler:
    """The run's sampler: over its budget's GPUs here, a cluster's exporters, or every Ray node with GPUs."""
    settings = bench_session.settings
    assert bench_session.results is not None
    folder = bench_session.results.path.parent
    if ray_cluster is not None and settings.power_backend != "none" and not settings.power_sources:
        nodes = [(node.node_id, node.address) for node in ray_cluster.nodes() if node.gpus]
        return ray_sampler(nodes, folder, settings.gpu_sample_ms)
    return Sampler(power_backend(bench_session, bench_session.budget), folder, period_ms=settings.gpu_sample_ms)

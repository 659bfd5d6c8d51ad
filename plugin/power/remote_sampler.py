"""Power on a Ray cluster in the runner's terms: the ``Sampler`` over a ``RemoteBackend``, which re-measures the
nodes' clock offsets at each window and carries their error bound, and ``ray_sampler``, which starts it on the
nodes with GPUs. ``ray`` is imported inside functions only.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

from plugin.power.backend import PowerError
from plugin.power.node_sampler import start_node_samplers
from plugin.power.nvml_loader import STAND_IN_ENV, stand_in
from plugin.power.remote_backend import RemoteBackend
from plugin.power.sampler import Sampler
from plugin.power.window import WindowMeasurement


class RemoteSampler(Sampler):
    """The ``Sampler`` over a ``RemoteBackend``: each window re-measures the nodes' clock offsets first and carries
    their error bound (``WindowMeasurement.clock_error_s``), which ``analysis.uncertainty`` adds to its edges."""

    backend: RemoteBackend

    def begin_window(self, name: str, gpus: Sequence[int] | None = None) -> None:
        self.backend.measure_offsets()
        super().begin_window(name, gpus)

    def end_window(self, name: str) -> WindowMeasurement:
        """The window, with the bound on its nodes' clock offsets as measured at its beginning."""
        return replace(super().end_window(name), clock_error_s=self.backend.clock_error_s())


def ray_sampler(nodes: Sequence[tuple[str, str]], folder: Path, period_ms: float) -> RemoteSampler:
    """Samplers on ``nodes`` (``(node id, address)``, those with GPUs). The NVML stand-in this process uses, if
    any, is handed to them (the suite's tests run every node on the fake)."""
    if not nodes:
        raise PowerError("no node of the Ray cluster has a GPU (ray start --num-gpus)")
    chosen = stand_in()
    handles = start_node_samplers(nodes, period_ms, {STAND_IN_ENV: chosen} if chosen else None)
    try:
        backend = RemoteBackend(handles)
    except BaseException:
        import ray

        for handle in handles:
            ray.kill(handle.actor, no_restart=True)
        raise
    return RemoteSampler(backend, folder, period_ms=period_ms)

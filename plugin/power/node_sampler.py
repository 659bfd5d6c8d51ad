"""The power sampler on one node of a Ray cluster, as a Ray actor: it reads the node's GPUs through the local NVML
backend (``PD_ENERGY_BENCH_NVML_MODULE`` is honoured there, so tests run it on the fake) every period in a thread,
and keeps the samples, on the node's own clock, until ``plugin.power.remote_backend`` drains them. ``ray`` is
imported inside functions only.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from plugin.clock import now_s
from plugin.power.backend import PowerReadError, Sample

MAX_BUFFERED = 200_000
"""Samples a node keeps between drains (about 80 min of two GPUs at 50 ms); older ones are dropped and counted."""


@dataclass(frozen=True, slots=True)
class DeviceId:
    """Which GPU a sample is from, cluster-wide: its node, its NVML index there, its UUID."""

    node_id: str
    node_address: str
    index: int
    uuid: str | None


@dataclass(frozen=True, slots=True)
class RemoteSample:
    """A node's sample, its ``t_s`` still on the node's clock and ``gpu`` the node's own index."""

    device: DeviceId
    sample: Sample


class NodeSampler:
    """Runs on one node (as a Ray actor, see ``start_node_samplers``): reads the node's GPUs every ``period_ms``
    in a thread and keeps the samples until ``drain()``. ``clock_shift_s`` moves its clock (tests only)."""

    def __init__(self, node_id: str, node_address: str, period_ms: float = 50.0, clock_shift_s: float = 0.0) -> None:
        from plugin.power.devices import inventory
        from plugin.power.nvml import NvmlBackend

        self._shift_s = clock_shift_s
        self._backend = NvmlBackend(clock=self.now_s)
        uuids = {gpu.index: gpu.uuid for gpu in inventory().gpus}
        self.devices = {i: DeviceId(node_id, node_address, i, uuids.get(i)) for i in self._backend.gpus}
        self._period_s = period_ms / 1000
        self._buffer: deque[RemoteSample] = deque(maxlen=MAX_BUFFERED)
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._counts = {"samples": 0, "dropped": 0, "read_errors": 0, "counter_reads": 0}
        self._thread = threading.Thread(target=self._run, name="node power sampler", daemon=True)
        self._thread.start()

    def now_s(self) -> float:
        return now_s() + self._shift_s

    def device_ids(self) -> list[DeviceId]:
        return list(self.devices.values())

    def drain(self) -> list[RemoteSample]:
        """Every sample since the last call, oldest first."""
        with self._lock:
            batch = list(self._buffer)
            self._buffer.clear()
        return batch

    def energy_mj(self) -> dict[int, int | None]:
        """Every GPU's energy counter of this node, in one call (a window edge reads them all)."""
        self._counts["counter_reads"] += 1
        return {gpu: self._backend.read_energy_mj(gpu) for gpu in self.devices}

    def stats(self) -> dict[str, float]:
        """Counts, the thread's CPU seconds and the process's peak resident memory (MiB), for the results."""
        import resource

        rss_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        return {**self._counts, "thread_cpu_s": self._thread_cpu_s, "max_rss_mib": rss_mib}

    def close(self) -> None:
        self._stop.set()
        self._thread.join()
        self._backend.close()

    def _run(self) -> None:
        cpu_start_s = time.thread_time()
        self._thread_cpu_s = 0.0
        next_s = time.monotonic()
        while not self._stop.is_set():
            try:
                samples = self._backend.read_samples()
            except PowerReadError:
                self._counts["read_errors"] += 1
                samples = []
            with self._lock:
                dropped = max(0, len(self._buffer) + len(samples) - MAX_BUFFERED)
                self._buffer.extend(RemoteSample(self.devices[s.gpu], s) for s in samples)
            self._counts["samples"] += len(samples)
            self._counts["dropped"] += dropped
            self._thread_cpu_s = time.thread_time() - cpu_start_s
            next_s = max(next_s + self._period_s, time.monotonic())
            self._stop.wait(next_s - time.monotonic())


@dataclass(frozen=True)
class NodeSamplerHandle:
    """A started ``NodeSampler`` actor, its node and the GPUs it reads."""

    node_id: str
    node_address: str
    actor: Any
    devices: tuple[DeviceId, ...]


def start_node_samplers(
    nodes: Sequence[tuple[str, str]],
    period_ms: float = 50.0,
    env: dict[str, str] | None = None,
    clock_shift_s: dict[str, float] | None = None,
) -> list[NodeSamplerHandle]:
    """One sampler actor on each ``(node_id, address)``, pinned there; ``env`` goes into the actors' environment
    (``PD_ENERGY_BENCH_NVML_MODULE`` for the fake), ``clock_shift_s`` moves a node's clock (tests only)."""
    import ray
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    actor_class = ray.remote(max_restarts=0, num_cpus=0)(NodeSampler)
    actors: list[Any] = []
    for node_id, address in nodes:
        options: dict[str, Any] = {"scheduling_strategy": NodeAffinitySchedulingStrategy(node_id, soft=False)}
        if env:
            options["runtime_env"] = {"env_vars": dict(env)}
        shift_s = (clock_shift_s or {}).get(node_id, 0.0)
        actors.append(actor_class.options(**options).remote(node_id, address, period_ms, shift_s))
    devices = ray.get([actor.device_ids.remote() for actor in actors])
    return [
        NodeSamplerHandle(node_id, address, actor, tuple(ids))
        for (node_id, address), actor, ids in zip(nodes, actors, devices, strict=True)
    ]

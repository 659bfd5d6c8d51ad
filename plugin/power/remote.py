"""Power from every node of a Ray cluster: one ``NodeSampler`` actor per node reads its GPUs through the local NVML
backend (``PD_ENERGY_BENCH_NVML_MODULE`` is honoured there, so tests run it on the fake), and ``RemoteBackend``
drains them into the runner's ``Sampler`` as one ``PowerBackend``, each node's clock moved onto ours.

A node's ``plugin.clock`` is a different monotonic clock: its offset to ours is the round trip with the
smallest duration (``estimate_offset``), re-measured at every window; half that round trip bounds the error,
which ``plugin.analysis.uncertainty`` turns into energy. ``ray`` is imported inside functions only.
"""

from __future__ import annotations

import math
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import Any

from plugin.clock import now_s
from plugin.power.backend import PowerError, PowerReadError, Sample
from plugin.power.sampler import Sampler
from plugin.power.window import WindowMeasurement

MAX_BUFFERED = 200_000
COUNTER_MAX_AGE_S = 0.05
"""A node's counters read at a window edge serve its other GPUs' reads of that edge for this long."""
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


@dataclass(frozen=True, slots=True)
class ClockOffset:
    """``offset_s`` = node clock - our clock; ``error_s`` bounds it (half the best round trip)."""

    offset_s: float
    error_s: float
    rtt_s: float

    def to_local(self, t_remote_s: float) -> float:
        return t_remote_s - self.offset_s


def estimate_offset(pairs: Sequence[tuple[float, float, float]]) -> ClockOffset:
    """From ``(t_send, t_remote, t_recv)`` round trips: the remote read happened somewhere inside the shortest
    one, so its middle is off by at most half of it (Cristian's algorithm)."""
    if not pairs:
        raise PowerError("no clock round trip to estimate a node's offset from")
    t_send, t_remote, t_recv = min(pairs, key=lambda pair: pair[2] - pair[0])
    rtt_s = t_recv - t_send
    if rtt_s < 0:
        raise PowerError(f"a clock round trip ended before it began ({rtt_s:.6f} s)")
    return ClockOffset(t_remote - (t_send + t_recv) / 2, rtt_s / 2, rtt_s)


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


class RemoteBackend:
    """``PowerBackend`` over the node samplers: GPU ``i`` is the ``i``-th device in node order; timestamps come
    back on our clock. Pass it to ``RemoteSampler``, which re-measures the offsets at each window."""

    def __init__(
        self, nodes: Sequence[NodeSamplerHandle], round_trips: int = 8, timeout_s: float = 10.0,
        clock: Callable[[], float] = now_s,
    ) -> None:  # fmt: skip
        self._nodes = list(nodes)
        self._round_trips = round_trips
        self._timeout_s = timeout_s
        self._clock = clock
        self.devices = [device for node in self._nodes for device in node.devices]
        self._global = {(d.node_id, d.index): gpu for gpu, d in enumerate(self.devices)}
        self._owner = {gpu: node for node in self._nodes for gpu, d in enumerate(self.devices) if d in node.devices}
        if not self.devices:
            raise PowerError("no node's power sampler found a GPU")
        self.offsets: dict[str, ClockOffset] = {}
        self._counters: dict[str, tuple[float, dict[int, int | None]]] = {}
        self.measure_offsets()

    @property
    def name(self) -> str:
        return "nvml (ray)"

    @property
    def gpus(self) -> tuple[int, ...]:
        return tuple(range(len(self.devices)))

    @property
    def unmeasured_reason(self) -> str | None:
        return None

    def measure_offsets(self) -> dict[str, ClockOffset]:
        """Each node's clock offset, from ``round_trips`` calls of its ``now_s``."""
        import ray

        offsets = {}
        for node in self._nodes:
            pairs = []
            for _ in range(self._round_trips):
                t_send = self._clock()
                t_remote = ray.get(node.actor.now_s.remote(), timeout=self._timeout_s)
                pairs.append((t_send, t_remote, self._clock()))
            offsets[node.node_id] = estimate_offset(pairs)
        self.offsets = offsets
        return offsets

    def clock_error_s(self) -> float:
        """The largest bound on any node's offset, as last measured."""
        return max((offset.error_s for offset in self.offsets.values()), default=0.0)

    def read_samples(self) -> list[Sample]:
        import ray

        try:
            batches = ray.get([node.actor.drain.remote() for node in self._nodes], timeout=self._timeout_s)
        except (ray.exceptions.RayError, TimeoutError) as error:
            raise PowerReadError(f"a node's power sampler did not answer: {error}") from error
        offsets = self.offsets
        return [
            replace(
                item.sample,
                t_s=offsets[item.device.node_id].to_local(item.sample.t_s),
                gpu=self._global[item.device.node_id, item.device.index],
            )
            for batch in batches
            for item in batch
        ]

    def read_energy_mj(self, gpu: int) -> int | None:
        """The GPU's counter from one read of every node's counters at once (all nodes within one round trip),
        reused for ``COUNTER_MAX_AGE_S``: a window edge costs one concurrent call per node, not one per GPU."""
        import ray

        device, node = self.devices[gpu], self._owner[gpu]
        if self._clock() - self._counters.get(node.node_id, (-math.inf, {}))[0] > COUNTER_MAX_AGE_S:
            try:
                found = ray.get([n.actor.energy_mj.remote() for n in self._nodes], timeout=self._timeout_s)
            except (ray.exceptions.RayError, TimeoutError) as error:
                raise PowerReadError(f"GPU {gpu} ({device.node_address} #{device.index}) counter: {error}") from error
            read_s = self._clock()
            self._counters = {n.node_id: (read_s, counters) for n, counters in zip(self._nodes, found, strict=True)}
        return self._counters[node.node_id][1].get(device.index)

    def stats(self) -> list[dict[str, float]]:
        import ray

        return list(ray.get([node.actor.stats.remote() for node in self._nodes], timeout=self._timeout_s))

    def close(self) -> None:
        import ray

        for node in self._nodes:
            try:
                ray.get(node.actor.close.remote(), timeout=self._timeout_s)
            except (ray.exceptions.RayError, TimeoutError):
                pass  # killed below either way
            ray.kill(node.actor, no_restart=True)


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

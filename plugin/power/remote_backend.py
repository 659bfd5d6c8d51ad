"""Every node's power sampler as one ``PowerBackend``: ``RemoteBackend`` drains the ``NodeSampler`` actors and
moves each node's clock onto ours.

A node's ``plugin.clock`` is a different monotonic clock: its offset to ours is the round trip with the
smallest duration (``estimate_offset``), re-measured at every window (``plugin.power.remote_sampler``); half that
round trip bounds the error, which ``plugin.analysis.uncertainty`` turns into energy. ``ray`` is imported inside
functions only.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace

from plugin.clock import now_s
from plugin.power.backend import PowerError, PowerReadError, Sample
from plugin.power.node_sampler import NodeSamplerHandle

COUNTER_MAX_AGE_S = 0.05
"""A node's counters read at a window edge serve its other GPUs' reads of that edge for this long."""


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

    def uuid(self, gpu: int) -> str | None:
        """As the GPU's node's NVML names it."""
        return self.devices[gpu].uuid

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

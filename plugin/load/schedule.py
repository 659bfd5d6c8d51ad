"""A serving benchmark's rounds as schedules: which requests, when each is due, and which stretch is measured.

Count mode sends ``num_requests`` requests per round and measures all of them. Steady-state mode
(``--duration-s T``) lets requests arrive for T seconds and measures only ``[warm-up, T - cool-down]``: the
power window and the statistics cover that stretch alone, while the batch is full (as the ML.ENERGY benchmark
measures). A sweep's ``sync`` point is a closed loop of one request at a time and its ``max`` point sends every
request at once; the rates between are spaced evenly from the two throughputs measured (guidellm's sweep), once per
dataset for every topology of the run (``SweepEnds``).
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace

from plugin.errors import BenchError
from plugin.load.arrivals import closed_loop, open_loop, ramp_up
from plugin.load.workload import SWEEP_MAX, SWEEP_SYNC
from plugin.option_values import DRAWN
from plugin.records.workload import Workload


@dataclass(frozen=True, slots=True)
class Schedule:
    """One round: (prompt token ids, max_tokens) per request, each one's due offset from the round's start, the
    cap on requests in flight, and in steady state the measured stretch ``[measured_from_s, measured_to_s]``. In a
    multi-turn round ``follows`` names the request each turn waits for; its offset is then its think time after
    that one's end (``plugin.load.client.run_schedule``)."""

    requests: tuple[tuple[list[int], int], ...]
    due_offsets_s: tuple[float, ...]
    max_concurrency: int | None
    measured_from_s: float | None = None
    measured_to_s: float | None = None
    follows: tuple[int | None, ...] | None = None
    cache_salted: bool = False
    """A control round: every request carries a ``cache_salt`` of its own, so none reuses a cached prefix."""

    @property
    def steady_state(self) -> bool:
        return self.measured_from_s is not None


@dataclass(frozen=True, slots=True)
class Arrivals:
    """How requests of one serving benchmark arrive: the resolved rate (``None``: a closed loop of ``concurrency``
    in flight; ``math.inf``: all at once), the steady-state stretch, if any, and whether an open loop's drawn gaps
    stand or are rescaled to the nominal span (``--arrival-scaling``, ``plugin.load.arrivals``)."""

    rate: float | None
    concurrency: int | None
    duration_s: float | None
    warmup_s: float
    cooldown_s: float
    scaling: str = DRAWN
    ramp_up: tuple[str, float, float] | None = None
    """``(strategy, start_rps, end_rps)``: the rate ramps over each round's requests (``arrivals.ramp_up``)."""


@dataclass(frozen=True, slots=True)
class SweepEnds:
    """One dataset's sweep ends: the synchronous (``sync``) and saturated (``max``) request throughput, and the
    topology that measured them.

    The first topology to measure both ends fixes them for every topology of the run, so all topologies meet at the
    same rates and the verdict can compare them there. Not the widest ends of all topologies: topologies run one
    after another (each one's servers start once), and waiting for every topology's ends before any point would
    start each topology's servers twice. A topology with more capacity may then not be pushed to its own
    saturation by the points; its own ``max`` point still measures it."""

    topology: str
    sync_rps: float | None = None
    max_rps: float | None = None

    @property
    def complete(self) -> bool:
        return self.sync_rps is not None and self.max_rps is not None


def with_measured_end(ends: SweepEnds | None, topology: str, point: str, throughput_rps: float | None) -> SweepEnds:
    """The dataset's ends after ``topology`` measured its ``sync`` or ``max`` point. Complete ends stay as they are;
    incomplete ones take the first value measured, and a topology that left them incomplete (a point that failed)
    gives way to the next topology, which measures both afresh."""
    if ends is not None and ends.complete:
        return ends
    if ends is None or ends.topology != topology:
        ends = SweepEnds(topology)
    if point == SWEEP_SYNC:
        return ends if ends.sync_rps is not None else replace(ends, sync_rps=throughput_rps)
    return ends if ends.max_rps is not None else replace(ends, max_rps=throughput_rps)


def sweep_rate(point: str, points: int, ends: SweepEnds | None) -> float:
    """The rate of sweep point ``point`` (``1``..``points``), evenly between the measured ``sync`` and ``max``."""
    if ends is None or ends.sync_rps is None or ends.max_rps is None:
        raise BenchError(
            f"sweep point {point} needs the synchronous and the saturated throughput, measured by the sweep's "
            "'sync' and 'max' benchmarks first; one of them did not finish (see its error above)"
        )
    low, high = sorted((ends.sync_rps, ends.max_rps))
    return low + int(point) * (high - low) / (points + 1)


def arrivals_of(
    workload: Workload, rate: float | None, warmup_s: float, cooldown_s: float, scaling: str = DRAWN
) -> Arrivals:
    """A sweep's ``sync`` is one request at a time and ``max`` all at once, both counted (a steady state needs a
    rate); other points arrive at ``rate`` (``None``: all at once), for ``duration_s`` where one is set, their
    gaps scaled by ``scaling``."""
    cap = workload.concurrency or None
    if workload.ramp_up is not None:
        return Arrivals(None, cap, None, 0.0, 0.0, ramp_up=workload.ramp_up)
    if workload.sweep == SWEEP_SYNC:
        return Arrivals(None, 1, None, 0.0, 0.0)
    if workload.sweep == SWEEP_MAX or rate is None:
        return Arrivals(math.inf, cap, None, 0.0, 0.0)
    return Arrivals(rate, cap, workload.duration_s, warmup_s, cooldown_s, scaling)


def arrival_offsets(arrivals: Arrivals, count: int, burstiness: float, rng: random.Random) -> tuple[float, ...]:
    """One round's arrivals (of requests, or of sessions): ``count`` at once, ``count`` open-loop, or open-loop
    for the steady state's duration."""
    if arrivals.ramp_up is not None:
        return ramp_up(*arrivals.ramp_up, count, burstiness, rng)
    if arrivals.rate is None:
        return closed_loop(count)
    if arrivals.duration_s is not None:
        return open_loop(arrivals.rate, burstiness, rng, duration_s=arrivals.duration_s, scaling=arrivals.scaling)
    return open_loop(arrivals.rate, burstiness, rng, count=count, scaling=arrivals.scaling)


def measured_stretch(arrivals: Arrivals) -> tuple[float | None, float | None]:
    """``(measured_from_s, measured_to_s)`` of a round: the steady state's stretch, or ``(None, None)``."""
    if arrivals.duration_s is None:
        return None, None
    return arrivals.warmup_s, arrivals.duration_s - arrivals.cooldown_s


def schedules(
    arrivals: Arrivals,
    rounds: int,
    count: int,
    burstiness: float,
    rng: random.Random,
    requests_for: Callable[[int], Sequence[tuple[list[int], int]]],
) -> list[Schedule]:
    """``rounds`` schedules; ``requests_for(n)`` gives n fresh requests (prompts are never reused between rounds)."""
    result = []
    for _ in range(rounds):
        offsets = arrival_offsets(arrivals, count, burstiness, rng)
        requests = tuple(requests_for(len(offsets)))
        result.append(Schedule(requests, offsets, arrivals.concurrency, *measured_stretch(arrivals)))
    return result

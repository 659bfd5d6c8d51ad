"""A serving benchmark's rounds as schedules: which requests, when each is due, and which stretch is measured.

Count mode sends ``num_requests`` requests per round and measures all of them. Steady-state mode
(``--duration-s T``) lets requests arrive for T seconds and measures only ``[warm-up, T - cool-down]``: the
power window and the statistics cover that stretch alone, while the batch is full (as the ML.ENERGY benchmark
measures). A sweep's ``sync`` point is a closed loop of one request at a time and its ``max`` point sends every
request at once; the rates between are spaced evenly from the two throughputs measured (guidellm's sweep).
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from plugin.errors import BenchError
from plugin.load.arrivals import closed_loop, open_loop
from plugin.load.workload import SWEEP_MAX, SWEEP_SYNC, Workload


@dataclass(frozen=True, slots=True)
class Schedule:
    """One round: (prompt token ids, max_tokens) per request, each one's due offset from the round's start, the
    cap on requests in flight, and in steady state the measured stretch ``[measured_from_s, measured_to_s]``."""

    requests: tuple[tuple[list[int], int], ...]
    due_offsets_s: tuple[float, ...]
    max_concurrency: int | None
    measured_from_s: float | None = None
    measured_to_s: float | None = None

    @property
    def steady_state(self) -> bool:
        return self.measured_from_s is not None


@dataclass(frozen=True, slots=True)
class Arrivals:
    """How requests of one serving benchmark arrive: the resolved rate (``None``: a closed loop of ``concurrency``
    in flight; ``math.inf``: all at once) and the steady-state stretch, if any."""

    rate: float | None
    concurrency: int | None
    duration_s: float | None
    warmup_s: float
    cooldown_s: float


def sweep_rate(point: str, points: int, sync_rps: float | None, max_rps: float | None) -> float:
    """The rate of sweep point ``point`` (``1``..``points``), evenly between the measured ``sync`` and ``max``."""
    if sync_rps is None or max_rps is None:
        raise BenchError(
            f"sweep point {point} needs the synchronous and the saturated throughput, measured by the sweep's "
            "'sync' and 'max' benchmarks first; one of them did not finish (see its error above)"
        )
    low, high = sorted((sync_rps, max_rps))
    return low + int(point) * (high - low) / (points + 1)


def arrivals_of(workload: Workload, rate: float | None, warmup_s: float, cooldown_s: float) -> Arrivals:
    """A sweep's ``sync`` is one request at a time and ``max`` all at once, both counted (a steady state needs a
    rate); other points arrive at ``rate`` (``None``: all at once), for ``duration_s`` where one is set."""
    cap = workload.concurrency or None
    if workload.sweep == SWEEP_SYNC:
        return Arrivals(None, 1, None, 0.0, 0.0)
    if workload.sweep == SWEEP_MAX or rate is None:
        return Arrivals(math.inf, cap, None, 0.0, 0.0)
    return Arrivals(rate, cap, workload.duration_s, warmup_s, cooldown_s)


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
        if arrivals.rate is None:
            offsets = closed_loop(count)
        elif arrivals.duration_s is not None:
            offsets = open_loop(arrivals.rate, burstiness, rng, duration_s=arrivals.duration_s)
        else:
            offsets = open_loop(arrivals.rate, burstiness, rng, count=count)
        requests = tuple(requests_for(len(offsets)))
        steady = arrivals.duration_s is not None
        result.append(
            Schedule(
                requests,
                offsets,
                arrivals.concurrency,
                arrivals.warmup_s if steady else None,
                (arrivals.duration_s or 0.0) - arrivals.cooldown_s if steady else None,
            )
        )
    return result

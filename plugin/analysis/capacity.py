"""A topology's goodput capacity: the highest offered rate whose SLO attainment's 95 % lower bound meets the target
(DistServe's per-GPU goodput, judged on the interval as ``plugin.analysis.verdict`` judges), found by probing.

The search, per topology and dataset, from its probes (offered rate, attainment interval) alone, so a search resumed
from stored probes goes on where it stopped:

1. the saturated probe sends every request at once; its throughput is the first open-loop rate to try;
2. bracket: double the rate while every probe meets the targets, halve it while none does;
3. bisect between the highest rate that meets them and the lowest that does not, until the two are no further
   apart than the resolution (``Resolution``).

A probe that does not meet the targets is one that misses them or is undecided: the capacity is a rate the targets
are met at with 95 % confidence. The capacity's interval runs from it to the lowest rate that clearly misses them
(its interval's upper bound below the target): the true capacity lies between, attainment falling as load rises.
A topology none of whose probes meets the targets, down to the resolution, *never meets* them. ``clearly_misses``
is the over-saturation stop: a probe is decided (it misses) as soon as even all its pending requests being good
could not lift the attainment's upper bound to the target. Pure functions: no I/O.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from plugin.analysis.goodput import attainment_interval_pct
from plugin.analysis.verdict import Attainment, attainment_of
from plugin.records.results import BenchmarkResult
from plugin.records.workload import GRID, PROBE

MEETS, MISSES, UNDECIDED = "meets", "misses", "undecided"
CONVERGED, NEVER_MEETS, OUT_OF_PROBES, SEARCHING = "converged", "never meets", "out of probes", "searching"


@dataclass(frozen=True, slots=True)
class Resolution:
    """How close the bracket's ends must be to stop: ``rps`` requests/s, or ``pct`` % of its upper end."""

    rps: float | None = None
    pct: float | None = None

    def reached(self, low_rps: float, high_rps: float) -> bool:
        return high_rps - low_rps <= self.width_rps(high_rps)

    def width_rps(self, high_rps: float) -> float:
        return self.rps if self.rps is not None else high_rps * (self.pct or 0.0) / 100.0

    def text(self) -> str:
        return f"{self.rps:g} req/s" if self.rps is not None else f"{self.pct:g} %"


@dataclass(frozen=True, slots=True)
class Probe:
    """One open-loop probe: its offered rate, SLO attainment with interval, and the device time it took."""

    rate_rps: float
    attainment: Attainment
    wall_s: float = 0.0
    stopped_early: bool = False
    """Stopped as clearly over-saturated (``clearly_misses``) before all its requests were served."""


def outcome(attainment: Attainment, target_pct: float) -> str:
    """``meets`` (interval at or above the target), ``misses`` (below) or ``undecided``: ``verdict.judge``'s rule."""
    if attainment.low_pct >= target_pct:
        return MEETS
    return MISSES if attainment.high_pct < target_pct else UNDECIDED


@dataclass(frozen=True, slots=True)
class Search:
    """One topology's search over one dataset: the saturated throughput and the open-loop probes so far."""

    topology: str
    dataset: str
    target_pct: float
    resolution: Resolution
    max_probes: int
    saturated_rps: float | None = None
    saturated_wall_s: float = 0.0
    probes: tuple[Probe, ...] = ()

    @property
    def met_rps(self) -> float | None:
        """The highest rate probed that meets the targets: the capacity."""
        rates = [p.rate_rps for p in self.probes if outcome(p.attainment, self.target_pct) == MEETS]
        return max(rates, default=None)

    @property
    def not_met_rps(self) -> float | None:
        """The lowest rate probed that does not meet them (missed or undecided): the bracket's upper end."""
        rates = [p.rate_rps for p in self.probes if outcome(p.attainment, self.target_pct) != MEETS]
        return min(rates, default=None)

    @property
    def missed_rps(self) -> float | None:
        """The lowest rate probed whose interval lies below the target: the capacity interval's upper end."""
        rates = [p.rate_rps for p in self.probes if outcome(p.attainment, self.target_pct) == MISSES]
        return min(rates, default=None)

    @property
    def state(self) -> str:
        low, high = self.met_rps, self.not_met_rps
        if low is not None and high is not None and (high <= low or self.resolution.reached(low, high)):
            return CONVERGED
        if low is None and high is not None and high <= self.resolution.width_rps(self.saturated_rps or high):
            return NEVER_MEETS  # halved down to the resolution (of the saturated throughput, for a relative one)
        if self.saturated_rps is not None and self.saturated_rps <= 0:
            return NEVER_MEETS  # nothing came back even all at once
        if len(self.probes) + 1 >= self.max_probes:  # the saturated probe takes one slot
            return NEVER_MEETS if low is None and self.probes else OUT_OF_PROBES
        return SEARCHING

    def next_rate_rps(self) -> float | None:
        """The next probe's offered rate; ``None`` once the search has stopped (``state``) or before the saturated
        throughput is known."""
        if self.saturated_rps is None or self.state != SEARCHING:
            return None
        low, high = self.met_rps, self.not_met_rps
        if not self.probes:
            return self.saturated_rps
        if low is None:
            assert high is not None
            return high / 2.0
        if high is None:
            return low * 2.0
        return (low + high) / 2.0

    def with_probe(self, probe: Probe) -> Search:
        return Search(self.topology, self.dataset, self.target_pct, self.resolution, self.max_probes,
                      self.saturated_rps, self.saturated_wall_s, (*self.probes, probe))  # fmt: skip

    def with_saturated(self, throughput_rps: float, wall_s: float) -> Search:
        return Search(self.topology, self.dataset, self.target_pct, self.resolution, self.max_probes,
                      throughput_rps, wall_s, self.probes)  # fmt: skip

    def capacity(self, gpus: int) -> Capacity:
        state = self.state
        return Capacity(
            self.topology, self.dataset, self.met_rps, self.missed_rps, gpus, len(self.probes) + 1, state,
            self.saturated_rps, self.saturated_wall_s + sum(p.wall_s for p in self.probes),
            min((p.rate_rps for p in self.probes), default=None), self.resolution.text(),
        )  # fmt: skip


@dataclass(frozen=True, slots=True)
class Capacity:
    """A search's result. ``capacity_rps`` (``None``: never met) and the upper end of its interval
    ``capacity_high_rps`` (``None``: no probe above it clearly missed the targets); per GPU of the budget likewise."""

    topology: str
    dataset: str
    capacity_rps: float | None
    capacity_high_rps: float | None
    gpus: int
    probes: int
    """Probes measured, the saturated one included."""
    state: str
    saturated_rps: float | None
    device_time_s: float
    """The probes' wall time together: what the search cost."""
    lowest_probe_rps: float | None = None
    resolution: str = ""

    @property
    def never_meets(self) -> bool:
        return self.capacity_rps is None

    @property
    def per_gpu_rps(self) -> float | None:
        return None if self.capacity_rps is None else self.capacity_rps / self.gpus

    @property
    def per_gpu_high_rps(self) -> float | None:
        return None if self.capacity_high_rps is None else self.capacity_high_rps / self.gpus

    def text(self) -> str:
        """``dp:2 1.6 req/s (interval 1.6-2.4; per GPU of 2: 0.8, 0.8-1.2), 6 probes`` or why there is none."""
        probes = f"{self.probes} probe{'s' if self.probes != 1 else ''}"
        if self.capacity_rps is None:
            lowest = "" if self.lowest_probe_rps is None else f" down to {self.lowest_probe_rps:.3g} req/s"
            return f"{self.topology} never meets the targets{lowest} ({probes})"
        high = "?" if self.capacity_high_rps is None else f"{self.capacity_high_rps:.3g}"
        per_gpu_high = "?" if self.per_gpu_high_rps is None else f"{self.per_gpu_high_rps:.3g}"
        note = {CONVERGED: "", OUT_OF_PROBES: ", out of probes before the resolution"}.get(self.state, "")
        return (
            f"{self.topology} {self.capacity_rps:.3g} req/s (interval {self.capacity_rps:.3g}-{high}; per GPU of "
            f"{self.gpus}: {self.per_gpu_rps:.3g}, {self.per_gpu_rps:.3g}-{per_gpu_high}), {probes}{note}"
        )


def clearly_misses(good: int, done: int, total: int, target_pct: float) -> bool:
    """Whether a probe of ``total`` requests, ``done`` of them served and ``good`` of those good, misses the targets
    whatever the rest do: the attainment's upper bound, were every pending request good, is below the target."""
    if total <= 0 or done >= total:
        return False
    interval = attainment_interval_pct(good + (total - done), total)
    return interval is not None and interval[1] < target_pct


def fewest_requests_to_meet(target_pct: float, most: int = 100_000) -> int:
    """The fewest requests whose attainment interval can clear ``target_pct`` at all (every one good): 35 for 90 %.
    A probe with fewer could never meet the targets, whatever the server did."""
    for count in range(1, most):
        interval = attainment_interval_pct(count, count)
        if interval is not None and interval[0] >= target_pct:
            return count
    return most


def grid_rates(capacities: Sequence[Capacity], points: int) -> tuple[float, ...]:
    """``points`` rates evenly up to the largest capacity (every topology is measured at each); none where no
    topology meets the targets."""
    largest = max((c.capacity_rps for c in capacities if c.capacity_rps is not None), default=None)
    if largest is None:
        return ()
    return tuple(largest * k / points for k in range(1, points + 1))


def is_probe(entry: BenchmarkResult) -> bool:
    return (entry.workload.sweep or "").startswith(PROBE)


def is_grid(entry: BenchmarkResult) -> bool:
    return (entry.workload.sweep or "").startswith(GRID)


def wall_s(entry: BenchmarkResult) -> float:
    """A probe's device time: as the fixtures timed it (warm-up and drain included), else its rounds' windows."""
    timed = entry.summary.get("probe_wall_s")
    return float(timed) if timed is not None else sum(float(r.get("duration_s") or 0.0) for r in entry.rounds)


def candidate(topology: str, dvfs_setting: str | None) -> str:
    """What a search and the answer choose between: a topology, or with a DVFS sweep a topology under one plan
    (``1p1d at p-1500-d-900``: the prefill and decode GPUs' own clocks), each searched on its own."""
    return topology if dvfs_setting is None else f"{topology} at {dvfs_setting}"


def candidate_of(entry: BenchmarkResult) -> str:
    return candidate(entry.topology_name, None if entry.dvfs is None else str(entry.dvfs.get("setting")))


def searches(
    entries: Iterable[BenchmarkResult], target_pct: float, resolution: Resolution, max_probes: int
) -> dict[tuple[str, str], Search]:
    """Each (candidate, dataset)'s search, rebuilt from its probes in the order they were measured: a search run
    now, and one resumed from a run folder, go on from the same state."""
    found: dict[tuple[str, str], Search] = {}
    for entry in entries:
        if not is_probe(entry):
            continue
        key = (candidate_of(entry), str(entry.workload.dataset))
        search = found.get(key) or Search(key[0], key[1], target_pct, resolution, max_probes)
        rate = entry.summary.get("offered_rate_rps")
        attainment = attainment_of(entry.summary)
        if rate is None:  # the saturated probe: every request at once
            search = search.with_saturated(float(entry.summary.get("request_throughput") or 0.0), wall_s(entry))
        elif attainment is not None:
            search = search.with_probe(
                Probe(float(rate), attainment, wall_s(entry), bool(entry.summary.get("stopped_early")))
            )
        found[key] = search
    return found

"""The answer a serving team acts on, in a few lines: which topology to run in each band of offered rate, where the
bands cross over (each crossover an interval), each topology's goodput capacity with its interval, and what the
search cost in device time.

The bands come from the shared grid (every topology measured at the same rates): each grid rate's verdict is
``plugin.analysis.verdict.judge``'s, and consecutive rates with the same choice make one band. A crossover lies
between the last rate of one band and the first of the next: its interval is those two rates. A rate whose verdict
names no winner (a tie within the saving's ±, an attainment interval that straddles the target, too few rounds to
rank) is *undecided*, never a winner. Above the grid's top, the largest capacity, no topology meets the targets.
Which topology has the larger capacity is undecided where their capacity intervals overlap. Where the run was priced
(``plugin.analysis.cost``), a second answer of the same grid ranks by $ per good request (``cost_points``) by the
same rule, its bands beside the energy's. Pure functions.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, replace
from typing import Any

from plugin.analysis.capacity import Capacity, Resolution, candidate_of, is_grid, is_probe, searches
from plugin.analysis.cost import COST_FIGURE, cost_points
from plugin.analysis.verdict import (
    ALONE,
    ENERGY_FIGURE,
    FEW_ROUNDS,
    NONE,
    ONLY,
    TIE,
    UNEQUAL,
    UNRANKED,
    WINS,
    Point,
    Step,
    judge,
    serving_points,
    unequal_text,
)
from plugin.records.results import BenchmarkResult

RUN, UNDECIDED, NOTHING = "run", "undecided", "none"
RANKED = {
    ENERGY_FIGURE: ("J per good request", "energy_per_good_request_j", "energy_per_good_request_pm_j"),
    COST_FIGURE: ("$ per good request", "usd_per_good_request", "usd_per_good_request_pm"),
}
"""Per figure ranked by (``verdict.ENERGY_FIGURE`` or ``cost.COST_FIGURE``): its unit in the bands' text, and the
keys of its values and their ± in ``results.json``'s bands."""
SECONDS_PER_HOUR = 3600.0


@dataclass(frozen=True, slots=True)
class Band:
    """Consecutive grid rates with the same choice: ``RUN`` ``topology``, ``UNDECIDED`` (``why``) or ``NOTHING``."""

    rates_rps: tuple[float, ...]
    kind: str
    topology: str | None
    why: str = ""
    ranked: tuple[float, ...] = ()
    """The chosen topology's figure ranked by (J, or $, per good request) at each rate; ``ranked_pm`` its ±."""
    ranked_pm: tuple[float | None, ...] = ()
    good_per_gpu_hour: tuple[float, ...] = ()
    """The chosen topology's goodput per GPU of the budget, per hour: what a GPU-hour buys at these rates."""

    @property
    def key(self) -> tuple[str, str | None, str]:
        return self.kind, self.topology, self.why

    def text(self, figure: str = ENERGY_FIGURE) -> str:
        low, high = self.rates_rps[0], self.rates_rps[-1]
        rates = f"{low:.3g}" + (f"-{high:.3g}" if high != low else "")
        if self.kind == RUN:
            figures = ", ".join(part for part in (self._ranked(figure), self._per_gpu_hour()) if part)
            return f"at {rates} req/s run {self.topology}" + (f" ({figures})" if figures else "")
        if self.kind == UNDECIDED:
            return f"at {rates} req/s undecided ({self.why})"
        return f"at {rates} req/s no topology meets the targets"

    def _ranked(self, figure: str) -> str:
        """The figure ranked by, its span over the band and ±."""
        if not self.ranked:
            return ""
        low, high = min(self.ranked), max(self.ranked)
        known = [pm for pm in self.ranked_pm if pm is not None]
        pm = f" ± {max(known):.2g}" if len(known) == len(self.ranked_pm) else " (± unknown)"
        return f"{_span(low, high)}{pm} {RANKED[figure][0]}"

    def _per_gpu_hour(self) -> str:
        if not self.good_per_gpu_hour:
            return ""
        return f"{_span(min(self.good_per_gpu_hour), max(self.good_per_gpu_hour))} good requests per GPU-hour"


@dataclass(frozen=True, slots=True)
class Crossover:
    """Where one band gives way to the next: somewhere between ``from_rps`` and ``to_rps``."""

    from_rps: float
    to_rps: float
    before: str
    after: str

    def text(self) -> str:
        return f"crossover {self.before} -> {self.after} between {self.from_rps:.3g} and {self.to_rps:.3g} req/s"


@dataclass(frozen=True, slots=True)
class Answer:
    dataset: str
    targets_ms: Mapping[str, float]
    target_pct: float
    capacities: tuple[Capacity, ...]
    bands: tuple[Band, ...]
    crossovers: tuple[Crossover, ...]
    figure: str = ENERGY_FIGURE
    """What the bands rank by: ``verdict.ENERGY_FIGURE``, or ``cost.COST_FIGURE`` in a priced run's second answer."""

    @property
    def device_time_s(self) -> float:
        return sum(c.device_time_s for c in self.capacities)

    @property
    def larger_capacity(self) -> str:
        """Which topology has the larger capacity: named where its interval lies above every other's, else why
        not."""
        met = sorted((c for c in self.capacities if c.capacity_rps is not None), key=lambda c: -(c.capacity_rps or 0))
        if not met:
            return "no topology meets the targets at any rate probed"
        if len(met) == 1:
            return f"only {met[0].topology} meets the targets at some rate"
        top, runner_up = met[0], met[1]
        high = runner_up.capacity_high_rps
        if high is not None and (top.capacity_rps or 0.0) >= high:
            return (
                f"{top.topology} has the larger capacity ({top.topology}'s interval lies above {runner_up.topology}'s)"
            )
        return f"larger capacity undecided: the intervals of {top.topology} and {runner_up.topology} overlap"

    def lines(self) -> list[str]:
        targets = " and ".join(f"{key} <= {value:g} ms" for key, value in self.targets_ms.items()) or "no targets"
        by = "" if self.figure == ENERGY_FIGURE else f" by {self.figure}"
        head = (f"answer{by} ({self.dataset}; {targets} for at least {self.target_pct:g} % of requests, judged on 95 % "
                "intervals):")  # fmt: skip
        bands = [band.text(self.figure) for band in self.bands]
        top = max((c.capacity_rps for c in self.capacities if c.capacity_rps is not None), default=None)
        if top is not None:
            bands.append(f"above {top:.3g} req/s (the largest capacity) no topology meets the targets")
        lines = [head]
        if self.bands:
            lines.append("  " + "; ".join(bands))
        elif top is not None:
            lines.append("  the shared grid is not measured yet: no band to name")
        if self.crossovers:
            lines.append("  " + "; ".join(crossover.text() for crossover in self.crossovers))
        if self.figure != ENERGY_FIGURE:
            return lines  # the capacities and the search's cost are the energy answer's, said there
        resolution = next((c.resolution for c in self.capacities if c.resolution), "")
        lines.append(
            f"  capacity (highest rate met at the 95 % lower bound{', resolution ' + resolution if resolution else ''}"
            f"): {'; '.join(c.text() for c in self.capacities)}; {self.larger_capacity}"
        )
        probes = sum(c.probes for c in self.capacities)
        lines.append(f"  the search took {probes} probes and {self.device_time_s:.0f} s of device time (probe windows)")
        return lines


def answer(
    dataset: str,
    capacities: Sequence[Capacity],
    grid: Sequence[Point],
    targets_ms: Mapping[str, float],
    target_pct: float,
    figure: str = ENERGY_FIGURE,
) -> Answer:
    """The answer of one dataset from its topologies' capacities and its grid points (``verdict.serving_points``,
    or ``cost.cost_points`` ranked by ``COST_FIGURE``)."""
    per_rate: dict[float, dict[str, Point]] = {}
    for point in grid:
        if point.dataset == dataset:
            per_rate.setdefault(point.offered_rate_rps, {})[point.topology] = point
    bands: list[Band] = []
    for rate in sorted(per_rate):
        band = _band(judge(rate, list(per_rate[rate].values()), target_pct), per_rate[rate])
        if bands and bands[-1].key == band.key:
            last = bands[-1]
            band = Band((*last.rates_rps, rate), band.kind, band.topology, band.why,
                        (*last.ranked, *band.ranked), (*last.ranked_pm, *band.ranked_pm),
                        (*last.good_per_gpu_hour, *band.good_per_gpu_hour))  # fmt: skip
            bands[-1] = band
        else:
            bands.append(band)
    crossovers = tuple(
        Crossover(before.rates_rps[-1], after.rates_rps[0], _name(before), _name(after))
        for before, after in zip(bands, bands[1:], strict=False)
    )
    return Answer(dataset, dict(targets_ms), target_pct, tuple(capacities), tuple(bands), crossovers, figure)


def _band(step: Step, points: Mapping[str, Point]) -> Band:
    """One grid rate's choice from its verdict step."""
    rate = (step.rate_rps,)
    undecided = ", ".join(f"{name} {attainment.text()}" for name, attainment in step.undecided)
    if step.kind in (WINS, ONLY) or (step.kind in (FEW_ROUNDS, ALONE) and len(step.met) == 1 and not step.undecided):
        chosen = step.winner if step.kind in (WINS, ONLY) else step.met[0]
        assert chosen is not None
        point = points[chosen]
        ranked = () if point.per_good_request is None else (point.per_good_request,)
        pm = (point.per_good_request_pm,) if ranked else ()
        per_hour = () if point.goodput_per_gpu_rps is None else (point.goodput_per_gpu_rps * SECONDS_PER_HOUR,)
        return Band(rate, RUN, chosen, "", ranked, pm, per_hour)
    if step.kind == TIE:
        return Band(rate, UNDECIDED, None, f"{step.winner} and {step.other} meet the targets within the saving's ±")
    if step.kind == UNEQUAL:
        return Band(rate, UNDECIDED, None, f"not compared: {unequal_text(step.budgets)}")
    if step.kind in (UNRANKED, FEW_ROUNDS) and step.met:
        reason = "no energy to rank them" if step.kind == UNRANKED else f"{step.rounds} round(s): ranking needs 3"
        named = " and ".join(step.met) + (f"; {undecided} undecided" if undecided else "")
        return Band(rate, UNDECIDED, None, f"{named} meet the targets, {reason}")
    if undecided:
        return Band(rate, UNDECIDED, None, f"{undecided}")
    if step.kind in (NONE, FEW_ROUNDS, ALONE):
        return Band(rate, NOTHING, None)
    return Band(rate, UNDECIDED, None, step.kind)


def _span(low: float, high: float) -> str:
    """``3``, ``1.9-2.3``, ``5400-7200``: three significant digits, whole numbers from 100 up."""
    shown = [f"{value:.0f}" if abs(value) >= 100 else f"{value:.3g}" for value in (low, high)]
    return shown[0] if shown[0] == shown[1] else "-".join(shown)


def _name(band: Band) -> str:
    return band.topology if band.kind == RUN and band.topology else band.kind


def run_answers(
    entries: Iterable[BenchmarkResult], target_pct: float, resolution: Resolution, max_probes: int
) -> list[Answer]:
    """The answer of every dataset a capacity search ran on, from the run's stored entries alone; where the grid was
    priced, each followed by its answer by $ per good request."""
    entries = list(entries)
    found = searches(entries, target_pct, resolution, max_probes)
    gpus = {candidate_of(entry): entry.gpu_budget for entry in entries if is_probe(entry)}
    given = (entry.summary.get("goodput_targets_ms") for entry in entries)
    targets: Mapping[str, float] = next((targets for targets in given if targets), {})
    grids = {
        figure: [
            replace(p, topology=candidate_of(entry)) for entry in entries if is_grid(entry) for p in points([entry])
        ]
        for figure, points in ((ENERGY_FIGURE, serving_points), (COST_FIGURE, cost_points))
    }
    datasets = dict.fromkeys(dataset for _, dataset in found)
    return [
        answer(
            dataset,
            [s.capacity(gpus[t]) for (t, d), s in found.items() if d == dataset],
            grid,
            targets,
            target_pct,
            figure,
        )  # fmt: skip
        for dataset in datasets
        for figure, grid in grids.items()
        if figure == ENERGY_FIGURE or any(point.dataset == dataset for point in grid)
    ]


def answer_json(found: Answer) -> dict[str, Any]:
    """What ``results.json`` keeps under ``capacity``: the lines as printed, and the figures behind them."""
    return {
        "dataset": found.dataset,
        "goodput_targets_ms": dict(found.targets_ms),
        "slo_attainment_pct": found.target_pct,
        "ranked_by": found.figure,
        "lines": found.lines(),
        "device_time_s": found.device_time_s,
        "capacities": [
            {**asdict(c), "capacity_per_gpu_rps": c.per_gpu_rps, "capacity_high_per_gpu_rps": c.per_gpu_high_rps}
            for c in found.capacities
        ],
        "bands": [
            {
                "rates_rps": list(b.rates_rps),
                "kind": b.kind,
                "topology": b.topology,
                "why": b.why or None,
                RANKED[found.figure][1]: list(b.ranked),
                RANKED[found.figure][2]: list(b.ranked_pm),
            }
            for b in found.bands
        ],  # fmt: skip
        "crossovers": [asdict(c) for c in found.crossovers],
    }

"""Which topology to run at each offered rate: a verdict computed from the serving benchmarks, with its uncertainty,
never written by hand.

The rule, per dataset and offered rate, over the topologies measured there with an SLO attainment and its Wilson
95 % interval (``plugin.analysis.goodput.attainment_interval_pct``), against ``attainment_pct`` (90 % by default):

- a topology *meets the targets* when the interval's lower bound is at or above the target, *misses* them when its
  upper bound is below, and is otherwise *undecided*: neither a winner nor a loser, named with its interval;
- one topology measured at that rate: ``ALONE``; none meets them: ``NONE``;
- topologies whose windows charged different numbers of GPUs (``gpu_budget``: a Ray node's or an exporter's GPUs
  differ from one deployment to the next): ``UNEQUAL``, no comparison, each named with its count;
- fewer than ``COMPARISON_ROUNDS`` (3) rounds at that rate (the fewest of its topologies): ``FEW_ROUNDS``, no
  winner, only who meets and who misses them;
- one meets them: ``ONLY``, its saving against the topology that misses them with the highest attainment (the
  next-best on the SLO; negative: it spends more), when both have an energy figure (none missing: no comparison);
- two or more meet them: the winner has the least energy per good request, and its saving is
  (E_other - E_winner) / E_other against the runner-up (``WINS``) when it exceeds its ±; a saving inside its ± or
  with no known ± is no clear winner (``TIE``); fewer than two of them with an energy figure: ``UNRANKED``.

The saving's ± (95 %) propagates the two figures' ± half-widths, relative errors in quadrature: saving = 1 - r with
r = E_winner / E_other, so ± = r · √((δE_winner / E_winner)² + (δE_other / E_other)²); ``None`` when either ± is
unknown. The verdict names what that ± contains (between-round spread, sensor edges, counter gap, good-request
count). Consecutive rates with the same verdict (kind, winner and the topology it is compared with) merge into one
range, "at 2-6 req/s ..."; a rate with an undecided topology stands alone. Pure functions: no I/O.

What the suite follows: DistServe's SLO attainment (the share of requests that meet every latency target) and its
90 % goal, and vLLM's ``--goodput`` test of a good request (every target met, inclusive; goodput = good requests
per second); both report a point estimate from one run, and DistServe's goodput is the highest rate per GPU at 90 %.
The suite adds the binomial (Wilson) interval of that share, so an attainment near the goal reads "undecided"
rather than flipping with the arrival draw. Between rounds it follows AIPerf's multi-run confidence reporting
(``--num-profile-runs``: the runs' mean ± Student's t at n - 1 degrees of freedom times the standard error, 95 % by
default, 3 runs its "quick check" minimum) in ``plugin.analysis.uncertainty``'s between-round part, except that
each round draws fresh requests where AIPerf repeats one seeded set, so the spread includes the draw; a verdict asks
for those 3 rounds before it names a winner.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

from plugin.analysis.goodput import attainment_interval_pct
from plugin.option_values import COMPARISON_ROUNDS, DEFAULT_SLO_ATTAINMENT_PCT
from plugin.records.results import BenchmarkResult

WINS, TIE, ONLY, NONE, UNRANKED, ALONE = "wins", "tie", "only", "none", "unranked", "alone"
FEW_ROUNDS = "few rounds"
UNEQUAL = "unequal budgets"
ENERGY_FIGURE = "energy per good request"
SOURCE_WORDS = {
    "rounds": "between-round spread",
    "edges": "sensor edges",
    "disagreement": "counter gap",
    "good_count": "good-request count",
}
"""What each source of energy per good request's ± is called in a verdict (``BenchmarkPower.uncertainty_sources``)."""


@dataclass(frozen=True, slots=True)
class Attainment:
    """An SLO attainment and its 95 % interval, in %."""

    pct: float
    low_pct: float
    high_pct: float

    def text(self) -> str:
        """``88 % met (95 % interval 80-94 %)``: bounds rounded outwards, so a shown bound never claims more."""
        low, high = math.floor(self.low_pct), math.ceil(self.high_pct)
        return f"{self.pct:.0f} % met (95 % interval {low}-{high} %)"

    def interval_text(self) -> str:
        """``80-94`` (rounded outwards, as ``text``)."""
        return f"{math.floor(self.low_pct)}-{math.ceil(self.high_pct)}"


def attainment_of(summary: Mapping[str, Any]) -> Attainment | None:
    """A serving summary's SLO attainment with its interval: the stored bounds, else Wilson's from ``good_requests``
    out of ``requests`` (files from before the bounds); ``None`` without an attainment or either."""
    pct, low, high = (summary.get(key) for key in ("slo_attainment_pct", "slo_attainment_low_pct",
                                                     "slo_attainment_high_pct"))  # fmt: skip
    if pct is None:
        return None
    if low is None or high is None:
        good, total = summary.get("good_requests"), summary.get("requests")
        bounds = None if good is None or total is None else attainment_interval_pct(int(good), int(total))
        if bounds is None:
            return None
        low, high = bounds
    return Attainment(float(pct), float(low), float(high))


def serving_points(entries: Iterable[BenchmarkResult]) -> list[Point]:
    """One point per serving entry with an offered rate and an SLO attainment: what the verdict judges."""
    points = []
    for entry in entries:
        summary, power = entry.summary, entry.power
        attainment = attainment_of(summary)
        if summary.get("offered_rate_rps") is None or attainment is None:
            continue
        points.append(
            Point(entry.topology_name, str(entry.workload.dataset), summary["offered_rate_rps"], len(entry.rounds),
                  attainment, summary.get("energy_per_good_request_j"),
                  power.uncertainty.get("energy_per_good_request_j"),
                  pm_sources(power.uncertainty_sources, power.uncertainty_parts), summary.get("goodput_per_gpu_rps"),
                  entry.gpu_budget)
        )  # fmt: skip
    return points


def pm_sources(sources: Mapping[str, Sequence[str]] | None, parts: Mapping[str, float | None]) -> tuple[str, ...]:
    """What energy per good request's ± contains: the entry's own list (``uncertainty_sources``), else (older files)
    the parts of its energy's ± that are known (``uncertainty_parts``)."""
    named = (sources or {}).get("energy_per_good_request_j")
    if named is not None:
        return tuple(named)
    return tuple(name for name, value in parts.items() if value is not None)


@dataclass(frozen=True, slots=True)
class Point:
    """One serving benchmark of one topology at one offered rate; a figure not measured is ``None``."""

    topology: str
    dataset: str
    offered_rate_rps: float
    rounds: int
    """Measured rounds (``len(entry.rounds)``)."""
    attainment: Attainment
    per_good_request: float | None
    """The figure the topologies are ranked by: J per good request (``summary.energy_per_good_request_j``), or $
    in a ranking by cost (``plugin.analysis.cost.cost_points``)."""
    per_good_request_pm: float | None = None
    """The ± half-width of ``per_good_request``'s 95 % interval (``power.uncertainty``)."""
    pm_sources: tuple[str, ...] = ()
    """What that ± contains (``pm_sources``)."""
    goodput_per_gpu_rps: float | None = None
    """Orders the topologies of an ``UNRANKED`` verdict (most goodput per GPU first)."""
    gpu_budget: int | None = None
    """The GPUs its windows charged and its per-GPU figures divide by (``BenchmarkResult.gpu_budget``)."""


@dataclass(frozen=True, slots=True)
class Step:
    """The verdict at one offered rate."""

    rate_rps: float
    kind: str
    winner: str | None
    other: str | None
    saving_pct: float | None
    saving_pm_pct: float | None
    met: tuple[str, ...]
    """The topologies that meet the targets (winner first)."""
    missed: tuple[str, ...] = ()
    undecided: tuple[tuple[str, Attainment], ...] = ()
    rounds: int = COMPARISON_ROUNDS
    """The fewest rounds of the rate's topologies."""
    pm_sources: tuple[str, ...] = ()
    """What the saving's ± contains: the sources of either figure's."""
    budgets: tuple[tuple[str, int], ...] = ()
    """``UNEQUAL``: each topology with the number of GPUs its windows charged."""

    @property
    def key(self) -> tuple[object, ...]:
        """What consecutive rates must share to merge: a tie merges whichever of its pair is ahead; a rate with an
        undecided topology merges with none (its interval is its own)."""
        names: object = frozenset((self.winner, self.other)) if self.kind == TIE else (self.winner, self.other)
        sign = None if self.saving_pct is None else self.saving_pct >= 0
        listed = (
            (self.met, self.missed, self.rounds, self.budgets) if self.kind in (UNRANKED, FEW_ROUNDS, UNEQUAL) else ()
        )
        return self.kind, names, listed, sign, self.rate_rps if self.undecided else None

    @property
    def saving_text(self) -> str:
        """``18 ± 4.1 %`` (the saving's size: the verdict's words say less or more)."""
        size = _pct(abs(self.saving_pct or 0.0))
        return f"{size} % (± unknown)" if self.saving_pm_pct is None else f"{size} ± {_pct(self.saving_pm_pct)} %"


@dataclass(frozen=True, slots=True)
class Verdict:
    """Consecutive offered rates of one dataset with the same verdict. ``saving_pct`` and ``saving_pm_pct`` are the
    least saving over the range (the claim that holds at every rate of it) and its ±; ``steps`` has each rate's."""

    dataset: str
    steps: tuple[Step, ...]
    attainment_pct: float = DEFAULT_SLO_ATTAINMENT_PCT
    """The attainment target the steps were judged against."""
    figure: str = ENERGY_FIGURE
    """What the topologies are ranked by, in words (the points' ``per_good_request`` holds it)."""

    @property
    def rate_from_rps(self) -> float:
        return self.steps[0].rate_rps

    @property
    def rate_to_rps(self) -> float:
        return self.steps[-1].rate_rps

    @property
    def kind(self) -> str:
        return self.steps[0].kind

    @property
    def winner(self) -> str | None:
        return self.steps[0].winner

    @property
    def other(self) -> str | None:
        return self.steps[0].other

    @property
    def saving_pct(self) -> float | None:
        return self._least.saving_pct

    @property
    def saving_pm_pct(self) -> float | None:
        return self._least.saving_pm_pct

    @property
    def _least(self) -> Step:
        return min(self.steps, key=lambda step: math.inf if step.saving_pct is None else step.saving_pct)

    def text(self) -> str:
        """``at 2-6 req/s 2p2d meets the targets with 18 ± 4.1 % less energy per good request than dp:4 (± 95 %:
        between-round spread, sensor edges)``, then each undecided topology with its interval."""
        rates = f"{self.rate_from_rps:g}" + (f"-{self.rate_to_rps:g}" if len(self.steps) > 1 else "")
        undecided = [
            f"{name} is undecided: {attainment.text()} against a {self.attainment_pct:g} % target"
            for name, attainment in self.steps[0].undecided
        ]
        return f"at {rates} req/s " + "; ".join(part for part in (self._claim(), *undecided) if part)

    def _claim(self) -> str:
        """The verdict's words before the undecided topologies (none where they say it all)."""
        first, winner, other = self.steps[0], self.winner, self.other
        if self.kind == NONE:
            return _standing(first) if first.undecided else "no topology meets the targets"
        if self.kind == ALONE:
            return f"only {winner} was measured: nothing to compare it with"
        if self.kind == UNEQUAL:
            return f"no comparison: {unequal_text(first.budgets)}"
        if self.kind == FEW_ROUNDS:
            rounds, needed = f"{first.rounds} round{'s' if first.rounds > 1 else ''} per rate", COMPARISON_ROUNDS
            return f"{rounds}: a winner needs at least {needed} (--rounds {needed}); {_standing(first)}"
        if self.kind == UNRANKED:
            return f"{_standing(first)}; no {self.figure} to rank them"
        if self.kind == TIE:
            known = [step.saving_pm_pct for step in self.steps if step.saving_pm_pct is not None]
            if len(known) < len(self.steps):
                return f"{winner} and {other} meet the targets: no clear winner (the saving has no known ±)"
            words = self._pm_words()
            return (f"{winner} and {other} meet the targets: no clear winner (within ±{_pct(max(known))} %"
                    f"{'; ' + words if words else ''})")  # fmt: skip
        if self.kind == WINS:
            return (f"{winner} meets the targets with {self._savings()} less {self.figure} than {other}"
                    f"{self._pm_note()}")  # fmt: skip
        if other is None:
            return _standing(first)
        if self.saving_pct is None:
            return f"only {winner} meets the targets; {other} misses them"
        if all(step.saving_pm_pct is not None and abs(step.saving_pct or 0.0) <= step.saving_pm_pct
               for step in self.steps):  # fmt: skip
            widest = max(step.saving_pm_pct or 0.0 for step in self.steps)
            return (f"only {winner} meets the targets, with {self.figure} within ±{_pct(widest)} % "
                    f"of {other}'s, which misses them{self._pm_note()}")  # fmt: skip
        more = "less" if self.saving_pct >= 0 else "more"
        return (f"only {winner} meets the targets, with {self._savings()} {more} {self.figure} "
                f"than {other}, which misses them{self._pm_note()}")  # fmt: skip

    def _savings(self) -> str:
        """The smallest and the largest saving (in size) of the range, each with its ±; one where they read the same."""
        known = [step for step in self.steps if step.saving_pct is not None]
        low = min(known, key=lambda step: abs(step.saving_pct or 0.0))
        high = max(known, key=lambda step: abs(step.saving_pct or 0.0))
        return low.saving_text if low.saving_text == high.saving_text else f"{low.saving_text} to {high.saving_text}"

    def _pm_words(self) -> str:
        """``± 95 %: between-round spread, sensor edges``: what the saving's ± contains, where it has one and its
        sources are known; empty otherwise."""
        if any(step.saving_pm_pct is None for step in self.steps):
            return ""
        named = _ordered(name for step in self.steps for name in step.pm_sources)
        return f"± 95 %: {', '.join(SOURCE_WORDS.get(name, name) for name in named)}" if named else ""

    def _pm_note(self) -> str:
        words = self._pm_words()
        return f" ({words})" if words else ""


def verdicts(
    points: Sequence[Point], attainment_pct: float = DEFAULT_SLO_ATTAINMENT_PCT, figure: str = ENERGY_FIGURE
) -> list[Verdict]:
    """The verdicts of every dataset (in the order they first appear), each over its rates from low to high; where a
    topology has several points at one rate, the last counts. ``figure`` names what the points' figure per good
    request is (``plugin.analysis.cost`` ranks by $ per good request with the same rule)."""
    result = []
    for dataset in dict.fromkeys(point.dataset for point in points):
        per_rate: dict[float, dict[str, Point]] = {}
        for point in points:
            if point.dataset == dataset:
                per_rate.setdefault(point.offered_rate_rps, {})[point.topology] = point
        steps = [judge(rate, list(per_rate[rate].values()), attainment_pct) for rate in sorted(per_rate)]
        result += [Verdict(dataset, run, attainment_pct, figure) for run in _merge(steps)]
    return result


def judge(rate_rps: float, points: Sequence[Point], attainment_pct: float = DEFAULT_SLO_ATTAINMENT_PCT) -> Step:
    """The verdict at one rate over one point per topology (module docstring)."""
    meet = [p for p in points if p.attainment.low_pct >= attainment_pct]
    miss = [p for p in points if p.attainment.high_pct < attainment_pct]
    undecided = tuple((p.topology, p.attainment) for p in points if p not in meet and p not in miss)
    ranked = sorted((p for p in meet if _energy(p) is not None), key=lambda p: (_energy(p), p.topology))
    names = tuple(p.topology for p in [*ranked, *(p for p in meet if p not in ranked)])
    rounds = min(p.rounds for p in points)
    none = Step(rate_rps, NONE, None, None, None, None, (), tuple(p.topology for p in miss), undecided, rounds)
    if len(points) == 1:
        return replace(none, kind=ALONE, winner=points[0].topology, met=names)
    budgets = tuple((p.topology, p.gpu_budget) for p in points if p.gpu_budget is not None)
    if len({size for _, size in budgets}) > 1:
        return replace(none, kind=UNEQUAL, budgets=budgets)
    if not meet:
        return none
    if rounds < COMPARISON_ROUNDS:  # who meets them rests on the requests' interval; a ranking on the rounds' spread
        return replace(none, kind=FEW_ROUNDS, met=tuple(p.topology for p in meet))
    if len(meet) == 1:
        (winner,) = meet
        if not miss:
            return replace(none, kind=ONLY, winner=winner.topology, met=names)
        closest = max(miss, key=lambda p: (p.attainment.pct, -(_energy(p) or math.inf)))
        return _compared(replace(none, kind=ONLY, met=names), winner, closest)
    if len(ranked) < 2:
        by_goodput = sorted(meet, key=lambda p: (-(p.goodput_per_gpu_rps or 0.0), p.topology))
        return replace(none, kind=UNRANKED, met=tuple(p.topology for p in by_goodput))
    compared = _compared(replace(none, met=names), ranked[0], ranked[1])
    pct, pm = compared.saving_pct, compared.saving_pm_pct
    return replace(compared, kind=WINS if pct is not None and pm is not None and pct > pm else TIE)


def unequal_text(budgets: Sequence[tuple[str, int]]) -> str:
    """Why topologies charged different GPU counts are not compared, naming each with its count."""
    counts = ", ".join(f"{name} {size} GPU{'s' if size != 1 else ''}" for name, size in budgets)
    return (f"their windows charged different numbers of GPUs ({counts}); compare topologies of one budget "
            "(the same --gpus, --gpu-role GPUs, or Ray GPUs per topology)")  # fmt: skip


def _compared(step: Step, winner: Point, other: Point) -> Step:
    """The step with its pair, the saving and what the saving's ± contains."""
    pct, pm = saving(winner, other)
    sources = _ordered([*winner.pm_sources, *other.pm_sources])
    return replace(step, winner=winner.topology, other=other.topology, saving_pct=pct, saving_pm_pct=pm,
                   pm_sources=sources)  # fmt: skip


def saving(winner: Point, other: Point) -> tuple[float | None, float | None]:
    """(E_other - E_winner) / E_other in %, and its ± (relative errors in quadrature); ``None``: not known."""
    e_win, e_other = _energy(winner), _energy(other)
    if e_win is None or e_other is None:
        return None, None
    ratio = e_win / e_other
    pm_win, pm_other = winner.per_good_request_pm, other.per_good_request_pm
    if pm_win is None or pm_other is None:
        return 100.0 * (1.0 - ratio), None
    return 100.0 * (1.0 - ratio), 100.0 * ratio * math.hypot(pm_win / e_win, pm_other / e_other)


def _energy(point: Point) -> float | None:
    energy = point.per_good_request
    return energy if energy is not None and math.isfinite(energy) and energy > 0 else None


def _merge(steps: list[Step]) -> list[tuple[Step, ...]]:
    runs: list[list[Step]] = []
    for step in steps:
        if runs and runs[-1][-1].key == step.key:
            runs[-1].append(step)
        else:
            runs.append([step])
    return [tuple(run) for run in runs]


def _standing(step: Step) -> str:
    """``1p1d meets the targets, dp:2 misses them`` (undecided ones are named apart)."""
    met = f"{_names(step.met)} {'meets' if len(step.met) == 1 else 'meet'} the targets" if step.met else ""
    missed = f"{_names(step.missed)} {'misses' if len(step.missed) == 1 else 'miss'} them" if step.missed else ""
    return ", ".join(part for part in (met, missed) if part)


def _ordered(names: Iterable[str]) -> tuple[str, ...]:
    """Sources once each, the known ones in ``SOURCE_WORDS`` order, then any other as it came."""
    order = list(SOURCE_WORDS)
    unique = dict.fromkeys(names)
    return tuple(sorted(unique, key=lambda name: order.index(name) if name in order else len(order)))


def _names(names: Sequence[str]) -> str:
    return names[0] if len(names) == 1 else f"{', '.join(names[:-1])} and {names[-1]}"


def _pct(value: float) -> str:
    """``18``, ``4.1``, ``0.3``: whole percents from 10 up, one decimal below."""
    return f"{value:.0f}" if abs(value) >= 10 else f"{value:.1f}"

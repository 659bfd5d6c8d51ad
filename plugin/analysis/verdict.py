"""Which topology to run at each offered rate: a verdict computed from the serving benchmarks, with its uncertainty,
never written by hand.

The rule, per dataset and offered rate, over the topologies measured there with an SLO attainment:

- a topology *meets the targets* when its SLO attainment is at least ``attainment_pct`` (90 % by default);
- two or more meet them: the winner has the least energy per good request, and its saving is
  (E_other - E_winner) / E_other against the runner-up (``WINS``); a saving no larger than its ± is no clear winner
  (``TIE``); fewer than two of them with an energy figure: ``UNRANKED`` (power not measured);
- one meets them: ``ONLY``, its saving against the topology that misses them with the highest attainment (the
  next-best on the SLO; negative: it spends more), when both have an energy figure;
- none meets them: ``NONE``; one topology measured at that rate: ``ALONE``.

The saving's ± (95 %) propagates the two figures' ± half-widths, relative errors in quadrature: saving = 1 - r with
r = E_winner / E_other, so ± = r · √((δE_winner / E_winner)² + (δE_other / E_other)²); ``None`` when either ± is
unknown. Consecutive rates with the same verdict (kind, winner and the topology it is compared with) merge into
one range, "at 2-6 req/s ...". Pure functions: no I/O.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from plugin.option_values import DEFAULT_SLO_ATTAINMENT_PCT

WINS, TIE, ONLY, NONE, UNRANKED, ALONE = "wins", "tie", "only", "none", "unranked", "alone"


@dataclass(frozen=True, slots=True)
class Point:
    """One serving benchmark of one topology at one offered rate; a figure not measured is ``None``."""

    topology: str
    dataset: str
    offered_rate_rps: float
    slo_attainment_pct: float | None
    energy_per_good_request_j: float | None
    energy_per_good_request_pm_j: float | None = None
    """The ± half-width of ``energy_per_good_request_j``'s 95 % interval (``power.uncertainty``)."""
    goodput_per_gpu_rps: float | None = None
    """Orders the topologies of an ``UNRANKED`` verdict (most goodput per GPU first)."""


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

    @property
    def key(self) -> tuple[object, ...]:
        """What consecutive rates must share to merge: a tie merges whichever of its pair is ahead."""
        names: object = frozenset((self.winner, self.other)) if self.kind == TIE else (self.winner, self.other)
        sign = None if self.saving_pct is None else self.saving_pct >= 0
        return self.kind, names, self.met if self.kind == UNRANKED else (), sign

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
        """``at 2-6 req/s 2p2d meets the targets with 18 ± 4.1 % less energy per good request than dp:4``."""
        rates = f"{self.rate_from_rps:g}" + (f"-{self.rate_to_rps:g}" if len(self.steps) > 1 else "")
        at, winner, other = f"at {rates} req/s", self.winner, self.other
        if self.kind == NONE:
            return f"{at} no topology meets the targets"
        if self.kind == ALONE:
            return f"{at} only {winner} was measured: nothing to compare it with"
        if self.kind == UNRANKED:
            return f"{at} {_names(self.steps[0].met)} meet the targets; no energy per good request to rank them"
        if self.kind == TIE:
            widest = max(step.saving_pm_pct or 0.0 for step in self.steps)
            return f"{at} {winner} and {other} meet the targets: no clear winner (within ±{_pct(widest)} %)"
        if self.kind == WINS:
            return f"{at} {winner} meets the targets with {self._savings()} less energy per good request than {other}"
        if self.saving_pct is None:
            return f"{at} only {winner} meets the targets; {other} misses them"
        if all(step.saving_pm_pct is not None and abs(step.saving_pct or 0.0) <= step.saving_pm_pct
               for step in self.steps):  # fmt: skip
            widest = max(step.saving_pm_pct or 0.0 for step in self.steps)
            return (f"{at} only {winner} meets the targets, with energy per good request within ±{_pct(widest)} % "
                    f"of {other}'s, which misses them")  # fmt: skip
        more = "less" if self.saving_pct >= 0 else "more"
        return (f"{at} only {winner} meets the targets, with {self._savings()} {more} energy per good request "
                f"than {other}, which misses them")  # fmt: skip

    def _savings(self) -> str:
        """The smallest and the largest saving (in size) of the range, each with its ±; one where they read the same."""
        known = [step for step in self.steps if step.saving_pct is not None]
        low = min(known, key=lambda step: abs(step.saving_pct or 0.0))
        high = max(known, key=lambda step: abs(step.saving_pct or 0.0))
        return low.saving_text if low.saving_text == high.saving_text else f"{low.saving_text} to {high.saving_text}"


def verdicts(points: Sequence[Point], attainment_pct: float = DEFAULT_SLO_ATTAINMENT_PCT) -> list[Verdict]:
    """The verdicts of every dataset (in the order they first appear), each over its rates from low to high.
    Points without an SLO attainment are left out; where a topology has several at one rate, the last counts."""
    result = []
    for dataset in dict.fromkeys(point.dataset for point in points):
        per_rate: dict[float, dict[str, Point]] = {}
        for point in points:
            if point.dataset == dataset and point.slo_attainment_pct is not None:
                per_rate.setdefault(point.offered_rate_rps, {})[point.topology] = point
        steps = [judge(rate, list(per_rate[rate].values()), attainment_pct) for rate in sorted(per_rate)]
        result += [Verdict(dataset, run) for run in _merge(steps)]
    return result


def judge(rate_rps: float, points: Sequence[Point], attainment_pct: float = DEFAULT_SLO_ATTAINMENT_PCT) -> Step:
    """The verdict at one rate over one point per topology, each with an SLO attainment (module docstring)."""
    meet = [p for p in points if (p.slo_attainment_pct or 0.0) >= attainment_pct]
    miss = [p for p in points if p not in meet]
    ranked = sorted((p for p in meet if _energy(p) is not None), key=lambda p: (_energy(p), p.topology))
    names = tuple(p.topology for p in [*ranked, *(p for p in meet if p not in ranked)])
    if len(points) == 1:
        return Step(rate_rps, ALONE, points[0].topology, None, None, None, names)
    if not meet:
        return Step(rate_rps, NONE, None, None, None, None, ())
    if len(meet) == 1:
        (winner,) = meet
        closest = max(miss, key=lambda p: (p.slo_attainment_pct or 0.0, -(_energy(p) or math.inf)))
        return Step(rate_rps, ONLY, winner.topology, closest.topology, *saving(winner, closest), names)
    if len(ranked) < 2:
        by_goodput = sorted(meet, key=lambda p: (-(p.goodput_per_gpu_rps or 0.0), p.topology))
        return Step(rate_rps, UNRANKED, None, None, None, None, tuple(p.topology for p in by_goodput))
    best, runner_up = ranked[:2]
    pct, pm = saving(best, runner_up)
    kind = TIE if pct is not None and pm is not None and pct <= pm else WINS
    return Step(rate_rps, kind, best.topology, runner_up.topology, pct, pm, names)


def saving(winner: Point, other: Point) -> tuple[float | None, float | None]:
    """(E_other - E_winner) / E_other in %, and its ± (relative errors in quadrature); ``None``: not known."""
    e_win, e_other = _energy(winner), _energy(other)
    if e_win is None or e_other is None:
        return None, None
    ratio = e_win / e_other
    pm_win, pm_other = winner.energy_per_good_request_pm_j, other.energy_per_good_request_pm_j
    if pm_win is None or pm_other is None:
        return 100.0 * (1.0 - ratio), None
    return 100.0 * (1.0 - ratio), 100.0 * ratio * math.hypot(pm_win / e_win, pm_other / e_other)


def _energy(point: Point) -> float | None:
    energy = point.energy_per_good_request_j
    return energy if energy is not None and math.isfinite(energy) and energy > 0 else None


def _merge(steps: list[Step]) -> list[tuple[Step, ...]]:
    runs: list[list[Step]] = []
    for step in steps:
        if runs and runs[-1][-1].key == step.key:
            runs[-1].append(step)
        else:
            runs.append([step])
    return [tuple(run) for run in runs]


def _names(names: Sequence[str]) -> str:
    return names[0] if len(names) == 1 else f"{', '.join(names[:-1])} and {names[-1]}"


def _pct(value: float) -> str:
    """``18``, ``4.1``, ``0.3``: whole percents from 10 up, one decimal below."""
    return f"{value:.0f}" if abs(value) >= 10 else f"{value:.1f}"

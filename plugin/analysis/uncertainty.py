"""An uncertainty on every energy figure: the ± half-width of a 95 % interval, in the figure's own unit.

Three independent parts of a benchmark's energy (all rounds, all GPUs), each a 95 % half-width in J, combined
by root-sum-square (docs/energy-uncertainty.md says why and works examples by hand):

- ``rounds``: the spread between rounds, Student's t with n - 1 degrees of freedom on the per-round energies,
  scaled to the total; ``None`` with one round (more ``--rounds`` give it);
- ``edges``: the sensor's quantisation at the window edges: per window, GPU and edge, update interval × power
  at the edge, root-sum-square over all edges; on Ray nodes also the bound on each node's clock offset × the
  window's mean power per edge (``_clock_edges``): a misplaced edge moves the energy as a stale one;
- ``disagreement``: |counter - samples' integral| per window and GPU, summed.

The energy's totals (``energy_j``, the split's ``prefill_j`` and ``decode_j``) carry its relative uncertainty.
A figure per unit of work (J per token, per request, per good request, tokens per J) divides by a count of the work
done inside the windows, which varies from round to round with the arrivals, so its ± combines:

- ``edges`` and ``disagreement``: the energy's measurement parts, relative, as for the totals;
- ``rounds``: the spread of the figure itself between rounds (Student's t on the per-round values, the mean's
  half-width, as AIPerf does over repeated runs); ``None`` with one round;
- ``good_count`` (figures per good request or good output token): the good share of the completions as a binomial
  proportion, its Wilson interval carried to the figure; kept beside ``rounds`` although the rounds' spread holds
  part of the same variation, so the interval errs wide rather than narrow.

``uncertainty_sources`` names the parts each figure's ± contains. A part is given only when it is known for every
window and GPU; nothing here is ever 0 for "unknown". Pure functions: no I/O.
"""

from __future__ import annotations

import dataclasses
import math
import statistics
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from plugin.analysis.goodput import attainment_interval_pct
from plugin.power.window import PowerCurve, WindowMeasurement
from plugin.records.results import BenchmarkPower, PowerWindow
from plugin.records.windows import GpuWindow

MIN_SENSOR_UPDATES = 10
"""A window shorter than this many sensor updates N is flagged: each edge alone can move its energy by up to 1/N of
it, 10 % at 10 updates (``--min-window-s`` makes windows longer)."""

FIGURE_KEYS = {
    "j_per_prompt_token": "energy_per_prompt_token_j",
    "j_per_output_token": "energy_per_output_token_j",
    "j_per_request": "energy_per_request_j",
    "prefill_j_per_prompt_token": "prefill_j_per_prompt_token",
    "decode_j_per_output_token": "decode_j_per_output_token",
    "j_per_good_request": "energy_per_good_request_j",
}
"""``plugin.analysis.phase_figures.energy_figures``'s keys -> the keys of ``BenchmarkPower.uncertainty``."""

_T95 = (
    12.7062, 4.3027, 3.1824, 2.7764, 2.5706, 2.4469, 2.3646, 2.3060, 2.2622, 2.2281,
    2.2010, 2.1788, 2.1604, 2.1448, 2.1314, 2.1199, 2.1098, 2.1009, 2.0930, 2.0860,
    2.0796, 2.0739, 2.0687, 2.0639, 2.0595, 2.0555, 2.0518, 2.0484, 2.0452, 2.0423,
)  # fmt: skip
"""Two-sided 95 % quantiles of Student's t for 1 to 30 degrees of freedom."""
_Z975 = 1.959964


@dataclass(frozen=True, slots=True)
class EnergyUncertainty:
    """What ``energy_uncertainty`` finds for one benchmark; ``with_uncertainty`` puts it into its power."""

    parts: dict[str, float | None]
    """``rounds``, ``edges``, ``disagreement`` for ``energy_j``, in J; empty when power was not measured."""
    figures: dict[str, float | None]
    """Figure name -> ± half-width (95 %), same unit as the figure; empty when power was not measured."""
    sources: dict[str, list[str]]
    """Figure name -> the parts its ± contains."""
    sensor_updates: tuple[float | None, ...]
    """Per window: its duration over the slowest of its GPUs' sensor update intervals."""
    sensor_updates_min: float | None
    short_window: bool


def t95(degrees_of_freedom: int) -> float:
    """Student's t for a two-sided 95 % interval: a table to 30 degrees of freedom, a Cornish-Fisher expansion
    beyond (within 1e-4 of the exact value there), so that no statistics package is needed."""
    if degrees_of_freedom < 1:
        raise ValueError(f"Student's t needs at least one degree of freedom, not {degrees_of_freedom}")
    if degrees_of_freedom <= len(_T95):
        return _T95[degrees_of_freedom - 1]
    z, v = _Z975, float(degrees_of_freedom)
    return (
        z
        + (z**3 + z) / (4 * v)
        + (5 * z**5 + 16 * z**3 + 3 * z) / (96 * v**2)
        + (3 * z**7 + 19 * z**5 + 17 * z**3 - 15 * z) / (384 * v**3)
    )


def rounds_part(energies_j: Sequence[float], repeats: Sequence[int] | None = None) -> float | None:
    """95 % half-width of the total ``sum(energies_j)`` from the spread between rounds; ``None`` under 2 rounds.

    A round that ran its load ``r`` times (``--min-window-s``) is taken as ``r`` loads of energy ``E / r`` each, so
    rounds of unequal repeats compare per load: half-width = t(n-1) · s(E_i / r_i) · sqrt(sum r_i²), which with
    equal repeats is the textbook t(n-1) · s(E_i) · sqrt(n) (n times the mean's half-width)."""
    n = len(energies_j)
    if n < 2:
        return None
    weights = list(repeats) if repeats is not None else [1] * n
    per_load = [energy / weight for energy, weight in zip(energies_j, weights, strict=True)]
    return t95(n - 1) * statistics.stdev(per_load) * math.sqrt(math.fsum(w * w for w in weights))


def edges_part(edges: Sequence[tuple[float, float]]) -> float | None:
    """Root-sum-square of update interval (s) × power (W) over ``(interval_s, power_w)`` edges; ``None`` with none.

    The counter and the power reading are up to one update interval stale at a window's edge, so each edge can
    move the energy by up to interval × power; edges of different windows and GPUs are independent."""
    if not edges:
        return None
    return math.sqrt(math.fsum((interval_s * power_w) ** 2 for interval_s, power_w in edges))


def disagreement_part(pairs: Sequence[tuple[float | None, float | None]]) -> float | None:
    """Sum of |counter - integral| over ``(counter_j, integral_j)`` per window and GPU; ``None`` when one is
    missing. Summed, not added in quadrature: the gap is the method's, and need not cancel between windows."""
    if not pairs or any(counter is None or integral is None for counter, integral in pairs):
        return None
    return math.fsum(abs((counter or 0.0) - (integral or 0.0)) for counter, integral in pairs)


def combine(parts: Mapping[str, float | None]) -> float | None:
    """Root-sum-square of the known parts; ``None`` when none is known (never 0 for "unknown")."""
    known = [part for part in parts.values() if part is not None]
    return math.sqrt(math.fsum(part * part for part in known)) if known else None


def gpu_edges(gpu: GpuWindow, curve: PowerCurve | None = None) -> list[tuple[float, float]] | None:
    """The window's two edges on one GPU as ``(interval_s, power_w)``: the power is the curve's mean over the
    first and the last update interval where the samples are held (in memory, while the run goes on), else the
    window's mean power (a stored results file keeps no edge samples); ``None`` without an interval or power."""
    interval_s = gpu.sensor_interval_s
    if interval_s is None or interval_s <= 0:
        return None
    span_s = min(interval_s, gpu.duration_s)
    if curve and span_s > 0:
        start_j = curve.energy_j(gpu.start_s, gpu.start_s + span_s)
        end_j = curve.energy_j(gpu.end_s - span_s, gpu.end_s)
        if start_j is not None and end_j is not None:
            return [(interval_s, abs(start_j) / span_s), (interval_s, abs(end_j) / span_s)]
    if gpu.mean_power_w is None:
        return None
    return [(interval_s, gpu.mean_power_w), (interval_s, gpu.mean_power_w)]


def sensor_updates(window: PowerWindow) -> float | None:
    """The window's duration over the slowest update interval of its GPUs (those whose interval is known)."""
    intervals = [gpu.window.sensor_interval_s for gpu in window.gpus.values()]
    known = [interval for interval in intervals if interval is not None and interval > 0]
    return window.duration_s / max(known) if known else None


def energy_uncertainty(
    power: BenchmarkPower,
    curves: Sequence[Mapping[int, PowerCurve]] | None = None,
    repeats: Sequence[int] | None = None,
    summary: Mapping[str, Any] | None = None,
    clock: Sequence[tuple[float, float]] = (),
    round_summaries: Sequence[Mapping[str, Any]] = (),
) -> EnergyUncertainty:
    """Every part and figure for one benchmark. ``curves`` (per window, GPU -> curve) give the edge powers;
    ``repeats`` (per window) how often each round ran its load; ``summary`` holds the summary's figures of the
    energy (``energy_per_good_request_j``, ``output_tokens_per_j``...) and the window counts, ``round_summaries``
    the same per round; ``clock``: the clock-offset edges of samples from Ray nodes, as ``(error_s, power_w)``."""
    updates = tuple(sensor_updates(window) for window in power.windows)
    known_updates = [u for u in updates if u is not None]
    updates_min = min(known_updates) if known_updates else None
    short = updates_min is not None and updates_min < MIN_SENSOR_UPDATES
    if not power.measured:
        return EnergyUncertainty({}, {}, {}, updates, updates_min, short)
    parts = _parts(power, curves, repeats, clock)
    figures, sources = _figures(power, parts, summary or {}, round_summaries)
    return EnergyUncertainty(parts, figures, sources, updates, updates_min, short)


def with_uncertainty(
    power: BenchmarkPower,
    windows: Sequence[WindowMeasurement],
    repeats: Sequence[int],
    summary: Mapping[str, Any] | None = None,
    round_summaries: Sequence[Mapping[str, Any]] = (),
) -> BenchmarkPower:
    """``power`` with its uncertainty and sensor-update fields filled in, from the rounds' windows as measured."""
    clock = [edge for window in windows if window.clock_error_s for edge in _clock_edges(window, window.clock_error_s)]
    curves = [window.curves for window in windows]
    found = energy_uncertainty(power, curves, repeats, summary, clock, round_summaries)
    return dataclasses.replace(
        power,
        windows=tuple(
            dataclasses.replace(window, sensor_updates=updates)
            for window, updates in zip(power.windows, found.sensor_updates, strict=True)
        ),
        uncertainty=found.figures,
        uncertainty_parts=found.parts,
        uncertainty_sources=found.sources,
        sensor_updates_min=found.sensor_updates_min,
        short_window=found.short_window,
    )


def _parts(
    power: BenchmarkPower,
    curves: Sequence[Mapping[int, PowerCurve]] | None,
    repeats: Sequence[int] | None,
    clock: Sequence[tuple[float, float]] = (),
) -> dict[str, float | None]:
    energies = [window.energy_j for window in power.windows]
    rounds = None
    if all(energy is not None for energy in energies):
        rounds = rounds_part([energy or 0.0 for energy in energies], repeats)
    edges: list[tuple[float, float]] | None = []
    pairs: list[tuple[float | None, float | None]] = []
    for i, window in enumerate(power.windows):
        for name, gpu in window.gpus.items():
            curve = curves[i].get(int(name)) if curves is not None and i < len(curves) else None
            found = gpu_edges(gpu.window, curve)
            edges = None if found is None or edges is None else [*edges, *found]
            pairs.append((gpu.window.energy_counter_j, gpu.window.energy_samples_j))
    edges = None if edges is None else [*edges, *clock]
    return {"rounds": rounds, "edges": edges_part(edges or []), "disagreement": disagreement_part(pairs)}


MEASUREMENT_PARTS = ("edges", "disagreement")
"""The energy's parts that come from measuring each window, not from the rounds' spread."""
TOTALS = ("energy_j", "prefill_j", "decode_j")
"""Figures that are the energy itself (or a share of it): they carry its relative uncertainty, rounds included."""
SUMMARY_FIGURES = ("energy_per_good_request_j", "energy_per_good_output_token_j", "output_tokens_per_j")
"""Figures of the energy kept in the summary."""
GOOD_FIGURES = ("energy_per_good_request_j", "energy_per_good_output_token_j")
"""Figures whose count is of good requests: their ± has a ``good_count`` part."""
_SPLIT_FIGURES = {
    "prefill_j_per_prompt_token": "j_per_prompt_token",
    "decode_j_per_output_token": "j_per_output_token",
    "j_per_request": "j_per_request",
}
"""Uncertainty keys of the phase split's per-unit figures -> ``PhaseSplit``'s attributes (per round: each window's)."""


def _figures(
    power: BenchmarkPower,
    parts: Mapping[str, float | None],
    summary: Mapping[str, Any],
    round_summaries: Sequence[Mapping[str, Any]],
) -> tuple[dict[str, float | None], dict[str, list[str]]]:
    """Each figure's ± and the parts it contains (module docstring)."""
    phases = power.phases
    values: dict[str, float | None] = {
        "energy_j": power.energy_j,
        "energy_per_prompt_token_j": power.energy_per_prompt_token_j,
        "energy_per_output_token_j": power.energy_per_output_token_j,
        "energy_per_request_j": power.energy_per_request_j,
        "prefill_j": phases.prefill_j if phases else None,
        "decode_j": phases.decode_j if phases else None,
        **{key: getattr(phases, attr) if phases else None for key, attr in _SPLIT_FIGURES.items()},
        **{name: summary[name] for name in SUMMARY_FIGURES if name in summary},
    }
    energy_j = power.energy_j
    if energy_j is None or energy_j <= 0:
        return {name: None for name in values}, {name: [] for name in values}
    figures: dict[str, float | None] = {}
    sources: dict[str, list[str]] = {}
    for name, value in values.items():
        if name in TOTALS:
            pieces = _carried(value, energy_j, parts)
        else:
            pieces = per_unit_pieces(value, energy_j, parts, _per_round(name, power, round_summaries))
        if name in GOOD_FIGURES and value is not None:
            share = good_share_relative(summary.get("window_good_completed"), summary.get("window_completed"))
            pieces["good_count"] = None if share is None else share * abs(value)
        known = {part: size for part, size in pieces.items() if size is not None}
        figures[name] = combine(known) if value is not None else None
        sources[name] = sorted(known) if value is not None else []
    return figures, sources


def _per_round(name: str, power: BenchmarkPower, round_summaries: Sequence[Mapping[str, Any]]) -> list[float | None]:
    if name in _SPLIT_FIGURES:
        return [getattr(w.phases, _SPLIT_FIGURES[name]) if w.phases else None for w in power.windows]
    return [summary.get(name) for summary in round_summaries]


def round_spread(values: Sequence[float | None]) -> float | None:
    """95 % half-width of the mean of the per-round values (Student's t); ``None`` under 2 rounds or where a round
    has no value."""
    if len(values) < 2 or any(value is None for value in values):
        return None
    known = [value or 0.0 for value in values]
    return t95(len(known) - 1) * statistics.stdev(known) / math.sqrt(len(known))


def mean_share_pm(
    value_j: float | None, per_round_j: Sequence[float | None], power: BenchmarkPower
) -> tuple[float | None, list[str]]:
    """The ± (95 %) of a mean of requests' shares of the energy (J per turn, J per request of a ramp stage,
    ``plugin.analysis.turn_energy``) and the parts it contains, as for a figure per unit of work: the energy's
    measurement parts carried relative to it (``power.uncertainty_parts``, so after ``with_uncertainty``) and the
    spread of the figure itself between rounds (``per_round_j``: its value in each round); ``None`` when no part is
    known."""
    energy_j = power.energy_j
    if value_j is None or energy_j is None or energy_j <= 0:
        return None, []
    pieces = per_unit_pieces(value_j, energy_j, power.uncertainty_parts, per_round_j)
    known = {part: size for part, size in pieces.items() if size is not None}
    return combine(known), sorted(known)


def per_unit_pieces(
    value: float | None, energy_j: float, parts: Mapping[str, float | None], per_round: Sequence[float | None]
) -> dict[str, float | None]:
    """The ± parts of a figure per unit of work: the energy's measurement parts (``MEASUREMENT_PARTS`` of
    ``parts``) carried relative to the figure, and the figure's own spread between rounds (``per_round``)."""
    measured = {part: parts.get(part) for part in MEASUREMENT_PARTS}
    return {**_carried(value, energy_j, measured), "rounds": round_spread(per_round)}


def _carried(value: float | None, energy_j: float, parts: Mapping[str, float | None]) -> dict[str, float | None]:
    """Each of the energy's ± parts as a part of ``value``'s (the same relative size)."""
    return {
        part: None if size is None or value is None else size / energy_j * abs(value) for part, size in parts.items()
    }


def good_share_relative(good: int | None, completed: int | None) -> float | None:
    """The relative ± that the good share's Wilson interval (95 %) puts on a figure per good request: the larger
    of its two sides, since E / good moves as 1 / share."""
    if not good or not completed:
        return None
    interval = attainment_interval_pct(good, completed)
    if interval is None or interval[0] <= 0:
        return None
    share_pct = 100.0 * good / completed
    return max(share_pct / interval[0] - 1.0, 1.0 - share_pct / interval[1])


def _clock_edges(window: WindowMeasurement, error_s: float) -> list[tuple[float, float]]:
    """The clock error at each window edge as ``(error_s, power_w)``, the form of ``edges_part``."""
    return [(error_s, gpu.mean_power_w) for gpu in window.gpus if gpu.mean_power_w is not None for _ in (0, 1)]

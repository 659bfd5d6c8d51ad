"""An uncertainty on every energy figure: the ± half-width of a 95 % interval, in the figure's own unit.

Three independent parts of a benchmark's energy (all rounds, all GPUs), each a 95 % half-width in J, combined
by root-sum-square (docs/energy-uncertainty.md says why and works examples by hand):

- ``rounds``: the spread between rounds, Student's t with n - 1 degrees of freedom on the per-round energies,
  scaled to the total; ``None`` with one round (more ``--rounds`` give it);
- ``edges``: the sensor's quantisation at the window edges: per window, GPU and edge, update interval × power
  at the edge, root-sum-square over all edges; on Ray nodes also the bound on each node's clock offset × the
  window's mean power per edge (``power.remote.clock_edges``): a misplaced edge moves the energy as a stale one;
- ``disagreement``: |counter - samples' integral| per window and GPU, summed.

Per-token and per-request figures carry the energy's relative uncertainty (token and request counts are exact).
A part is given only when it is known for every window and GPU; nothing here is ever 0 for "unknown". Pure
functions: no I/O.
"""

from __future__ import annotations

import dataclasses
import math
import statistics
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from plugin.power.remote import clock_edges
from plugin.power.window import GpuWindow, PowerCurve, WindowMeasurement
from plugin.results.schema import BenchmarkPower, PowerWindow

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
"""``plugin.analysis.benchmark.energy_figures``'s keys -> the keys of ``BenchmarkPower.uncertainty``."""

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
) -> EnergyUncertainty:
    """Every part and figure for one benchmark. ``curves`` (per window, GPU -> curve) give the edge powers;
    ``repeats`` (per window) how often each round ran its load; ``summary`` may hold ``energy_per_good_request_j``;
    ``clock``: the clock-offset edges of samples from Ray nodes, as ``(error_s, power_w)``."""
    updates = tuple(sensor_updates(window) for window in power.windows)
    known_updates = [u for u in updates if u is not None]
    updates_min = min(known_updates) if known_updates else None
    short = updates_min is not None and updates_min < MIN_SENSOR_UPDATES
    if not power.measured:
        return EnergyUncertainty({}, {}, updates, updates_min, short)
    parts = _parts(power, curves, repeats, clock)
    return EnergyUncertainty(parts, _figures(power, combine(parts), summary or {}), updates, updates_min, short)


def with_uncertainty(
    power: BenchmarkPower,
    windows: Sequence[WindowMeasurement],
    repeats: Sequence[int],
    summary: Mapping[str, Any] | None = None,
) -> BenchmarkPower:
    """``power`` with its uncertainty and sensor-update fields filled in, from the rounds' windows as measured."""
    clock = [edge for window in windows if window.clock_error_s for edge in clock_edges(window, window.clock_error_s)]
    found = energy_uncertainty(power, [window.curves for window in windows], repeats, summary, clock)
    return dataclasses.replace(
        power,
        windows=tuple(
            dataclasses.replace(window, sensor_updates=updates)
            for window, updates in zip(power.windows, found.sensor_updates, strict=True)
        ),
        uncertainty=found.figures,
        uncertainty_parts=found.parts,
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


SUMMARY_FIGURES = ("energy_per_good_request_j", "output_tokens_per_j")
"""Figures of the energy kept in the summary; tokens per joule has the energy's relative uncertainty too."""


def _figures(power: BenchmarkPower, energy_u_j: float | None, summary: Mapping[str, Any]) -> dict[str, float | None]:
    """The energy's relative uncertainty carried over to every figure of it (counts are exact)."""
    phases = power.phases
    values: dict[str, float | None] = {
        "energy_j": power.energy_j,
        "energy_per_prompt_token_j": power.energy_per_prompt_token_j,
        "energy_per_output_token_j": power.energy_per_output_token_j,
        "energy_per_request_j": power.energy_per_request_j,
        "prefill_j": phases.prefill_j if phases else None,
        "decode_j": phases.decode_j if phases else None,
        "prefill_j_per_prompt_token": phases.j_per_prompt_token if phases else None,
        "decode_j_per_output_token": phases.j_per_output_token if phases else None,
        "j_per_request": phases.j_per_request if phases else None,
    }
    for name in SUMMARY_FIGURES:
        if name in summary:
            values[name] = summary[name]
    energy_j = power.energy_j
    relative = None if energy_u_j is None or energy_j is None or energy_j <= 0 else energy_u_j / energy_j
    return {name: None if relative is None or v is None else relative * abs(v) for name, v in values.items()}

"""The energy card: marginal energy per prompt token and per output token, fitted across a run's benchmarks.

Each benchmark's phase figure (J per prompt token of a prefill benchmark, say) charges it everything the GPUs drew
above idle, its one decode step and the time the GPU was awake but waiting included. A least-squares fit over every
round window of one device setting (topology and DVFS setting) separates the two costs:

    energy above idle = a x prompt tokens + b x output tokens  [+ c x busy seconds]

``energy above idle`` is each GPU's window energy minus its idle power x the window's duration, summed over the
GPUs; a window whose GPUs have no idle baseline is left out, and the card says how many. No intercept: no token and
no busy time means no energy above idle. The third term, ``busy_s`` (time with at least one request in flight),
stands for the batch: a decode step reads the weights once for the whole batch, so the per-step cost shared by the
batch grows with time, not with tokens, and it is what makes J per output token fall as the batch grows. It is kept
only where the data determine it and it matters: its 95 % interval excludes zero and it reduces the residual; the
card says which model it used and why. Intervals are 95 % (Student's t on the residual variance,
``uncertainty.t95``); R^2 is centred.

The isolated prefill and decode benchmarks of the same group cross-check the fit: their own J per token above idle
beside the fitted coefficient and the fit's prediction for them. They are in the fit too, so the check shows how
well one linear model describes them all, not an independent measurement.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from plugin.analysis.uncertainty import t95
from plugin.results.schema import BenchmarkResult, PowerWindow

REGRESSORS = ("prompt_tokens", "output_tokens", "busy_s")
COEFFICIENTS = {"prompt_tokens": "j_per_prompt_token", "output_tokens": "j_per_output_token", "busy_s": "w_busy"}
"""Each regressor's coefficient name: J per prompt token, J per output token, W above idle while busy."""
ISOLATED = {"prefill": ("prompt_tokens", "j_per_prompt_token"), "decode": ("output_tokens", "j_per_output_token")}
"""The phase benchmarks that cross-check a coefficient, and the tokens their figure is per."""
MATERIAL_RSS_SHARE = 1e-9
"""A third term must cut the residual sum of squares by more than this share of sum(y^2): a cut below it is
rounding, and a noise-free fit would otherwise keep a zero term whose interval is rounding too."""


@dataclass(frozen=True, slots=True)
class WindowPoint:
    """One round window as the fit sees it."""

    benchmark: str
    phase: str
    energy_above_idle_j: float
    prompt_tokens: int
    output_tokens: int
    busy_s: float | None
    """Time with at least one request in flight; ``None`` without the window's phase split."""


@dataclass(frozen=True, slots=True)
class Coefficient:
    value: float
    half_width_95: float
    """± 95 % half-width: t x standard error."""
    low: float
    high: float


@dataclass(frozen=True, slots=True)
class CrossCheck:
    """An isolated phase benchmark's own figure above idle beside the fit's coefficient and prediction for it."""

    benchmark: str
    phase: str
    figure: str
    """``j_per_prompt_token`` (prefill) or ``j_per_output_token`` (decode)."""
    isolated_j: float | None
    """Its windows' energy above idle over its tokens of the phase."""
    fitted_j: float | None
    """The fit's coefficient of that figure."""
    predicted_j: float | None
    """The fit's energy for its windows (every term) over the same tokens."""
    difference_pct: float | None
    """(coefficient - isolated) / isolated: the gap between the marginal and the benchmark's average cost."""


@dataclass(frozen=True, slots=True)
class EnergyCard:
    """One device setting's fit, or why there is none (``why_no_fit``; then no number is given)."""

    topology: str
    """The topology's name (``2p2d``; the default pair's is its architecture): topologies of one architecture
    spread the same tokens over other GPUs, so each has a cost of its own."""
    architecture: str
    dvfs_setting: str | None
    gpus: list[str]
    benchmarks: int
    windows: int
    """Windows in the fit."""
    windows_skipped: int
    """Windows without an idle baseline (or without GPU figures), left out."""
    model: str | None
    regressors: list[str]
    coefficients: dict[str, Coefficient] | None
    r_squared: float | None
    dof: int | None
    cross_check: list[CrossCheck]
    notes: list[str]
    why_no_fit: str | None


@dataclass(frozen=True, slots=True)
class Fit:
    regressors: tuple[str, ...]
    beta: tuple[float, ...]
    half_widths: tuple[float, ...]
    r_squared: float | None
    dof: int
    rss: float


def energy_cards(benchmarks: Sequence[BenchmarkResult]) -> list[EnergyCard]:
    """One card per (topology, DVFS setting) with measured power, in the order the groups first ran."""
    groups: dict[tuple[str, str | None], list[BenchmarkResult]] = defaultdict(list)
    for benchmark in benchmarks:
        if benchmark.power.measured:
            setting = (benchmark.dvfs or {}).get("setting")
            groups[(benchmark.topology_name, None if setting is None else str(setting))].append(benchmark)
    return [card(members, setting) for (_, setting), members in groups.items()]


def energy_card_json(benchmarks: Sequence[BenchmarkResult]) -> list[dict[str, Any]]:
    """The cards as ``results.json`` stores them under ``energy_card``."""
    return [asdict(one) for one in energy_cards(benchmarks)]


def window_points(benchmark: BenchmarkResult) -> tuple[list[WindowPoint], list[str]]:
    """The benchmark's windows with an energy above idle, and why each other window was left out."""
    points, skipped = [], []
    for position, window in enumerate(benchmark.power.windows):
        above = _above_idle_j(window)
        if above is None:
            skipped.append("no GPU figures" if not window.gpus else "no idle baseline")
            continue
        tokens = _tokens(window, benchmark.rounds[position] if position < len(benchmark.rounds) else {})
        if tokens is None:
            skipped.append("no token counts")
            continue
        phases = window.phases
        busy_s = None if phases is None else phases.prefill_s + phases.decode_s - phases.overlap_s
        points.append(WindowPoint(benchmark.name, benchmark.phase, above, *tokens, busy_s))
    return points, skipped


def card(benchmarks: Sequence[BenchmarkResult], setting: str | None) -> EnergyCard:
    """The fit over ``benchmarks``, all of one topology and DVFS setting."""
    points: list[WindowPoint] = []
    skipped: list[str] = []
    for benchmark in benchmarks:
        mine, reasons = window_points(benchmark)
        points += mine
        skipped += reasons
    gpus = sorted({gpu for b in benchmarks for w in b.power.windows for gpu in w.gpus}, key=_gpu_order)
    notes = [f"{count} window(s) left out: {reason}" for reason, count in _counted(skipped).items()]
    base: dict[str, Any] = {
        "topology": benchmarks[0].topology_name, "architecture": benchmarks[0].architecture,
        "dvfs_setting": setting, "gpus": gpus, "benchmarks": len(benchmarks),
        "windows": len(points), "windows_skipped": len(skipped),
    }  # fmt: skip
    chosen, why = choose_fit(points, notes)
    if chosen is None:
        return EnergyCard(**base, model=None, regressors=[], coefficients=None, r_squared=None, dof=None,
                          cross_check=[], notes=notes, why_no_fit=why)  # fmt: skip
    coefficients = {
        COEFFICIENTS[name]: Coefficient(value, half, value - half, value + half)
        for name, value, half in zip(chosen.regressors, chosen.beta, chosen.half_widths, strict=True)
    }
    terms = " + ".join(f"{COEFFICIENTS[name]} x {name}" for name in chosen.regressors)
    return EnergyCard(
        **base,
        model=f"energy above idle = {terms}",
        regressors=list(chosen.regressors),
        coefficients=coefficients,
        r_squared=chosen.r_squared,
        dof=chosen.dof,
        cross_check=cross_checks(benchmarks, points, chosen),
        notes=notes,
        why_no_fit=None,
    )


def choose_fit(points: Sequence[WindowPoint], notes: list[str]) -> tuple[Fit | None, str | None]:
    """The two-token fit, with the busy-time term where it matters; else ``None`` and why (notes get the why of
    the choice)."""
    two = REGRESSORS[:2]
    fit, why = fit_points(points, two)
    if fit is None:
        return None, why
    if any(point.busy_s is None for point in points):
        notes.append("busy-time term not tried: a window has no phase split")
        return fit, None
    three, why_not = fit_points(points, REGRESSORS)
    if three is None:
        notes.append(f"busy-time term not tried: {why_not}")
        return fit, None
    c, half = three.beta[2], three.half_widths[2]
    total = math.fsum(point.energy_above_idle_j**2 for point in points)
    if abs(c) > half and fit.rss - three.rss > MATERIAL_RSS_SHARE * total:
        notes.append(f"busy-time term kept: {c:.4g} ± {half:.4g} W above idle while busy (interval excludes 0)")
        return three, None
    notes.append(f"busy-time term left out: {c:.4g} ± {half:.4g} W, not distinguishable from 0")
    return fit, None


def fit_points(points: Sequence[WindowPoint], regressors: Sequence[str]) -> tuple[Fit | None, str | None]:
    """Ordinary least squares without intercept; ``None`` and why when the windows cannot determine it."""
    k, n = len(regressors), len(points)
    if n < k + 1:
        return None, (
            f"{n} window(s) with an idle baseline: fitting {k} coefficients needs at least {k + 1} "
            "(one degree of freedom left for the interval)"
        )
    x = np.array([[float(getattr(point, name)) for name in regressors] for point in points])
    y = np.array([point.energy_above_idle_j for point in points])
    norms = np.linalg.norm(x, axis=0)
    for name, norm in zip(regressors, norms, strict=True):
        if norm == 0.0:
            return None, f"no window has any {name.replace('_', ' ')}: its coefficient cannot be fitted"
    scaled = x / norms  # columns of unit length: the rank test is then independent of units
    if np.linalg.matrix_rank(scaled) < k:
        names = " and ".join(name.replace("_", " ") for name in regressors)
        return None, (
            f"no variety: {names} move in the same proportion in every window, so the fit cannot tell them apart"
        )
    solution, _, _, _ = np.linalg.lstsq(scaled, y, rcond=None)
    beta = solution / norms
    residual = y - x @ beta
    rss = float(residual @ residual)
    dof = n - k
    variance = rss / dof
    covariance = variance * np.linalg.inv(scaled.T @ scaled) / np.outer(norms, norms)
    t = t95(dof)
    half_widths = tuple(float(t * math.sqrt(max(v, 0.0))) for v in np.diag(covariance))
    centred = float(((y - y.mean()) ** 2).sum())
    r_squared = 1.0 - rss / centred if centred > 0 else None
    return Fit(tuple(regressors), tuple(float(b) for b in beta), half_widths, r_squared, dof, rss), None


def cross_checks(benchmarks: Sequence[BenchmarkResult], points: Sequence[WindowPoint], fit: Fit) -> list[CrossCheck]:
    """One row per isolated prefill or decode benchmark of the group."""
    rows = []
    for benchmark in benchmarks:
        if benchmark.phase not in ISOLATED:
            continue
        tokens_name, figure = ISOLATED[benchmark.phase]
        mine = [point for point in points if point.benchmark == benchmark.name]
        tokens = sum(getattr(point, tokens_name) for point in mine)
        fitted = fit.beta[fit.regressors.index(tokens_name)]
        if not tokens:
            rows.append(CrossCheck(benchmark.name, benchmark.phase, figure, None, fitted, None, None))
            continue
        isolated = math.fsum(point.energy_above_idle_j for point in mine) / tokens
        predicted = math.fsum(_predict(fit, point) for point in mine) / tokens
        difference = 100.0 * (fitted - isolated) / isolated if isolated else None
        rows.append(CrossCheck(benchmark.name, benchmark.phase, figure, isolated, fitted, predicted, difference))
    return rows


def _predict(fit: Fit, point: WindowPoint) -> float:
    return math.fsum(beta * float(getattr(point, name)) for name, beta in zip(fit.regressors, fit.beta, strict=True))


def _above_idle_j(window: PowerWindow) -> float | None:
    """Every GPU's energy minus its idle power x the window's duration, summed; ``None`` if a GPU lacks one."""
    if not window.gpus:
        return None
    parts = [gpu.window.energy_above_idle_j for gpu in window.gpus.values()]
    if any(part is None for part in parts):
        return None
    return math.fsum(part for part in parts if part is not None)


def _tokens(window: PowerWindow, round_summary: dict[str, Any]) -> tuple[int, int] | None:
    """The window's tokens: its phase split's count (steady state: those made inside it), else the round's."""
    if window.phases is not None:
        return window.phases.prompt_tokens, window.phases.output_tokens
    prompt, output = round_summary.get("total_input_tokens"), round_summary.get("total_output_tokens")
    return None if prompt is None or output is None else (int(prompt), int(output))


def _counted(items: Sequence[str]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for item in items:
        counts[item] = counts.get(item, 0) + 1
    return counts


def _gpu_order(gpu: str) -> tuple[int, str]:
    return (int(gpu), gpu) if gpu.isdigit() else (1 << 30, gpu)

"""The energy card: marginal energy per prompt token and per output token, fitted across a run's benchmarks.

Each benchmark's phase figure (J per prompt token of a prefill benchmark, say) charges it everything the GPUs drew
above idle, its one decode step and the time the GPU was awake but waiting included. A fit over every round window
of one device setting (topology and DVFS setting) separates the two costs:

    energy above idle = a x prompt tokens + b x output tokens  [+ c x busy seconds]

``energy above idle`` is each GPU's window energy minus its idle power x the window's duration, summed over the
GPUs; a window whose GPUs have no idle baseline is left out, and the card says how many. No intercept: no token and
no busy time means no energy above idle. The third term, ``busy_s`` (time with at least one request in flight),
stands for the batch: a decode step reads the weights once for the whole batch, so the per-step cost shared by the
batch grows with time, not with tokens, and it is what makes J per output token fall as the batch grows. It is kept
only where the data determine it and it matters: its 95 % interval excludes zero and it reduces the residual; the
card says which model it used and why.

How the fit earns its numbers:

- **Enough windows.** A fit of k terms needs ``MIN_DOF`` residual degrees of freedom (3 for two terms, 5 for the
  third): with fewer, the residual variance is a guess and Student's t is huge, and an interval such as -0.12 to
  0.14 J per prompt token says nothing. Then the card gives no number and ``why_no_fit`` says what to run.
- **Weights.** Each window counts by 1/sigma^2 of its energy: its GPUs' sensor edges (update interval x power, as
  ``uncertainty.gpu_edges``) and counter-vs-samples gap, root-sum-square, from the stored window figures, so a
  results file fits the same. Only the ratios matter: the scale of the residual comes from the residuals (the
  sigma are bounds, and leave out the idle baseline's own error). A window without a known sigma makes every weight
  equal, and the card says so.
- **Non-negative.** A token or busy second cannot save energy: the fit is non-negative least squares (exact, over
  every subset of the 2 or 3 terms), and a coefficient pinned at 0 is flagged in the notes with what the
  unconstrained fit gave. The free coefficients' intervals come from the weighted fit's covariance on the terms left
  free, Student's t with its residual degrees of freedom (``uncertainty.t95``); a pinned one has no interval.

R^2 is weighted and centred.

The isolated prefill and decode benchmarks of the same group cross-check the fit: their own J per token above idle
beside the fitted coefficient and the fit's prediction for them. They are in the fit too, so the check shows how
well one linear model describes them all, not an independent measurement.
"""

from __future__ import annotations

import itertools
import math
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from plugin.analysis.uncertainty import combine, disagreement_part, edges_part, gpu_edges, t95
from plugin.records.results import BenchmarkResult, PowerWindow

REGRESSORS = ("prompt_tokens", "output_tokens", "busy_s")
COEFFICIENTS = {"prompt_tokens": "j_per_prompt_token", "output_tokens": "j_per_output_token", "busy_s": "w_busy"}
"""Each regressor's coefficient name: J per prompt token, J per output token, W above idle while busy."""
ISOLATED = {"prefill": ("prompt_tokens", "j_per_prompt_token"), "decode": ("output_tokens", "j_per_output_token")}
"""The phase benchmarks that cross-check a coefficient, and the tokens their figure is per."""
MIN_DOF = {2: 3, 3: 5}
"""Residual degrees of freedom a fit of that many terms needs before it gives a number (windows - terms)."""
WEIGHTED, EQUAL = "window energy uncertainty", "equal"
"""The card's ``weights``: 1/sigma^2 of each window's energy, or equal where a window's sigma is unknown."""
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
    energy_sigma_j: float | None = None
    """The window's energy uncertainty (``window_sigma_j``); ``None`` when unknown."""


@dataclass(frozen=True, slots=True)
class Coefficient:
    value: float
    half_width_95: float | None
    """± 95 % half-width: t x standard error; ``None`` when pinned."""
    low: float
    high: float | None
    pinned: bool = False
    """Held at 0 by the non-negative fit (its unconstrained value was below 0; the notes give it)."""


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
    weights: str
    """``window energy uncertainty`` (1/sigma^2 per window) or ``equal`` (a window's sigma unknown)."""
    cross_check: list[CrossCheck]
    notes: list[str]
    why_no_fit: str | None


@dataclass(frozen=True, slots=True)
class Fit:
    regressors: tuple[str, ...]
    beta: tuple[float, ...]
    half_widths: tuple[float | None, ...]
    """``None`` for a pinned coefficient."""
    r_squared: float | None
    dof: int
    rss: float
    """Weighted residual sum of squares."""
    pinned: tuple[str, ...]
    """Regressors held at 0 by the non-negative fit."""
    unconstrained: tuple[tuple[float, float | None], ...]
    """Each regressor's unconstrained weighted fit, ``(value, half-width)``: what a pinned one would have been."""


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
        points.append(WindowPoint(benchmark.name, benchmark.phase, above, *tokens, busy_s, window_sigma_j(window)))
    return points, skipped


def window_sigma_j(window: PowerWindow) -> float | None:
    """The window's energy uncertainty in J from its GPUs' stored figures: both sensor edges of every GPU
    (``uncertainty.gpu_edges``: update interval x mean power) and the counter-vs-samples gap, root-sum-square;
    ``None`` when a GPU's edges are unknown (no sensor interval or power) or it comes to 0."""
    edges: list[tuple[float, float]] = []
    pairs = []
    for gpu in window.gpus.values():
        found = gpu_edges(gpu.window)
        if found is None:
            return None
        edges += found
        pairs.append((gpu.window.energy_counter_j, gpu.window.energy_samples_j))
    sigma = combine({"edges": edges_part(edges), "disagreement": disagreement_part(pairs)})
    return sigma if sigma is not None and sigma > 0 else None


def weights(points: Sequence[WindowPoint]) -> np.ndarray | None:
    """1/sigma^2 per window, or ``None`` (equal weights) when a window's sigma is unknown."""
    sigmas = [point.energy_sigma_j for point in points]
    if not sigmas or any(sigma is None for sigma in sigmas):
        return None
    return 1.0 / np.array(sigmas, dtype=float) ** 2


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
    notes += _weights_note(points)
    base: dict[str, Any] = {
        "topology": benchmarks[0].topology_name, "architecture": benchmarks[0].architecture,
        "dvfs_setting": setting, "gpus": gpus, "benchmarks": len(benchmarks),
        "windows": len(points), "windows_skipped": len(skipped),
        "weights": EQUAL if weights(points) is None else WEIGHTED,
    }  # fmt: skip
    chosen, why = choose_fit(points, notes)
    if chosen is None:
        return EnergyCard(**base, model=None, regressors=[], coefficients=None, r_squared=None, dof=None,
                          cross_check=[], notes=notes, why_no_fit=why)  # fmt: skip
    coefficients = {}
    for name, value, half in zip(chosen.regressors, chosen.beta, chosen.half_widths, strict=True):
        if half is None:
            coefficients[COEFFICIENTS[name]] = Coefficient(0.0, None, 0.0, None, pinned=True)
        else:
            coefficients[COEFFICIENTS[name]] = Coefficient(value, half, value - half, value + half)
    for name in chosen.pinned:
        value, half = chosen.unconstrained[chosen.regressors.index(name)]
        notes.append(
            f"{COEFFICIENTS[name]} pinned at 0 (the fit keeps every cost non-negative): unconstrained it came out "
            f"{value:.4g} ± {half:.4g}, so these windows cannot tell its cost from the other terms'; more varied "
            "windows (other rates or datasets) would"
        )
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
    if half is None:
        notes.append("busy-time term left out: the non-negative fit pinned it at 0")
        return fit, None
    w = weights(points)
    y = np.array([point.energy_above_idle_j for point in points])
    total = float(((1.0 if w is None else w) * y * y).sum())
    if c > half and fit.rss - three.rss > MATERIAL_RSS_SHARE * total:
        notes.append(f"busy-time term kept: {c:.4g} ± {half:.4g} W above idle while busy (interval excludes 0)")
        return three, None
    notes.append(f"busy-time term left out: {c:.4g} ± {half:.4g} W, not distinguishable from 0")
    return fit, None


def fit_points(points: Sequence[WindowPoint], regressors: Sequence[str]) -> tuple[Fit | None, str | None]:
    """Weighted non-negative least squares without intercept; ``None`` and why when the windows cannot determine
    it (too few for ``MIN_DOF``, a term never present, terms in one proportion, nothing above 0)."""
    k, n = len(regressors), len(points)
    if n - k < MIN_DOF[k]:
        return None, (
            f"not enough windows: {n} window{'' if n == 1 else 's'} for {k} terms (need at least {k + MIN_DOF[k]}: "
            "with fewer, the fit's interval is too wide to mean anything); run more request rates (--request-rate) "
            "or more rounds (--rounds)"
        )
    x = np.array([[float(getattr(point, name)) for name in regressors] for point in points])
    y = np.array([point.energy_above_idle_j for point in points])
    w = weights(points)
    root_w = np.ones(n) if w is None else np.sqrt(w)
    xw, yw = x * root_w[:, None], y * root_w
    norms = np.linalg.norm(xw, axis=0)
    for name, norm in zip(regressors, norms, strict=True):
        if norm == 0.0:
            return None, f"no window has any {name.replace('_', ' ')}: its coefficient cannot be fitted"
    if np.linalg.matrix_rank(xw / norms) < k:  # columns of unit length: the rank test is independent of units
        names = " and ".join(name.replace("_", " ") for name in regressors)
        return None, (
            f"no variety: {names} move in the same proportion in every window, so the fit cannot tell them apart"
        )
    unconstrained_beta, unconstrained_half, _, _ = _weighted_fit(xw, yw, range(k))
    free = _non_negative_set(xw, yw)
    if not free:
        return None, "no cost above 0: the windows' energy above idle does not grow with any term"
    beta, half_widths, rss, dof = _weighted_fit(xw, yw, free)
    mean_y = float((root_w * yw).sum() / (root_w**2).sum())
    centred = float(((yw - root_w * mean_y) ** 2).sum())
    r_squared = 1.0 - rss / centred if centred > 0 else None
    pinned = tuple(name for index, name in enumerate(regressors) if index not in free)
    unconstrained = tuple(zip(unconstrained_beta, unconstrained_half, strict=True))
    return Fit(tuple(regressors), beta, half_widths, r_squared, dof, rss, pinned, unconstrained), None


def _non_negative_set(xw: np.ndarray, yw: np.ndarray) -> tuple[int, ...]:
    """The terms left free by non-negative least squares: its solution is the least-squares fit on one subset of
    the terms with every coefficient >= 0, the one of least residual; with 2 or 3 terms every subset is tried."""
    best_rss, best = float(yw @ yw), tuple[int, ...]()
    k = xw.shape[1]
    for size in range(1, k + 1):
        for subset in itertools.combinations(range(k), size):
            beta, _, _, _ = np.linalg.lstsq(xw[:, subset], yw, rcond=None)
            residual = yw - xw[:, subset] @ beta
            if (beta >= 0).all() and float(residual @ residual) < best_rss:
                best_rss, best = float(residual @ residual), subset
    return best


def _weighted_fit(
    xw: np.ndarray, yw: np.ndarray, free: Sequence[int]
) -> tuple[tuple[float, ...], tuple[float | None, ...], float, int]:
    """Least squares of the weighted data on the ``free`` terms (the others held at 0): every coefficient, its 95 %
    half-width (``None`` when held), the weighted residual sum of squares and the residual degrees of freedom."""
    columns = list(free)
    x = xw[:, columns]
    norms = np.linalg.norm(x, axis=0)
    scaled = x / norms
    solution, _, _, _ = np.linalg.lstsq(scaled, yw, rcond=None)
    beta_free = solution / norms
    residual = yw - x @ beta_free
    rss = float(residual @ residual)
    dof = len(yw) - len(columns)
    covariance = rss / dof * np.linalg.inv(scaled.T @ scaled) / np.outer(norms, norms)
    t = t95(dof)
    beta: list[float] = [0.0] * xw.shape[1]
    half_widths: list[float | None] = [None] * xw.shape[1]
    for position, column in enumerate(columns):
        beta[column] = float(beta_free[position])
        half_widths[column] = float(t * math.sqrt(max(covariance[position, position], 0.0)))
    return tuple(beta), tuple(half_widths), rss, dof


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
    """The tokens made inside the window (``plugin.analysis.accounting``): the round's counts, in files from before
    them its phase split's, else the round's requests' (a closed loop's window holds them whole)."""
    prompt, output = round_summary.get("window_prompt_tokens"), round_summary.get("window_output_tokens")
    if (prompt is None or output is None) and window.phases is not None:
        return window.phases.prompt_tokens, window.phases.output_tokens
    if prompt is None or output is None:
        prompt, output = round_summary.get("total_input_tokens"), round_summary.get("total_output_tokens")
    return None if prompt is None or output is None else (int(prompt), int(output))


def _weights_note(points: Sequence[WindowPoint]) -> list[str]:
    """How the windows were weighted, in words; nothing without windows."""
    known = [point.energy_sigma_j for point in points if point.energy_sigma_j is not None]
    if not points:
        return []
    if len(known) < len(points):
        return [
            f"equal weights: {len(points) - len(known)} of {len(points)} window(s) have no energy uncertainty "
            "(sensor update interval or power unknown), so every window counts the same"
        ]
    return [
        "each window weighted by 1/sigma² of its energy (sensor edges and counter-vs-samples gap): "
        f"sigma {min(known):.3g} to {max(known):.3g} J"
    ]


def _counted(items: Sequence[str]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for item in items:
        counts[item] = counts.get(item, 0) + 1
    return counts


def _gpu_order(gpu: str) -> tuple[int, str]:
    return (int(gpu), gpu) if gpu.isdigit() else (1 << 30, gpu)

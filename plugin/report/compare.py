"""Runs compared benchmark by benchmark: every headline figure of a benchmark both runs have (by id, at the same
load), each with its 95 % half-width (``plugin.analysis.figure_interval``; energy figures their own), and the
difference with the half-widths of both added in quadrature. A difference is *higher* or *lower* only where its
interval excludes 0; where it holds 0, or where either figure has no interval (one round, a throughput), it is
*undecided* (more ``--rounds`` decide it), never flagged. SLO attainment's half-width is the larger side of its
Wilson interval.

A serving benchmark is compared only at the same offered rate (a sweep point's rate is resolved per run), with its
achieved throughput, TPOT p99 and, where both runs had the same ``--goodput`` targets, SLO attainment, goodput and
J per good request besides the headline. The automatic baseline of a run's page and
``python -m plugin.report compare`` both use ``compare``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from plugin.analysis.figure_interval import difference_half_width, figure_half_width
from plugin.analysis.phase_figures import energy_figures
from plugin.analysis.stats import e2e_s, tpot_s, ttft_s
from plugin.analysis.verdict import attainment_of
from plugin.records.requests import RequestRecord
from plugin.records.results import BenchmarkResult
from plugin.records.workload import SERVING
from plugin.report.data import GOODPUT, HEADLINE, LATENCY, SERVING_ENERGY, SERVING_LATENCY, Run, energy_errors, load_run
from plugin.report.formatting import number, signed, with_pm

PER_REQUEST: dict[str, Callable[[RequestRecord], float | None]] = {
    "median_ttft_ms": ttft_s,
    "median_e2el_ms": e2e_s,
    "median_tpot_ms": tpot_s,
}
"""Headline medians whose interval can come from the spread over requests (``plugin.analysis.stats``)."""
SERVING_METRICS = {key: SERVING_LATENCY[key] for key in ("request_throughput", "p99_tpot_ms")}
SERVING_GOODPUT = {
    "slo_attainment_pct": GOODPUT["slo_attainment_pct"],
    "goodput_rps": GOODPUT["goodput_rps"],
    "j_per_good_request": SERVING_ENERGY["j_per_good_request"],
}
"""Meaningful only against the same targets."""
METRICS = {**HEADLINE, **SERVING_METRICS, **SERVING_GOODPUT}
"""Every metric a change can be of, and its label."""
RATE_TOLERANCE = 1e-6
"""Offered rates closer than this (relative) are the same load: a rate read back may differ in its last bit."""
HIGHER, LOWER, UNDECIDED = "higher", "lower", "undecided"


@dataclass(frozen=True)
class Figure:
    """A benchmark's figure and its 95 % half-width (``None``: unknown)."""

    value: float
    half_width: float | None

    def text(self) -> str:
        return with_pm(self.value, self.half_width)


@dataclass(frozen=True)
class Change:
    """One figure of one benchmark in a baseline run and in another."""

    benchmark: str
    metric: str
    baseline: Figure
    current: Figure

    @property
    def difference(self) -> float:
        return self.current.value - self.baseline.value

    @property
    def half_width(self) -> float | None:
        """The difference's 95 % half-width: both figures' in quadrature (independent runs)."""
        return difference_half_width(self.baseline.half_width, self.current.half_width)

    @property
    def change_pct(self) -> float:
        return 100.0 * self.difference / self.baseline.value

    @property
    def verdict(self) -> str:
        """``higher`` or ``lower`` where the difference's interval excludes 0, else ``undecided``."""
        if self.half_width is None or abs(self.difference) <= self.half_width:
            return UNDECIDED
        return HIGHER if self.difference > 0 else LOWER

    @property
    def flagged(self) -> bool:
        return self.verdict != UNDECIDED

    def difference_text(self) -> str:
        """``+71.6 ± 5.3 (+200 %)``."""
        pm = "" if self.half_width is None else f" ± {number(self.half_width, 2)}"
        return f"{signed(self.difference)}{pm} ({self.change_pct:+.1f} %)"

    def verdict_text(self) -> str:
        if self.half_width is None:
            return f"{UNDECIDED} (no interval: more --rounds give one)"
        return self.verdict


def choose_baseline(run: Run, reports_dir: Path, asked: str | None) -> Run | None:
    """``asked`` (a run id in ``reports_dir`` or a folder), else the newest earlier run with the same model and
    devices that has results of this schema version (a run of another version is skipped)."""
    if asked:
        folder = Path(asked) if Path(asked).is_dir() else reports_dir / asked
        if not (folder / "results.json").is_file():
            raise ValueError(f"--report-baseline {asked}: no results.json in {folder}")
        return load_run(folder)
    earlier = sorted(
        (path for path in reports_dir.iterdir() if path.is_dir() and path.name < run.folder.name),
        reverse=True,
    ) if reports_dir.is_dir() else []  # fmt: skip
    for folder in earlier:
        try:
            candidate = load_run(folder)
        except (OSError, ValueError):
            continue  # not a run folder, or another schema version
        if candidate.model == run.model and candidate.devices == run.devices and candidate.benchmarks:
            return candidate
    return None


def compare(run: Run, baseline: Run) -> list[Change]:
    """Every headline metric of every benchmark (by id) that both runs have; energy only as the figures of the
    benchmark's phase (``energy_figures``); serving benchmarks as the module says."""
    base_benchmarks = {benchmark.id: benchmark for benchmark in baseline.benchmarks}
    changes = []
    for benchmark in run.benchmarks:
        base = base_benchmarks.get(benchmark.id)
        if base is None or not same_load(benchmark, base):
            continue
        now_figures, then_figures = figures(run, benchmark), figures(baseline, base)
        for metric in compared_metrics(benchmark, base):
            now, then = now_figures.get(metric), then_figures.get(metric)
            if now is None or then is None or then.value == 0:
                continue
            changes.append(Change(benchmark.name, metric, then, now))
    return changes


@dataclass(frozen=True)
class SideBySide:
    """Runs compared with the first: each shared benchmark's figures per run, and each later run's change."""

    runs: list[Run]
    rows: list[tuple[str, str, list[Figure | None], list[Change | None]]]
    """(benchmark, metric, the figure in each run, its change against the first run: ``None`` for the first)."""
    not_shared: list[str]
    """Benchmarks of the first run that some other run lacks (or ran at another load)."""

    @property
    def labels(self) -> list[str]:
        """Each run's id, or its folder where two runs have the same id (a copied folder)."""
        ids = [run.run_id for run in self.runs]
        return ids if len(set(ids)) == len(ids) else [str(run.folder) for run in self.runs]

    @property
    def difference_labels(self) -> list[str]:
        """The heading of each later run's difference column."""
        first, *later = self.labels
        if len(later) == 1:
            return ["difference (± 95 %)"]
        return [f"{label} - {first} (± 95 %)" for label in later]


def side_by_side(runs: Sequence[Run]) -> SideBySide:
    """The first run's benchmarks that every other run has at the same load, figure by figure (``compare``)."""
    first, others = runs[0], list(runs[1:])
    changes = [{(c.benchmark, c.metric): c for c in compare(other, first)} for other in others]
    rows: list[tuple[str, str, list[Figure | None], list[Change | None]]] = []
    not_shared = []
    for benchmark in first.benchmarks:
        keys = [(benchmark.name, metric) for metric in METRICS]
        found = [key for key in keys if all(key in per_run for per_run in changes)]
        if not found:
            not_shared.append(benchmark.name)
        for key in found:
            now = [per_run[key] for per_run in changes]
            against: list[Change | None] = [None, *now]
            rows.append((*key, [now[0].baseline, *(c.current for c in now)], against))
    return SideBySide(list(runs), rows, not_shared)


def same_load(benchmark: BenchmarkResult, base: BenchmarkResult) -> bool:
    """Same phase, and for serving the same offered rate (both none: all at once or closed loop)."""
    if benchmark.phase != base.phase:
        return False
    if benchmark.phase != SERVING:
        return True
    now, then = benchmark.summary.get("offered_rate_rps"), base.summary.get("offered_rate_rps")
    if now is None or then is None:
        return now is None and then is None
    return math.isclose(float(now), float(then), rel_tol=RATE_TOLERANCE)


def compared_metrics(benchmark: BenchmarkResult, base: BenchmarkResult) -> list[str]:
    """The headline; for serving also throughput and TPOT p99, and goodput figures only under the same targets."""
    if benchmark.phase != SERVING:
        return list(HEADLINE)
    targets = benchmark.summary.get("goodput_targets_ms")
    same_targets = targets is not None and targets == base.summary.get("goodput_targets_ms")
    return [*HEADLINE, *SERVING_METRICS, *(SERVING_GOODPUT if same_targets else ())]


def figures(run: Run, benchmark: BenchmarkResult) -> dict[str, Figure]:
    """The benchmark's comparable figures with their 95 % half-widths (the module's docstring says whence)."""
    energy, errors = energy_figures(benchmark), energy_errors(benchmark)
    found = {key: Figure(value, errors.get(key)) for key, value in energy.items() if value is not None}
    for key in [*LATENCY, *SERVING_METRICS, *SERVING_GOODPUT]:
        value = benchmark.summary.get(key)
        if key in found or value is None:
            continue
        found[key] = Figure(float(value), _half_width(run, benchmark, key))
    return found


def _half_width(run: Run, benchmark: BenchmarkResult, metric: str) -> float | None:
    if metric == "slo_attainment_pct":
        attainment = attainment_of(benchmark.summary)
        return None if attainment is None else max(attainment.pct - attainment.low_pct,
                                                   attainment.high_pct - attainment.pct)  # fmt: skip
    per_round = [r.get(metric) for r in benchmark.rounds]
    per_request = PER_REQUEST.get(metric)
    if per_request is None:
        return figure_half_width(per_round, None)
    records = (stored.record for stored in run.stored.requests(benchmark))
    values_ms = [1000.0 * v for v in (per_request(record) for record in records) if v is not None]
    return figure_half_width(per_round, values_ms)

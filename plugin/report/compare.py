"""A run against a baseline run: every headline metric's change in %, flagged only when it is larger than the
noise the two runs show themselves.

Noise of a metric in one run: with several rounds, the spread of its per-round values ((max - min) / mean); with
one round, for the per-request latencies, twice the standard error of the median over the requests
(1.25 sigma / sqrt(n), relative to the median). A change is flagged when it exceeds the larger of the two runs'
noise; where neither run gives a noise figure (one round, a throughput or an energy), it is not flagged and the
page says the noise is unknown (more ``--rounds`` fix that).

A serving benchmark is compared only at the same offered rate (a sweep point's rate is resolved per run), with its
achieved throughput, TPOT p99 and, where both runs had the same ``--goodput`` targets, SLO attainment, goodput and
J per good request besides the headline.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from plugin.analysis.phase_figures import energy_figures
from plugin.analysis.stats import e2e_s, tpot_s, ttft_s
from plugin.records.requests import RequestRecord
from plugin.records.results import BenchmarkResult
from plugin.records.workload import SERVING
from plugin.report.data import GOODPUT, HEADLINE, LATENCY, SERVING_ENERGY, SERVING_LATENCY, Run, load_run

PER_REQUEST: dict[str, Callable[[RequestRecord], float | None]] = {
    "median_ttft_ms": ttft_s,
    "median_e2el_ms": e2e_s,
    "median_tpot_ms": tpot_s,
}
"""Headline medians whose noise can come from the spread over requests (``plugin.analysis.stats``)."""
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


@dataclass(frozen=True)
class Change:
    benchmark: str
    metric: str
    baseline: float
    current: float
    change_pct: float
    noise_pct: float | None

    @property
    def flagged(self) -> bool:
        return self.noise_pct is not None and abs(self.change_pct) > self.noise_pct


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
        now_figures, then_figures = _figures(benchmark), _figures(base)
        for metric in compared_metrics(benchmark, base):
            now, then = now_figures.get(metric), then_figures.get(metric)
            if now is None or then is None or then == 0:
                continue
            both = (noise_pct(run, benchmark, metric), noise_pct(baseline, base, metric))
            noises = [noise for noise in both if noise is not None]
            changes.append(
                Change(benchmark.name, metric, then, now, 100.0 * (now - then) / then, max(noises) if noises else None)
            )
    return changes


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


def _figures(benchmark: BenchmarkResult) -> dict[str, float | None]:
    keys = [*LATENCY, *SERVING_METRICS, *SERVING_GOODPUT]
    return {**{key: benchmark.summary.get(key) for key in keys}, **energy_figures(benchmark)}


def noise_pct(run: Run, benchmark: BenchmarkResult, metric: str) -> float | None:
    """The metric's own spread in this benchmark, in % (see the module's docstring)."""
    rounds = [float(r[metric]) for r in benchmark.rounds if r.get(metric) is not None]
    if len(rounds) >= 2 and statistics.fmean(rounds):
        return 100.0 * (max(rounds) - min(rounds)) / abs(statistics.fmean(rounds))
    per_request = PER_REQUEST.get(metric)
    if per_request is None:
        return None
    values = [v for v in (per_request(stored.record) for stored in run.stored.requests(benchmark)) if v is not None]
    if len(values) < 3:
        return None
    median = statistics.median(values)
    if median == 0:
        return None
    return 100.0 * 2 * 1.25 * statistics.stdev(values) / math.sqrt(len(values)) / abs(median)

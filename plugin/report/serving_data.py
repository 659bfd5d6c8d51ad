"""The serving benchmarks as the report shows them: a table row each, and points on curves against the offered
rate (a point without an offered rate is placed at its achieved throughput and marked so)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from plugin.analysis.phase_figures import energy_figures
from plugin.load.workload import SWEEP_SYNC
from plugin.records.results import BenchmarkResult
from plugin.records.workload import SERVING
from plugin.report.data import (
    DATASET,
    GOODPUT,
    SERVING_ENERGY,
    SERVING_LATENCY,
    Run,
    _number,
    energy_errors,
    short_window,
)
from plugin.report.formatting import with_pm

CURVE_METRICS = (
    "request_throughput", "median_ttft_ms", "p99_ttft_ms", "median_tpot_ms", "p99_tpot_ms", "slo_attainment_pct",
    "slo_attainment_low_pct", "slo_attainment_high_pct", "goodput_per_gpu_rps", "j_per_good_request", "j_per_request",
)  # fmt: skip
"""What a serving curve (``plugin.report.rate_curves``) can plot against the offered rate."""


def serving_rows(run: Run) -> list[dict[str, Any]]:
    """One row per serving benchmark: its arrivals, what it achieved, its goodput against the targets (where
    given), its energy figures (``energy_figures``) and its dataset's filter counts; ``None``: not measured."""
    rows = []
    for benchmark in run.serving:
        summary = benchmark.summary
        dataset = summary.get("dataset") or {}
        targets = summary.get("goodput_targets_ms")
        figures = energy_figures(benchmark)
        rows.append(
            {
                "name": benchmark.name,
                "architecture": benchmark.architecture,
                "completed": summary.get("completed"),
                "requests": summary.get("requests"),
                "dataset": benchmark.workload.dataset,
                "arrivals": arrivals(benchmark),
                "offered_rate_rps": summary.get("offered_rate_rps"),
                "arrival_rate_rps": summary.get("arrival_rate_rps"),
                **{key: summary.get(key) for key in SERVING_LATENCY},
                "goodput_targets": targets_text(targets) if targets is not None else "none",
                **{key: summary.get(key) for key in GOODPUT},
                **{key: figures.get(key) for key in SERVING_ENERGY},
                "errors": energy_errors(benchmark),
                "short_window": short_window(benchmark),
                "dataset_source": dataset.get("source"),
                **{key: dataset.get(key) for key in DATASET},
                **reuse_cells(summary),
            }
        )
    return rows


def reuse_cells(summary: dict[str, Any]) -> dict[str, Any]:
    """The prefix-reuse table's cells: hit rates, prefill J per prompt token with and without a hit, per turn."""

    def pct(share: float | None) -> str:
        return "-" if share is None else f"{share * 100:.0f} %"

    def shown(value: float | None, unit: str) -> str:
        return with_pm(value, None, unit)

    turns = "; ".join(
        f"{t['turn'] + 1}: {pct(t.get('prefix_hit_rate'))}, {shown(t.get('mean_ttft_ms'), 'ms')}, "
        f"{shown(t.get('energy_per_request_j'), 'J')}"
        for t in summary.get("turns") or []
    )
    dropped = (summary.get("dataset") or {}).get("dropped") or {}
    return {
        "prefix_hit_rate": summary.get("prefix_hit_rate"),
        "metrics_hit_rate": (summary.get("prefix_cache") or {}).get("hit_rate"),
        "prefill_j_per_prompt_token_cache_hit": summary.get("prefill_j_per_prompt_token_cache_hit"),
        "prefill_j_per_prompt_token_no_cache_hit": summary.get("prefill_j_per_prompt_token_no_cache_hit"),
        "turns_text": turns or None,
        "dropped_text": ", ".join(f"{n} {reason.replace('_', ' ')}" for reason, n in dropped.items()) or None,
    }


@dataclass(frozen=True)
class ServingPoint:
    """One serving benchmark on a curve against the offered rate. ``x_rps`` is its offered rate, or its achieved
    throughput where it had none (all at once, a sweep's closed-loop ends): then ``offered`` is false."""

    name: str
    dataset: str
    group: str
    """The curve it belongs to: its topology (and DVFS setting, if any)."""
    architecture: str
    x_rps: float
    offered: bool
    has_targets: bool
    values: dict[str, float]
    """The ``CURVE_METRICS`` it has; a missing figure is absent, never 0."""
    errors: dict[str, float] = field(default_factory=dict)
    """± 95 % half-widths of its energy figures, where known."""
    short_window: bool = False
    """Its energy rests on fewer than ``MIN_SENSOR_UPDATES`` sensor updates: drawn flagged."""


def serving_points(benchmarks: tuple[BenchmarkResult, ...]) -> list[ServingPoint]:
    """Every serving benchmark that can be placed on the rate axis (by offered rate, else achieved throughput),
    with the figures it has."""
    points = []
    for benchmark in benchmarks:
        if benchmark.phase != SERVING:
            continue
        summary = benchmark.summary
        figures: dict[str, Any] = {**{key: summary.get(key) for key in CURVE_METRICS}, **energy_figures(benchmark)}
        values = {key: float(figures[key]) for key in CURVE_METRICS if _number(figures.get(key))}
        offered = summary.get("offered_rate_rps")
        offered = float(offered) if _number(offered) and offered > 0 else None
        x_rps = offered if offered is not None else values.get("request_throughput")
        if x_rps is None or x_rps <= 0:
            continue  # nothing places it on the rate axis
        setting = (benchmark.dvfs or {}).get("setting")
        points.append(
            ServingPoint(
                name=benchmark.name,
                dataset=str(benchmark.workload.dataset),
                group=f"{benchmark.topology_name} {setting}" if setting else benchmark.topology_name,
                architecture=benchmark.architecture,
                x_rps=x_rps,
                offered=offered is not None,
                has_targets="goodput_targets_ms" in summary,
                values=values,
                errors={key: error for key, error in energy_errors(benchmark).items() if key in values},
                short_window=short_window(benchmark) is not None,
            )
        )
    return points


def arrivals(benchmark: BenchmarkResult) -> str:
    """How its requests arrived, in words: ``2 req/s``, ``all at once``, ``sweep sync (closed loop)``."""
    workload = benchmark.workload
    salted = ", cache defeated" if workload.cache_defeated else ""
    if workload.replay:
        scale = (benchmark.summary.get("dataset") or {}).get("trace_time_scale")
        return f"trace timestamps{'' if scale in (None, 1.0) else f' x {scale:g}'}{salted}"
    if workload.ramp_up is not None:
        strategy, start_rps, end_rps = workload.ramp_up
        return f"{strategy} ramp {start_rps:g}-{end_rps:g} req/s{salted}"
    if workload.sweep is not None:
        closed = " (closed loop)" if workload.sweep == SWEEP_SYNC else ""
        return f"sweep {workload.sweep}{closed}"
    if workload.request_rate is None:
        return "all at once"
    burst = f", burstiness {workload.burstiness:g}" if workload.burstiness not in (None, 1.0) else ""
    return f"{workload.request_rate:g} req/s{burst}{salted}"


def targets_text(targets_ms: dict[str, float]) -> str:
    """``ttft ≤ 500 ms, tpot ≤ 50 ms``, or ``none`` when no target was given (every successful request is good)."""
    return ", ".join(f"{key} ≤ {value:g} ms" for key, value in targets_ms.items()) or "none"

"""A run folder read into what the report shows: the typed results (``plugin.results.store.load_run``), one row
per benchmark with the figures that mean something for its phase, the serving benchmarks' rows and curve points,
each benchmark's requests with the per-request metrics of ``plugin.analysis.stats`` (read from its JSONL file), and
each GPU's power samples (read from its CSV only when a chart needs them)."""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeGuard

import pandas as pd

from plugin.analysis.benchmark import energy_figures
from plugin.analysis.stats import e2e_s, tbt_gaps_s, tpot_s, ttft_s
from plugin.load.workload import SERVING, SWEEP_SYNC, workload_id
from plugin.results import store
from plugin.results.schema import BenchmarkResult

LATENCY = {
    "median_ttft_ms": "TTFT p50 (ms)",
    "p99_ttft_ms": "TTFT p99 (ms)",
    "median_tpot_ms": "TPOT p50 (ms)",
    "median_e2el_ms": "E2E p50 (ms)",
    "output_throughput": "output tok/s",
    "median_kv_handoff_ms": "KV hand-off p50 (ms)",
}
ENERGY = {
    "j_per_prompt_token": "J / prompt token",
    "j_per_output_token": "J / output token",
    "j_per_request": "J / request",
    "prefill_j_per_prompt_token": "prefill share: J / prompt token",
    "decode_j_per_output_token": "decode share: J / output token",
}
"""Energy figures; a benchmark has only those of its phase (``energy_figures``)."""
HEADLINE = {**LATENCY, **ENERGY}
SERVING_LATENCY = {
    "request_throughput": "achieved req/s",
    "median_ttft_ms": "TTFT p50 (ms)",
    "p99_ttft_ms": "TTFT p99 (ms)",
    "median_tpot_ms": "TPOT p50 (ms)",
    "p99_tpot_ms": "TPOT p99 (ms)",
    "output_throughput": "output tok/s",
}
GOODPUT = {
    "slo_attainment_pct": "SLO attainment (%)",
    "good_requests": "good requests",
    "goodput_rps": "goodput (good req/s)",
}
SERVING_ENERGY = {
    "j_per_request": "J / request",
    "j_per_good_request": "J / good request",
    "prefill_j_per_prompt_token": "prefill share: J / prompt token",
    "decode_j_per_output_token": "decode share: J / output token",
}
DATASET = {
    "requests_drawn": "pairs drawn",
    "skipped_by_length": "skipped by length",
    "too_long_for_model": "too long for the model",
    "mean_prompt_tokens": "mean prompt tokens",
    "mean_output_tokens": "mean output tokens",
}
"""The dataset's filter counts and mean lengths, as the serving plan records them (``plugin.load.plan``)."""
SERVING_TABLES = (
    {
        "dataset": "dataset",
        "arrivals": "arrivals",
        "offered_rate_rps": "offered req/s",
        **SERVING_LATENCY,
        "goodput_targets": "goodput targets",
        **GOODPUT,
    },
    {"dataset": "dataset", "arrivals": "arrivals", **SERVING_ENERGY, "dataset_source": "dataset source", **DATASET},
)
"""The serving tables' columns after the benchmark's name, architecture and completed requests: load, latency
and goodput; then energy and the dataset's filter counts (one table would not fit a page's width)."""
CURVE_METRICS = (
    "request_throughput", "median_ttft_ms", "p99_ttft_ms", "median_tpot_ms", "p99_tpot_ms", "slo_attainment_pct",
    "j_per_good_request", "j_per_request",
)  # fmt: skip
"""What a serving curve can plot against the offered rate."""
REQUEST_COLUMNS = ["round", "send_s", "first_token_s", "end_s", "ttft_ms", "tpot_ms", "e2e_ms", "tbt_ms", "ok"]


@dataclass(frozen=True)
class Run:
    """A stored run and what the report derives from it."""

    stored: store.StoredRun

    @property
    def folder(self) -> Path:
        return self.stored.folder

    @property
    def header(self) -> dict[str, Any]:
        return self.stored.header

    @property
    def benchmarks(self) -> tuple[BenchmarkResult, ...]:
        return self.stored.benchmarks

    @property
    def run_id(self) -> str:
        return str(self.header.get("run_id", self.folder.name))

    @property
    def status(self) -> str:
        return str(self.header.get("status", "unknown"))

    @property
    def model(self) -> str:
        for source in (self.header.get("server"), self.header.get("disaggregated")):
            if source and source.get("model"):
                return str(source["model"])
        return "unknown"

    @property
    def devices(self) -> str:
        environment = self.header.get("environment") or {}
        gpus = environment.get("gpus") or []
        if gpus:
            return ", ".join(f"{gpu['index']}: {gpu['name']}" for gpu in gpus)
        return f"CPU: {environment.get('cpu') or 'unknown'} ({environment.get('cpu_count') or '?'} cores)"

    @property
    def power(self) -> dict[str, Any]:
        """The run's sampler (``plugin.analysis.power_entry.session_power``)."""
        return dict(self.header.get("power") or {})

    @property
    def power_measured(self) -> bool:
        return any(benchmark.power.measured for benchmark in self.benchmarks) or (
            not self.power.get("unmeasured_reason") and bool(self.power.get("gpus"))
        )

    @property
    def power_reason(self) -> str:
        """Why there is no power data, as a sentence that starts with "power not measured"."""
        reasons = [b.power.unmeasured_reason for b in self.benchmarks if b.power.unmeasured_reason]
        reason = str(self.power.get("unmeasured_reason") or (reasons[0] if reasons else ""))
        if reason.startswith("power not measured"):
            return reason
        return f"power not measured: {reason or 'no power sampler ran in this run'}"

    @property
    def serving(self) -> tuple[BenchmarkResult, ...]:
        return tuple(benchmark for benchmark in self.benchmarks if benchmark.phase == SERVING)

    @property
    def datasets(self) -> list[str]:
        """The serving benchmarks' datasets, in the order they ran."""
        return list(dict.fromkeys(str(benchmark.workload.dataset) for benchmark in self.serving))

    def rows(self) -> list[dict[str, Any]]:
        """One row per benchmark: what ran, the latency headline and its phase's energy figures only. A serving
        workload's lengths come from its dataset, so it has no ``input_len``/``output_len`` but its ``dataset``."""
        return [
            {
                "id": benchmark.id,
                "name": benchmark.name,
                "workload_id": f"{benchmark.phase} {workload_id(benchmark.workload)}",
                "architecture": benchmark.architecture,
                "phase": benchmark.phase,
                "dataset": benchmark.workload.dataset,
                "input_len": None if benchmark.phase == SERVING else benchmark.workload.input_len,
                "output_len": None if benchmark.phase == SERVING else benchmark.workload.output_len,
                "concurrency": benchmark.workload.concurrency,
                "completed": benchmark.summary.get("completed"),
                "requests": benchmark.summary.get("requests"),
                **{key: benchmark.summary.get(key) for key in LATENCY},
                **energy_figures(benchmark),
            }
            for benchmark in self.benchmarks
        ]

    def table(self) -> pd.DataFrame:
        """``rows`` as a table; a figure a benchmark's phase does not have is NaN."""
        columns = ["id", "name", "workload_id", "architecture", "phase", "dataset", "input_len", "output_len"]
        return pd.DataFrame(self.rows(), columns=[*columns, "concurrency", "completed", "requests", *HEADLINE])

    def serving_rows(self) -> list[dict[str, Any]]:
        """One row per serving benchmark: its arrivals, what it achieved, its goodput against the targets (where
        given), its energy figures (``energy_figures``) and its dataset's filter counts; ``None``: not measured."""
        rows = []
        for benchmark in self.serving:
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
                    **{key: summary.get(key) for key in SERVING_LATENCY},
                    "goodput_targets": targets_text(targets) if targets is not None else "none",
                    **{key: summary.get(key) for key in GOODPUT},
                    **{key: figures.get(key) for key in SERVING_ENERGY},
                    "dataset_source": dataset.get("source"),
                    **{key: dataset.get(key) for key in DATASET},
                }
            )
        return rows

    def requests(self, benchmark: BenchmarkResult) -> pd.DataFrame:
        """One benchmark's measured requests with TTFT, TPOT, E2E and the gaps between tokens (TBT) in ms, as
        ``plugin.analysis.stats`` defines them (missing where a request failed or had no token)."""
        rows = []
        for stored in self.stored.requests(benchmark):
            record = stored.record
            rows.append(
                {
                    "round": stored.round,
                    "send_s": record.send_s,
                    "first_token_s": record.first_token_s,
                    "end_s": record.end_s,
                    "ttft_ms": _ms(ttft_s(record)),
                    "tpot_ms": _ms(tpot_s(record)),
                    "e2e_ms": _ms(e2e_s(record)),
                    "tbt_ms": [gap * 1000.0 for gap in tbt_gaps_s(record)] if record.ok else [],
                    "ok": record.ok,
                }
            )
        return pd.DataFrame(rows, columns=REQUEST_COLUMNS)

    def samples(self, gpu: str, start_s: float, end_s: float) -> pd.DataFrame | None:
        """One GPU's power samples inside a window, or ``None`` when the run kept none."""
        name = (self.power.get("samples_csv") or {}).get(gpu)
        path = self.folder / name if name else None
        if path is None or not path.is_file():
            return None
        samples = pd.read_csv(path)
        return samples[(samples["t_s"] >= start_s) & (samples["t_s"] <= end_s)]


@dataclass(frozen=True)
class ServingPoint:
    """One serving benchmark on a curve against the offered rate. ``x_rps`` is its offered rate, or its achieved
    throughput where it had none (all at once, a sweep's closed-loop ends): then ``offered`` is false."""

    name: str
    dataset: str
    group: str
    """The curve it belongs to: its architecture (and DVFS setting, if any)."""
    architecture: str
    x_rps: float
    offered: bool
    has_targets: bool
    values: dict[str, float]
    """The ``CURVE_METRICS`` it has; a missing figure is absent, never 0."""


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
                group=f"{benchmark.architecture} {setting}" if setting else benchmark.architecture,
                architecture=benchmark.architecture,
                x_rps=x_rps,
                offered=offered is not None,
                has_targets="goodput_targets_ms" in summary,
                values=values,
            )
        )
    return points


def arrivals(benchmark: BenchmarkResult) -> str:
    """How its requests arrived, in words: ``2 req/s``, ``all at once``, ``sweep sync (closed loop)``."""
    workload = benchmark.workload
    if workload.sweep is not None:
        closed = " (closed loop)" if workload.sweep == SWEEP_SYNC else ""
        return f"sweep {workload.sweep}{closed}"
    if workload.request_rate is None:
        return "all at once"
    burst = f", burstiness {workload.burstiness:g}" if workload.burstiness not in (None, 1.0) else ""
    return f"{workload.request_rate:g} req/s{burst}"


def targets_text(targets_ms: dict[str, float]) -> str:
    """``ttft ≤ 500 ms, tpot ≤ 50 ms``, or ``none`` when no target was given (every successful request is good)."""
    return ", ".join(f"{key} ≤ {value:g} ms" for key, value in targets_ms.items()) or "none"


def _number(value: Any) -> TypeGuard[float]:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _ms(value_s: float | None) -> float | None:
    return None if value_s is None else value_s * 1000.0


def load_run(folder: Path) -> Run:
    """``ValueError`` for a run of another schema version (``plugin.results.store.load_run``)."""
    return Run(store.load_run(folder))

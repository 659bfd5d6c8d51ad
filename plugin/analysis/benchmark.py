"""A measurement made typed: the summary over every round (``stats``), each round's summary, and power per round
and in total (``power_entry``). The one place a benchmark's results are assembled."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from plugin.analysis.power_entry import benchmark_power, window_power
from plugin.analysis.stats import summarize
from plugin.load.workload import Workload
from plugin.results.schema import BenchmarkResult
from plugin.runner import Measurement
from plugin.serving import prometheus

ENERGY_KEYS = ("energy_j", "energy_per_prompt_token_j", "energy_per_output_token_j", "energy_per_request_j")


def benchmark_result(
    node_id: str,
    name: str,
    architecture: str,
    workload: Workload,
    measurement: Measurement,
    gpu_roles: Mapping[int, str],
    dvfs: dict[str, Any] | None,
    requests_file: str,
) -> BenchmarkResult:
    windows = [window_power(r.index, r.window, r.records, gpu_roles) for r in measurement.rounds]
    first = measurement.rounds[0].window if measurement.rounds else None
    backend = first.backend if first else "none"
    reason = first.unmeasured_reason if first else "no round ran"
    power = benchmark_power(windows, backend, reason, gpu_roles)
    summary = summarize(measurement.records)
    summary["prefix_cache"] = prometheus.prefix_cache_delta(measurement.metrics_before, measurement.metrics_after)
    summary.update({key: getattr(power, key) for key in ENERGY_KEYS})
    return BenchmarkResult(
        id=node_id,
        name=name,
        architecture=architecture,
        phase=workload.phase,
        workload=workload,
        summary=summary,
        rounds=tuple(
            {**summarize(r.records), "energy_j": window.energy_j}
            for r, window in zip(measurement.rounds, windows, strict=True)
        ),
        power=power,
        dvfs=dvfs,
        requests_file=requests_file,
    )

"""A measurement made typed: the summary over every round (``stats``), each round's summary, power per round and
in total (``power_entry``), and goodput against the latency targets. The one place a benchmark's results are
assembled. In a steady-state round only the requests due inside the schedule's measured stretch are counted."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from plugin.analysis.goodput import goodput_summary
from plugin.analysis.power_entry import benchmark_power, window_power
from plugin.analysis.server_phases import server_phase_times
from plugin.analysis.stats import summarize
from plugin.analysis.uncertainty import with_uncertainty
from plugin.load.client import RequestRecord
from plugin.load.workload import Workload
from plugin.option_values import GoodputTargets
from plugin.results.schema import BenchmarkResult
from plugin.runner import Measurement, Round
from plugin.serving import prometheus
from plugin.serving.topology import DISAGGREGATED, Topology

ENERGY_KEYS = ("energy_j", "energy_per_prompt_token_j", "energy_per_output_token_j", "energy_per_request_j")


def benchmark_result(
    node_id: str,
    name: str,
    topology: Topology,
    workload: Workload,
    measurement: Measurement,
    gpu_roles: Mapping[int, str],
    dvfs: dict[str, Any] | None,
    requests_file: str,
    gpu_budget: int = 1,
    goodput: GoodputTargets | None = None,
    offered_rate_rps: float | None = None,
) -> BenchmarkResult:
    """``gpu_roles`` covers the whole budget (``unused`` GPUs too), so every window charges all of it; the per-GPU
    figures divide by ``gpu_budget``."""
    windows = [window_power(r.index, r.window, r.records, gpu_roles, r.steady_state) for r in measurement.rounds]
    first = measurement.rounds[0].window if measurement.rounds else None
    backend = first.backend if first else "none"
    reason = first.unmeasured_reason if first else "no round ran"
    power = benchmark_power(windows, backend, reason, gpu_roles)
    counted = [record for r in measurement.rounds for record in counted_records(r)]
    summary = summarize(counted)
    summary["prefix_cache"] = prometheus.prefix_cache_delta(measurement.metrics_before, measurement.metrics_after)
    source = "decode instance only" if topology.kind == DISAGGREGATED else "server"  # endpoint.metrics_url
    summary["server_phases"] = server_phase_times(measurement.metrics_before, measurement.metrics_after, source)
    summary.update({key: getattr(power, key) for key in ENERGY_KEYS})
    if offered_rate_rps is not None:
        summary["offered_rate_rps"] = offered_rate_rps
    if goodput is not None:
        # The throughput's own duration, so goodput (good requests/s) can never exceed request_throughput.
        summary.update(goodput_summary(counted, goodput, summary["duration_s"], power.energy_j))
    summary.update(per_gpu(summary, power.energy_j, gpu_budget))
    rounds = measurement.rounds
    power = with_uncertainty(power, [r.window for r in rounds], [r.repeats for r in rounds], summary)
    return BenchmarkResult(
        id=node_id,
        name=name,
        architecture=topology.kind,
        phase=workload.phase,
        workload=workload,
        summary=summary,
        rounds=tuple(
            {**summarize(counted_records(r)), "energy_j": window.energy_j, "repeats": r.repeats}
            for r, window in zip(measurement.rounds, windows, strict=True)
        ),
        power=power,
        dvfs=dvfs,
        requests_file=requests_file,
        topology=topology.name,
        gpu_budget=gpu_budget,
    )


def per_gpu(summary: Mapping[str, Any], energy_j: float | None, gpu_budget: int) -> dict[str, float | None]:
    """Throughput and goodput per GPU of the budget, and output tokens per joule of the whole budget."""

    def per(key: str) -> float | None:
        value = summary.get(key)
        return None if value is None else value / gpu_budget

    tokens = summary.get("total_output_tokens")
    figures = {
        "request_throughput_per_gpu_rps": per("request_throughput"),
        "output_throughput_per_gpu": per("output_throughput"),
        "output_tokens_per_j": tokens / energy_j if tokens is not None and energy_j else None,
    }
    if "goodput_rps" in summary:
        figures["goodput_per_gpu_rps"] = per("goodput_rps")
    return figures


def counted_records(one_round: Round) -> list[RequestRecord]:
    """Every request of a round, or in steady state those due inside its schedule's measured stretch."""
    if one_round.counted_s is None:
        return list(one_round.records)
    start_s, end_s = one_round.counted_s
    return [record for record in one_round.records if start_s <= record.due_s < end_s]


def energy_figures(benchmark: BenchmarkResult) -> dict[str, float | None]:
    """The energy figures that mean something for the benchmark's phase: the window's energy over the prompt
    tokens of a prefill benchmark, over the output tokens of a decode one, per request end to end and serving,
    plus, where both phases ran, the phase split's prefill J per prompt token and decode J per output token. The window
    energy over the other phase's tokens is not a figure of that phase, so it is left out."""
    power = benchmark.power
    if benchmark.phase == "prefill":
        return {"j_per_prompt_token": power.energy_per_prompt_token_j}
    if benchmark.phase == "decode":
        return {"j_per_output_token": power.energy_per_output_token_j}
    figures = {"j_per_request": power.energy_per_request_j}
    phases = power.phases
    if phases is not None and phases.prefill_s > 0 and phases.decode_s > 0:
        figures["prefill_j_per_prompt_token"] = phases.j_per_prompt_token
        figures["decode_j_per_output_token"] = phases.j_per_output_token
    if "energy_per_good_request_j" in benchmark.summary:  # --goodput targets were given
        figures["j_per_good_request"] = benchmark.summary["energy_per_good_request_j"]
    return figures

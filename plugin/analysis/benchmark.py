"""A measurement made typed: the summary over every round, each round's summary, power per round and in total
(``power_entry``), and goodput against the latency targets. The one place a benchmark's results are assembled,
by one accounting (``plugin.analysis.accounting``): latency and SLO attainment over the counted requests,
throughput and every energy figure over the work done inside the power windows, for the benchmark and for each
round alike."""

from __future__ import annotations

import functools
import operator
from collections.abc import Mapping, Sequence
from typing import Any

from plugin.analysis.accounting import (
    Work,
    arrival_rate_rps,
    counted,
    energy_per_work,
    rates,
    window_keys,
    work_inside,
)
from plugin.analysis.goodput import attainment_summary, is_good
from plugin.analysis.power_entry import benchmark_power, window_power
from plugin.analysis.prefix_reuse import per_turn, prefill_by_cache_hit, reuse_figures
from plugin.analysis.ramp import ramp_stages
from plugin.analysis.server_phases import server_phase_times
from plugin.analysis.stats import summarize
from plugin.analysis.turn_energy import RequestEnergy, request_energies
from plugin.analysis.uncertainty import with_uncertainty
from plugin.load.client import RequestRecord
from plugin.load.workload import SERVING, Workload
from plugin.option_values import GoodputTargets
from plugin.results.schema import BenchmarkResult
from plugin.runner import Measurement, Round
from plugin.serving import prometheus
from plugin.serving.topology import DISAGGREGATED, Topology


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
    rounds = measurement.rounds
    source = "decode instance only" if topology.kind == DISAGGREGATED else "server"  # endpoint.metrics_url
    server_phases = server_phase_times(measurement.metrics_before, measurement.metrics_after, source)
    prefill_s = _server_prefill_s(server_phases) if topology.kind != DISAGGREGATED else None
    windows = [window_power(r.index, r.window, r.records, gpu_roles, prefill_s) for r in rounds]
    works = [round_work(r, goodput) for r in rounds]
    total = functools.reduce(operator.add, works) if works else Work(0.0, 0, 0, 0)
    first = rounds[0].window if rounds else None
    backend = first.backend if first else "none"
    reason = first.unmeasured_reason if first else "no round ran"
    notes = [] if topology.kind == DISAGGREGATED else [_queue_note(prefill_s)]
    power = benchmark_power(windows, backend, reason, gpu_roles, total, notes)
    serving = workload.phase == SERVING
    round_summaries = tuple(
        {**_figures([r], work, window.energy_j, goodput, gpu_budget, serving), "repeats": r.repeats}
        for r, work, window in zip(rounds, works, windows, strict=True)
    )
    summary = _figures(rounds, total, power.energy_j, goodput, gpu_budget, serving)
    if serving:  # J per turn, prefill J per prompt token with and without a cache hit, ramp stages
        per_round = counted_energies(rounds, gpu_roles, prefill_s)
        records = [record for round_records, _ in per_round for record in round_records]
        energies = [share for _, shares in per_round for share in shares]
        summary["turns"] = per_turn(records, energies)
        summary.update(prefill_by_cache_hit(records, energies))
        if workload.ramp_up is not None:
            summary["ramp_stages"] = ramp_stages(workload.ramp_up, per_round)
    summary["prefix_cache"] = prometheus.prefix_cache_delta(measurement.metrics_before, measurement.metrics_after)
    summary["server_phases"] = server_phases
    summary["window_note"] = _window_note(rounds, total)
    if offered_rate_rps is not None:
        summary["offered_rate_rps"] = offered_rate_rps
    power = with_uncertainty(power, [r.window for r in rounds], [r.repeats for r in rounds], summary, round_summaries)
    return BenchmarkResult(
        id=node_id,
        name=name,
        architecture=topology.kind,
        phase=workload.phase,
        workload=workload,
        summary=summary,
        rounds=round_summaries,
        power=power,
        dvfs=dvfs,
        requests_file=requests_file,
        topology=topology.name,
        gpu_budget=gpu_budget,
    )


def round_work(one_round: Round, goodput: GoodputTargets | None) -> Work:
    """The work done inside the round's power window (with targets: which of it was good)."""
    good = None if goodput is None else [record for record in one_round.records if is_good(record, goodput)]
    return work_inside(one_round.records, one_round.window.start_s, one_round.window.end_s, good)


def counted_records(one_round: Round) -> list[RequestRecord]:
    """Every request of a round, or in steady state those due inside its schedule's measured stretch."""
    return counted(one_round.records, one_round.counted_s)  # type: ignore[return-value]


def counted_energies(
    rounds: Sequence[Round], gpu_roles: Mapping[int, str], prefill_s: float | None
) -> list[tuple[list[RequestRecord], list[RequestEnergy | None]]]:
    """Per round, its counted requests and each one's share of the round's energy (``turn_energy``)."""
    result = []
    for one_round in rounds:
        kept = {id(record) for record in counted_records(one_round)}
        shares = request_energies(one_round.window, one_round.records, gpu_roles, prefill_s)
        pairs = [(r, e) for r, e in zip(one_round.records, shares, strict=True) if id(r) in kept]
        result.append(([r for r, _ in pairs], [e for _, e in pairs]))
    return result


def _figures(
    rounds: Sequence[Round],
    work: Work,
    energy_j: float | None,
    goodput: GoodputTargets | None,
    gpu_budget: int,
    serving: bool,
) -> dict[str, Any]:
    """The summary of ``rounds`` (one round's, or all of them): latency and attainment over their counted
    requests, throughput and energy over ``work``, their work inside the windows. The same for a round and for
    the benchmark, so the rounds' spread is the spread of the benchmark's own figures."""
    per_round = [counted_records(r) for r in rounds]
    records = [record for records in per_round for record in records]
    summary = summarize(records)
    summary.update(window_keys(work))
    summary.update(rates(work))
    if serving:
        summary["arrival_rate_rps"] = arrival_rate_rps(
            ([record.due_s for record in records], r.counted_s) for r, records in zip(rounds, per_round, strict=True)
        )
    summary.update(energy_per_work(energy_j, work))
    summary.update(reuse_figures(records))
    if goodput is not None:
        summary.update(attainment_summary(records, goodput))
        summary["goodput_note"] = _goodput_note(records, work)
    summary.update(per_gpu(summary, gpu_budget))
    return summary


def per_gpu(summary: Mapping[str, Any], gpu_budget: int) -> dict[str, float | None]:
    """Throughput and goodput per GPU of the budget."""

    def per(key: str) -> float | None:
        value = summary.get(key)
        return None if value is None else value / gpu_budget

    figures = {
        "request_throughput_per_gpu_rps": per("request_throughput"),
        "output_throughput_per_gpu": per("output_throughput"),
    }
    if "goodput_rps" in summary:
        figures["goodput_per_gpu_rps"] = per("goodput_rps")
    return figures


def _goodput_note(records: Sequence[RequestRecord], work: Work) -> str | None:
    if not records:
        return "no request was counted: no SLO attainment"
    if not work.good_completed:
        return "no good request completed inside the power window: no goodput, energy per good request undefined"
    return None


def _window_note(rounds: Sequence[Round], work: Work) -> str | None:
    """Why a steady-state benchmark has no figure per request: no request completed inside its windows."""
    if work.completed or not any(r.steady_state for r in rounds):
        return None
    return ("no request completed inside a power window: each request took longer than the window, so it has no "
            "request throughput and no figure per request (make --duration-s minus --warmup-s longer than a "
            "request's E2E; tokens per J and J per token stand)")  # fmt: skip


def _server_prefill_s(server_phases: Mapping[str, Any]) -> float | None:
    """The server's mean prefill time (scheduled to first token), the part of a TTFT spent computing."""
    mean_ms = (server_phases.get("prefill") or {}).get("mean_ms")
    return None if mean_ms is None else mean_ms / 1000.0


def _queue_note(prefill_s: float | None) -> str:
    if prefill_s is None:
        return ("the server gave no prefill time (vllm:request_prefill_time_seconds): a request's wait in its queue "
                "is charged as prefill")  # fmt: skip
    return (f"a request is in prefill for the server's mean prefill time ({prefill_s * 1000:.1f} ms) before its "
            "first token; its wait in the queue before that is in no phase")  # fmt: skip


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

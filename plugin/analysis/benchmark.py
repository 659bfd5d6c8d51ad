"""A measurement made typed: the summary over every round, each round's summary, power per round and in total
(``power_entry``), and goodput against the latency targets. The one place a benchmark's results are assembled,
by one accounting (``plugin.analysis.accounting``): latency and SLO attainment over the counted requests,
throughput and every energy figure over the work done inside the power windows, for the benchmark and for each
round alike. The per-GPU figures are ``plugin.analysis.per_gpu``'s; which energy figures each phase shows is
``plugin.analysis.phase_figures``'."""

from __future__ import annotations

import functools
import operator
from collections.abc import Mapping, Sequence
from typing import Any

from plugin.analysis.accounting import (
    Work,
    arrival_rate_rps,
    counted_records,
    energy_per_work,
    goodput_note,
    rates,
    round_work,
    window_keys,
    window_note,
)
from plugin.analysis.cost import COST_KEY, benchmark_cost, budget_roles, gpu_time
from plugin.analysis.goodput import attainment_summary
from plugin.analysis.kv_handoff import kv_handoff
from plugin.analysis.per_gpu import per_gpu
from plugin.analysis.power_entry import benchmark_power, window_power
from plugin.analysis.prefix_reuse import per_turn, prefill_by_cache_hit, reuse_figures
from plugin.analysis.ramp import ramp_stages
from plugin.analysis.server_phases import server_phase_times, server_prefill_s
from plugin.analysis.stats import summarize
from plugin.analysis.turn_energy import counted_energies
from plugin.analysis.uncertainty import with_uncertainty
from plugin.measurement import Measurement, Round
from plugin.option_values import GoodputTargets, Prices
from plugin.records.results import BenchmarkResult
from plugin.records.topology import DISAGGREGATED, Topology
from plugin.records.workload import SERVING, Workload
from plugin.serving import prometheus


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
    prices: Prices | None = None,
    excluded_gpus: Sequence[int] = (),
) -> BenchmarkResult:
    """``gpu_roles`` covers the whole budget (``unused`` GPUs too), so every window charges all of it; the per-GPU
    figures divide by ``gpu_budget``. ``prices`` (the user's) add the cost and carbon figures (``cost``).
    ``excluded_gpus``: the power source's GPUs the windows did not charge (not the budget's), kept for the record."""
    rounds = measurement.rounds
    source = "decode instance only" if topology.kind == DISAGGREGATED else "server"  # endpoint.metrics_url
    server_phases = server_phase_times(measurement.metrics_before, measurement.metrics_after, source)
    prefill_s = server_prefill_s(server_phases) if topology.kind != DISAGGREGATED else None
    windows = [window_power(r.index, r.window, r.records, gpu_roles, prefill_s) for r in rounds]
    works = [round_work(r, goodput) for r in rounds]
    total = functools.reduce(operator.add, works) if works else Work(0.0, 0, 0, 0)
    first = rounds[0].window if rounds else None
    backend = first.backend if first else "none"
    reason = first.unmeasured_reason if first else "no round ran"
    notes = [] if topology.kind == DISAGGREGATED else [_queue_note(prefill_s)]
    power = benchmark_power(windows, backend, reason, gpu_roles, total, notes, excluded_gpus)
    serving = workload.phase == SERVING
    round_summaries = tuple(
        {**_figures([r], work, window.energy_j, goodput, gpu_budget, serving), "repeats": r.repeats}
        for r, work, window in zip(rounds, works, windows, strict=True)
    )
    summary = _figures(rounds, total, power.energy_j, goodput, gpu_budget, serving)
    if serving:  # prefill J per prompt token with and without a cache hit
        per_round = counted_energies(rounds, gpu_roles, prefill_s)
        records = [record for round_records, _ in per_round for record in round_records]
        summary.update(prefill_by_cache_hit(records, [share for _, shares in per_round for share in shares]))
    if topology.kind == DISAGGREGATED:
        summary["kv_handoff"] = kv_handoff(record for r in rounds for record in counted_records(r))
    summary["prefix_cache"] = prometheus.prefix_cache_delta(measurement.metrics_before, measurement.metrics_after)
    summary["server_phases"] = server_phases
    summary["window_note"] = window_note(rounds, total)
    if offered_rate_rps is not None:
        summary["offered_rate_rps"] = offered_rate_rps
    power = with_uncertainty(power, [r.window for r in rounds], [r.repeats for r in rounds], summary, round_summaries)
    if serving:  # J per turn and per ramp stage, each with its ± (so after the energy's)
        summary["turns"] = per_turn(per_round, power)
        if workload.ramp_up is not None:
            summary["ramp_stages"] = ramp_stages(workload.ramp_up, per_round, power)
    if prices is not None and prices.given:
        roles = budget_roles(gpu_roles, gpu_budget)
        times = [gpu_time(r.records, r.window.start_s, r.window.end_s, roles, prefill_s) for r in rounds]
        summary[COST_KEY] = benchmark_cost(prices, power, works, times)
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
        summary["goodput_note"] = goodput_note(records, work)
    summary.update(per_gpu(summary, gpu_budget))
    return summary


def _queue_note(prefill_s: float | None) -> str:
    if prefill_s is None:
        return ("the server gave no prefill time (vllm:request_prefill_time_seconds): a request's wait in its queue "
                "is charged as prefill")  # fmt: skip
    return (f"a request is in prefill for the server's mean prefill time ({prefill_s * 1000:.1f} ms) before its "
            "first token; its wait in the queue before that is in no phase")  # fmt: skip

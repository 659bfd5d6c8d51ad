"""A ramp-up benchmark (``--ramp-up-strategy``) stage by stage: the round's requests cut into ``RAMP_STAGES`` runs
of equal count in schedule order, so each stage is a stretch of nominal rates, reported with the load it offered,
its latency (``plugin.analysis.stats``) and its requests' mean share of the measured energy
(``plugin.analysis.turn_energy``) with its ± (``plugin.analysis.uncertainty.mean_share_pm``). Pure."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from plugin.analysis.accounting import arrival_rate_rps
from plugin.analysis.stats import summarize
from plugin.analysis.turn_energy import RequestEnergy, mean_j
from plugin.analysis.uncertainty import mean_share_pm
from plugin.load.arrivals import ramp_up_rate
from plugin.records.requests import RequestRecord
from plugin.records.results import BenchmarkPower

RAMP_STAGES = 4
STAGE_LATENCY = ("median_ttft_ms", "p99_ttft_ms", "median_tpot_ms", "p99_tpot_ms", "completed", "failed")


def ramp_stages(
    ramp: tuple[str, float, float],
    rounds: Sequence[tuple[Sequence[RequestRecord], Sequence[RequestEnergy | None]]],
    power: BenchmarkPower,
) -> list[dict[str, Any]]:
    """Per stage: its nominal rates (first and last request's), requests, the arrival rate its due times offered
    (over every round), latency and mean J per request with its ± and the parts that holds; ``rounds`` holds each
    round's counted records and their energy shares, parallel."""
    strategy, start_rps, end_rps = ramp
    count = 1 + max((r.index for records, _ in rounds for r in records), default=-1)
    if count == 0:
        return []
    stages = []
    for stage in range(min(RAMP_STAGES, count)):
        first, last = stage * count // RAMP_STAGES, (stage + 1) * count // RAMP_STAGES - 1
        if last < first:
            continue
        chosen = [
            [(r, e) for r, e in zip(records, energies, strict=True) if first <= r.index <= last]
            for records, energies in rounds
        ]
        records = [r for pairs in chosen for r, _ in pairs]
        latency = summarize(records)
        energy_j = mean_j([e for pairs in chosen for _, e in pairs])
        pm_j, sources = mean_share_pm(energy_j, [mean_j([e for _, e in pairs]) for pairs in chosen], power)
        stages.append(
            {
                "stage": stage,
                "from_rps": ramp_up_rate(strategy, start_rps, end_rps, first, count),
                "to_rps": ramp_up_rate(strategy, start_rps, end_rps, last, count),
                "requests": len(records),
                "arrival_rate_rps": arrival_rate_rps(([r.due_s for r, _ in pairs], None) for pairs in chosen),
                **{key: latency.get(key) for key in STAGE_LATENCY},
                "energy_per_request_j": energy_j,
                "energy_per_request_pm_j": pm_j,
                "energy_per_request_pm_sources": sources,
            }
        )
    return stages

"""What a DVFS sweep says, per architecture, phase and workload: energy per token against latency for every
setting, the Pareto front (no other setting is both lower in energy and in latency), and the lowest-energy
setting that meets the latency targets. For disaggregated end-to-end workloads that setting is the best
(prefill clock, decode clock) pair.

Per phase: prefill is judged on median TTFT and J per prompt token; decode on median TBT and J per output
token; end to end on both latencies and J per request.

The targets: with ``--goodput`` (the same per-request targets as the benchmarks' goodput), a setting meets them
when at least ``--slo-attainment`` (``DEFAULT_SLO_ATTAINMENT_PCT``, 90) of its requests are good (the summary's
``slo_attainment_pct``), and end to end is judged on J per good request, so a setting that saves energy by missing
targets gains nothing. Without ``--goodput``, the older ``--slo-ttft-ms`` / ``--slo-tbt-ms`` bound the medians.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

from plugin.load.workload import workload_id
from plugin.option_values import DEFAULT_SLO_ATTAINMENT_PCT, GoodputTargets
from plugin.results.schema import BenchmarkResult

PHASE_METRICS = {
    "prefill": ("median_ttft_ms", "energy_per_prompt_token_j"),
    "decode": ("median_tbt_ms", "energy_per_output_token_j"),
    "e2e": ("median_e2el_ms", "energy_per_request_j"),
    "serving": ("median_e2el_ms", "energy_per_request_j"),
}
GOODPUT_ENERGY_METRICS = {"e2e": "energy_per_good_request_j", "serving": "energy_per_good_request_j"}
"""Under goodput targets, whole requests are judged per good request; a phase keeps its per-token energy."""


@dataclass(frozen=True)
class Point:
    setting: str
    benchmark: str
    latency_ms: float | None
    energy_j: float | None
    ttft_ms: float | None
    tbt_ms: float | None
    pareto: bool = False
    meets_slo: bool = True
    slo_attainment_pct: float | None = None


def analyse(
    benchmarks: Sequence[BenchmarkResult],
    slo_ttft_ms: float | None,
    slo_tbt_ms: float | None,
    goodput: GoodputTargets | None = None,
    attainment_pct: float = DEFAULT_SLO_ATTAINMENT_PCT,
) -> list[dict[str, Any]]:
    """One entry per (architecture, phase, workload) that ran under more than one setting; ``goodput`` (when
    given) replaces the median thresholds ``slo_ttft_ms`` / ``slo_tbt_ms``, and a setting meets it from
    ``attainment_pct`` (``--slo-attainment``)."""
    groups: dict[tuple[str, str, str], list[BenchmarkResult]] = defaultdict(list)
    for entry in benchmarks:
        if entry.dvfs:
            groups[(entry.architecture, entry.phase, workload_id(entry.workload))].append(entry)
    analyses = []
    for (architecture, phase, workload), entries in groups.items():
        points = [_point(entry, phase, slo_ttft_ms, slo_tbt_ms, goodput, attainment_pct) for entry in entries]
        points = _mark_pareto(points)
        candidates = [p for p in points if p.meets_slo and p.energy_j is not None and p.latency_ms is not None]
        best = min(candidates, key=lambda p: p.energy_j or 0.0) if candidates else None
        analyses.append(
            {
                "architecture": architecture,
                "phase": phase,
                "workload": workload,
                "latency_metric": PHASE_METRICS[phase][0],
                "energy_metric": _energy_metric(phase, goodput),
                "slo_attainment_min_pct": None if goodput is None else attainment_pct,
                "points": [asdict(p) for p in points],
                "best_setting": None if best is None else best.setting,
                "why_no_best": _why_no_best(points, best, goodput is not None, attainment_pct),
            }
        )
    return analyses


def _energy_metric(phase: str, goodput: GoodputTargets | None) -> str:
    default = PHASE_METRICS[phase][1]
    return default if goodput is None else GOODPUT_ENERGY_METRICS.get(phase, default)


def _point(
    entry: BenchmarkResult,
    phase: str,
    slo_ttft_ms: float | None,
    slo_tbt_ms: float | None,
    goodput: GoodputTargets | None,
    attainment_pct: float,
) -> Point:
    latency_key = PHASE_METRICS[phase][0]
    summary = entry.summary
    assert entry.dvfs is not None
    ttft, tbt = summary.get("median_ttft_ms"), summary.get("median_tbt_ms")
    attainment = summary.get("slo_attainment_pct")
    if goodput is not None:  # a point without an attainment was not judged on these targets: it does not meet them
        meets = attainment is not None and attainment >= attainment_pct
    else:
        meets = (slo_ttft_ms is None or phase == "decode" or (ttft is not None and ttft <= slo_ttft_ms)) and (
            slo_tbt_ms is None or phase == "prefill" or (tbt is not None and tbt <= slo_tbt_ms)
        )
    return Point(
        setting=entry.dvfs["setting"],
        benchmark=entry.name,
        latency_ms=summary.get(latency_key),
        energy_j=summary.get(_energy_metric(phase, goodput)),
        ttft_ms=ttft,
        tbt_ms=tbt,
        meets_slo=meets,
        slo_attainment_pct=attainment,
    )


def _mark_pareto(points: list[Point]) -> list[Point]:
    """A point is on the front when no other is at most as high in both and lower in one (needs energy and
    latency; a point missing either is never on it)."""
    marked = []
    for point in points:
        if point.energy_j is None or point.latency_ms is None:
            marked.append(point)
            continue
        dominated = any(
            other.energy_j is not None
            and other.latency_ms is not None
            and other.energy_j <= point.energy_j
            and other.latency_ms <= point.latency_ms
            and (other.energy_j < point.energy_j or other.latency_ms < point.latency_ms)
            for other in points
        )
        marked.append(Point(**{**asdict(point), "pareto": not dominated}))
    return marked


def _why_no_best(points: list[Point], best: Point | None, goodput: bool, attainment_pct: float) -> str | None:
    if best is not None:
        return None
    meeting = [p for p in points if p.meets_slo]
    if goodput and not meeting:  # checked first: a setting with no good request has no energy per good request
        return f"no setting had at least {attainment_pct:g}% of its requests meet the goodput targets"
    if all(p.energy_j is None for p in points):
        return "power not measured: no energy to compare the settings by"
    if not meeting:
        return "no setting met the latency targets"
    if all(p.energy_j is None for p in meeting):
        return "power not measured: no energy to compare the settings by"
    return "no setting that met the targets has both an energy and a latency figure"

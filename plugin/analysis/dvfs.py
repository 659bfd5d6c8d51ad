"""What a DVFS sweep says, per topology, phase and workload: energy per token against latency for every
setting, the Pareto front (no other setting is both lower in energy and in latency), and the lowest-energy
setting that meets the latency targets. For disaggregated end-to-end workloads that setting is the best
(prefill clock, decode clock) pair.

Per phase: prefill is judged on median TTFT and J per prompt token; decode on median TBT and J per output
token; end to end on both latencies and J per request.

Grouped by topology (``BenchmarkResult.topology_name``), not architecture: 2p2d, 1p3d and 3p1d are all
disaggregated, but each has its own front; the architecture stays in each entry for display.

The targets: with ``--goodput`` (the same per-request targets as the benchmarks' goodput), a setting meets them
when the Wilson 95 % interval of its SLO attainment (``plugin.analysis.goodput.attainment_interval_pct``) lies at or
above ``--slo-attainment`` (``DEFAULT_SLO_ATTAINMENT_PCT``, 90), misses them when it lies below, and is undecided
when it straddles it (as the topology verdict judges): a setting counted good on a lucky draw is no best setting.
End to end is judged on J per good request, so a setting that saves energy by missing targets gains nothing.
Without ``--goodput``, the older ``--slo-ttft-ms`` / ``--slo-tbt-ms`` bound the medians.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

from plugin.analysis.goodput import attainment_interval_pct
from plugin.option_values import DEFAULT_SLO_ATTAINMENT_PCT, GoodputTargets
from plugin.records.results import BenchmarkResult
from plugin.records.workload import workload_id

PHASE_METRICS = {
    "prefill": ("median_ttft_ms", "energy_per_prompt_token_j"),
    "decode": ("median_tbt_ms", "energy_per_output_token_j"),
    "e2e": ("median_e2el_ms", "energy_per_request_j"),
    "serving": ("median_e2el_ms", "energy_per_request_j"),
}
GOODPUT_ENERGY_METRICS = {"e2e": "energy_per_good_request_j", "serving": "energy_per_good_request_j"}
"""Under goodput targets, whole requests are judged per good request; a phase keeps its per-token energy."""
MET, MISSED, UNDECIDED = "met", "missed", "undecided"
"""A setting's SLO status under goodput targets: its attainment's interval at or above the target, below, across."""


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
    slo_attainment_low_pct: float | None = None
    slo_attainment_high_pct: float | None = None
    """The attainment's Wilson 95 % interval (``None``: not judged on goodput targets, or no request counts)."""
    slo_status: str | None = None
    """``met``, ``missed`` or ``undecided`` under goodput targets; ``None`` when not judged on them (the median
    thresholds, or a benchmark without an attainment)."""


def analyse(
    benchmarks: Sequence[BenchmarkResult],
    slo_ttft_ms: float | None,
    slo_tbt_ms: float | None,
    goodput: GoodputTargets | None = None,
    attainment_pct: float = DEFAULT_SLO_ATTAINMENT_PCT,
) -> list[dict[str, Any]]:
    """One entry per (topology, phase, workload) that ran under more than one setting; ``goodput`` (when given)
    replaces the median thresholds ``slo_ttft_ms`` / ``slo_tbt_ms``, and a setting meets it when its attainment's
    lower bound reaches ``attainment_pct`` (``--slo-attainment``)."""
    groups: dict[tuple[str, str, str], list[BenchmarkResult]] = defaultdict(list)
    for entry in benchmarks:
        if entry.dvfs:
            groups[(entry.topology_name, entry.phase, workload_id(entry.workload))].append(entry)
    analyses = []
    for (topology, phase, workload), entries in groups.items():
        points = [_point(entry, phase, slo_ttft_ms, slo_tbt_ms, goodput, attainment_pct) for entry in entries]
        points = _mark_pareto(points)
        candidates = [p for p in points if p.meets_slo and p.energy_j is not None and p.latency_ms is not None]
        best = min(candidates, key=lambda p: p.energy_j or 0.0) if candidates else None
        undecided = _undecided(points, best)
        analyses.append(
            {
                "topology": topology,
                "architecture": entries[0].architecture,
                "phase": phase,
                "workload": workload,
                "latency_metric": PHASE_METRICS[phase][0],
                "energy_metric": _energy_metric(phase, goodput),
                "slo_attainment_min_pct": None if goodput is None else attainment_pct,
                "points": [asdict(p) for p in points],
                "best_setting": None if best is None else best.setting,
                "why_no_best": _why_no_best(points, best, goodput is not None, attainment_pct),
                "undecided_settings": [p.setting for p in undecided],
                "undecided": _undecided_text(undecided, best, attainment_pct),
            }
        )
    return analyses


def _energy_metric(phase: str, goodput: GoodputTargets | None) -> str:
    default = PHASE_METRICS[phase][1]
    return default if goodput is None else GOODPUT_ENERGY_METRICS.get(phase, default)


def attainment_interval(summary: dict[str, Any]) -> tuple[float, float] | None:
    """The summary's SLO attainment interval (95 %): as stored, else Wilson's from its good and counted requests
    (runs made before the interval was stored); ``None`` without either."""
    low, high = summary.get("slo_attainment_low_pct"), summary.get("slo_attainment_high_pct")
    if low is not None and high is not None:
        return float(low), float(high)
    good, total = summary.get("good_requests"), summary.get("requests")
    if good is None or total is None:
        return None
    return attainment_interval_pct(int(good), int(total))


def _slo_status(interval: tuple[float, float] | None, attainment_pct: float) -> str:
    """Met when the whole interval is at or above the target, missed when it is below; undecided across it, and
    without an interval (no request counts: how sure the attainment is cannot be said)."""
    if interval is None:
        return UNDECIDED
    low, high = interval
    if low >= attainment_pct:
        return MET
    return MISSED if high < attainment_pct else UNDECIDED


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
    interval, status = None, None
    if goodput is not None:  # a point without an attainment was not judged on these targets: it does not meet them
        interval = None if attainment is None else attainment_interval(summary)
        status = None if attainment is None else _slo_status(interval, attainment_pct)
        meets = status == MET
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
        slo_attainment_low_pct=None if interval is None else interval[0],
        slo_attainment_high_pct=None if interval is None else interval[1],
        slo_status=status,
    )


def _undecided(points: list[Point], best: Point | None) -> list[Point]:
    """Settings whose attainment straddles the target and that would beat the best (any, when there is none):
    whether they meet the targets decides which setting is best."""
    return [
        p
        for p in points
        if p.slo_status == UNDECIDED
        and p.energy_j is not None
        and (best is None or best.energy_j is None or p.energy_j < best.energy_j)
    ]


def _undecided_text(undecided: list[Point], best: Point | None, attainment_pct: float) -> str | None:
    if not undecided:
        return None
    settings = ", ".join(f"{p.setting} ({_interval_text(p)})" for p in undecided)
    than = f" with less energy than {best.setting}" if best is not None else ""
    return (
        f"undecided: the SLO attainment of {settings} straddles {attainment_pct:g}% (Wilson 95 % interval){than}; "
        "more requests or rounds decide"
    )


def _interval_text(point: Point) -> str:
    if point.slo_attainment_low_pct is None or point.slo_attainment_high_pct is None:
        return "no request count"
    return f"{point.slo_attainment_low_pct:.0f}-{point.slo_attainment_high_pct:.0f} %"


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
        if any(p.slo_status == UNDECIDED for p in points):
            return f"no setting's SLO attainment is surely at least {attainment_pct:g}% (Wilson 95 % lower bound)"
        return f"no setting had at least {attainment_pct:g}% of its requests meet the goodput targets"
    if all(p.energy_j is None for p in points):
        return "power not measured: no energy to compare the settings by"
    if not meeting:
        return "no setting met the latency targets"
    if all(p.energy_j is None for p in meeting):
        return "power not measured: no energy to compare the settings by"
    return "no setting that met the targets has both an energy and a latency figure"

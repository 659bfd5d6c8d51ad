"""Topologies compared on an equal GPU budget, per dataset: each serving benchmark at an offered rate as a row
(SLO attainment, energy per good request, p99 latencies and the per-GPU figures the run stored), and the verdict
per rate range (``plugin.analysis.verdict``). A dataset gets a comparison only when its benchmarks at an offered
rate cover two topologies or more; older files name the topology by their architecture (``topology_name``)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from plugin.analysis.capacity import is_probe
from plugin.analysis.verdict import Point, attainment_of, pm_sources, verdicts
from plugin.report.data import Run, _number

ROW_FIGURES = (
    "slo_attainment_pct", "goodput_rps", "goodput_per_gpu_rps", "request_throughput_per_gpu_rps",
    "output_tokens_per_j", "energy_per_good_request_j", "p99_ttft_ms", "p99_tpot_ms",
)  # fmt: skip
"""The summary's figures a comparison row carries; one an older file lacks is ``None``."""
UNCERTAIN = ("output_tokens_per_j", "energy_per_good_request_j")
"""Figures shown with their ± 95 % half-width (``power.uncertainty``, same key), where known."""
PER_GPU_TABLE = {
    "gpu_budget": "GPU budget",
    "slo_attainment_pct": "SLO attainment (%, 95 % interval)",
    "goodput_per_gpu_rps": "goodput per GPU (good req/s)",
    "request_throughput_per_gpu_rps": "req/s per GPU",
    "output_tokens_per_j": "output tokens / J",
    "energy_per_good_request_j": "J / good request",
}
"""The per-GPU table's columns after the topology and the offered rate."""


@dataclass(frozen=True)
class TopologyComparison:
    """One dataset's topologies against the offered rate: its rows (by topology, then rate), its verdict lines,
    and why there is no verdict when there is none."""

    dataset: str
    rows: list[dict[str, Any]]
    verdicts: list[str]
    why_no_verdict: str | None
    targets_ms: dict[str, float]
    """The goodput targets of the dataset's benchmarks (the first that has them), to draw on the latency chart."""
    attainment_pct: float
    """The SLO attainment that meets the targets (the run's ``--slo-attainment``): the verdicts' and the chart's."""

    @property
    def topologies(self) -> list[str]:
        return list(dict.fromkeys(row["topology"] for row in self.rows))


def comparison_datasets(run: Run) -> list[str]:
    """The datasets (in the order they ran) whose benchmarks at an offered rate cover two topologies or more."""
    return [dataset for dataset in run.datasets if len({row["topology_name"] for row in rows_of(run, dataset)}) >= 2]


def topology_comparison(run: Run, dataset: str) -> TopologyComparison:
    """The dataset's rows and verdicts, judged at the run's own attainment (``Run.attainment_pct``); the verdict's
    energy figures only where the run measured power."""
    rows = rows_of(run, dataset)
    points = [
        Point(row["topology"], dataset, row["offered_rate_rps"], row["rounds"], row["attainment"],
              row["energy_per_good_request_j"], row["energy_per_good_request_j_pm"], row["pm_sources"],
              row["goodput_per_gpu_rps"], row["gpu_budget"])
        for row in rows
        if row["attainment"] is not None and not row["probe"]  # a search's probes: the answer judges them
    ]  # fmt: skip
    lines = [verdict.text() for verdict in verdicts(points, run.attainment_pct)]
    why = None
    if not lines:
        why = "no --goodput targets were given for this dataset: no SLO attainment to judge the topologies by"
    elif not run.power_measured:
        why = f"{run.power_reason}: the topologies are judged on the targets alone"
    targets: dict[str, float] = next((row["targets_ms"] for row in rows if row["targets_ms"]), {})
    return TopologyComparison(dataset, rows, lines, why, targets, run.attainment_pct)


def rows_of(run: Run, dataset: str) -> list[dict[str, Any]]:
    """One row per serving benchmark of the dataset with an offered rate (all-at-once and closed-loop points have
    none), grouped by topology in the order they ran, each from low rate to high."""
    rows = []
    for benchmark in run.serving:
        summary = benchmark.summary
        rate = summary.get("offered_rate_rps")
        if str(benchmark.workload.dataset) != dataset or not _number(rate) or rate <= 0:
            continue
        setting = (benchmark.dvfs or {}).get("setting")
        power = benchmark.power
        attainment = attainment_of(summary)
        figures = {key: _figure(summary.get(key)) for key in ROW_FIGURES}
        if not power.measured:
            figures.update(output_tokens_per_j=None, energy_per_good_request_j=None)
        rows.append(
            {
                "name": benchmark.name,
                "topology": f"{benchmark.topology_name} {setting}" if setting else benchmark.topology_name,
                "topology_name": benchmark.topology_name,
                "offered_rate_rps": float(rate),
                "gpu_budget": benchmark.gpu_budget,
                **figures,
                **{f"{key}_pm": _figure(power.uncertainty.get(key)) for key in UNCERTAIN},
                "attainment": attainment,
                "slo_attainment_pct_interval": None if attainment is None else attainment.interval_text(),
                "rounds": len(benchmark.rounds),
                "pm_sources": pm_sources(getattr(power, "uncertainty_sources", {}), power.uncertainty_parts),
                "targets_ms": dict(summary.get("goodput_targets_ms") or {}),
                "probe": is_probe(benchmark),
            }
        )
    order = {topology: index for index, topology in enumerate(dict.fromkeys(row["topology"] for row in rows))}
    return sorted(rows, key=lambda row: (order[row["topology"]], row["offered_rate_rps"]))


def _figure(value: Any) -> float | None:
    return float(value) if _number(value) else None

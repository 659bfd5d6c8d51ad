"""The topology comparison's charts, one line per topology against the offered rate: SLO attainment with the
attainment a verdict asks for (the run's --slo-attainment; by default 90 %, DistServe's figure), energy per good
request with its ± 95 % bars, and TTFT and TPOT p99 with their targets. A missing value is left out, never drawn
as 0; a chart with nothing to draw says why."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib.pyplot as plt
from matplotlib.figure import Figure
from matplotlib.ticker import FuncFormatter

from plugin.report.charts import ARCHITECTURE_COLORS, WIDE, _no_panel, _save, placeholder, plain_log_ticks, plain_number
from plugin.report.comparison import TopologyComparison

NARROW = (7.0, 4.2)
LATENCY_PANELS = {"p99_ttft_ms": ("TTFT p99 (ms)", "ttft"), "p99_tpot_ms": ("TPOT p99 (ms)", "tpot")}
"""Each latency panel's figure, title and goodput target key."""


TITLES = {
    "slo": "SLO attainment against the offered rate: dataset {}",
    "energy": "Energy per good request against the offered rate: dataset {}",
    "latency": "p99 latency against the offered rate: dataset {}",
}
NO_TARGETS = "no --goodput targets were given: no SLO attainment"
NO_ENERGY = "no energy per good request (no --goodput targets, or no good request)"


def comparison_charts(
    comparison: TopologyComparison,
    paths: dict[str, Path],
    unmeasured: str | None,
) -> dict[str, Path]:
    """The three charts of ``comparison`` at ``paths`` (``comparison.chart_paths``), each a placeholder saying why
    where it has nothing to draw; ``unmeasured``: why the run has no energy figure (``None``: power measured)."""
    colors = topology_colors(comparison.topologies)
    figures = {
        "slo": slo_figure(comparison, colors),
        "energy": None if unmeasured is not None else energy_figure(comparison, colors),
        "latency": latency_figure(comparison, colors),
    }
    why = {"slo": NO_TARGETS, "energy": unmeasured or NO_ENERGY}
    return {
        kind: _save(figure, paths[kind])
        if figure is not None
        else placeholder(paths[kind], TITLES[kind].format(comparison.dataset), why[kind], NARROW)
        for kind, figure in figures.items()
    }


def slo_figure(comparison: TopologyComparison, colors: dict[str, str]) -> Figure | None:
    """SLO attainment per topology, with the attainment that meets the targets (the verdicts' own, so the line
    and the words agree); ``None``: no attainment."""
    if not _has(comparison, "slo_attainment_pct"):
        return None
    figure, axis = plt.subplots(figsize=NARROW, layout="constrained")
    figure.suptitle(TITLES["slo"].format(comparison.dataset), fontsize=11)
    _lines(axis, comparison, colors, "slo_attainment_pct")
    attainment = comparison.attainment_pct
    axis.axhline(attainment, color="gray", linestyle=":", label=f"meets the targets ({attainment:g} %)")
    axis.set_ylim(0.0, 105.0)
    axis.set_ylabel("SLO attainment (%)")
    axis.yaxis.set_major_formatter(FuncFormatter(plain_number))
    axis.legend(fontsize=8, loc="lower left")
    return figure


def energy_figure(comparison: TopologyComparison, colors: dict[str, str]) -> Figure | None:
    """J per good request per topology with its ± 95 % bars (linear from 0: savings read as lengths)."""
    if not _has(comparison, "energy_per_good_request_j"):
        return None
    figure, axis = plt.subplots(figsize=NARROW, layout="constrained")
    figure.suptitle(TITLES["energy"].format(comparison.dataset), fontsize=11)
    _lines(axis, comparison, colors, "energy_per_good_request_j", errors=True)
    axis.set_ylim(bottom=0.0)
    axis.set_ylabel("J per good request (± 95 %)")
    axis.yaxis.set_major_formatter(FuncFormatter(plain_number))
    axis.legend(fontsize=8)
    return figure


def latency_figure(comparison: TopologyComparison, colors: dict[str, str]) -> Figure:
    """TTFT p99 and TPOT p99 side by side (log scale: p99 grows by orders past saturation), each with its target."""
    figure, axes = plt.subplots(1, 2, figsize=WIDE, layout="constrained")
    figure.suptitle(TITLES["latency"].format(comparison.dataset), fontsize=11)
    for axis, (metric, (label, target_key)) in zip(axes, LATENCY_PANELS.items(), strict=True):
        if not _has(comparison, metric, positive=True):
            _no_panel(axis, label, "no value in this run")
            continue
        _lines(axis, comparison, colors, metric, positive=True)
        target = comparison.targets_ms.get(target_key)
        if target is not None:
            axis.axhline(target, color="gray", linestyle=":", label=f"target {target:g} ms")
        axis.set_title(label, fontsize=10)
        axis.set_yscale("log")
        plain_log_ticks(axis.yaxis)
        axis.legend(fontsize=8)
    return figure


def _lines(
    axis: Any, comparison: TopologyComparison, colors: dict[str, str], metric: str, errors: bool = False,
    positive: bool = False,
) -> None:  # fmt: skip
    """One line per topology over the rows that have ``metric`` (above 0 where the axis is logarithmic), with
    its ± 95 % bars where asked for and known."""
    for topology, color in colors.items():
        rows = [r for r in comparison.rows if r["topology"] == topology and _shown(r.get(metric), positive)]
        axis.plot([r["offered_rate_rps"] for r in rows], [r[metric] for r in rows], marker="o", color=color,
                  label=topology)  # fmt: skip
        bars = [r for r in rows if errors and r.get(f"{metric}_pm") is not None]
        if bars:
            axis.errorbar([r["offered_rate_rps"] for r in bars], [r[metric] for r in bars],
                          yerr=[r[f"{metric}_pm"] for r in bars], fmt="none", ecolor=color, capsize=3)  # fmt: skip
    axis.set_xlabel("offered rate (req/s)")
    axis.set_xscale("log")
    plain_log_ticks(axis.xaxis)


def _has(comparison: TopologyComparison, metric: str, positive: bool = False) -> bool:
    return any(_shown(row.get(metric), positive) for row in comparison.rows)


def _shown(value: float | None, positive: bool) -> bool:
    return value is not None and (value > 0 or not positive)


def topology_colors(topologies: list[str]) -> dict[str, str]:
    """The architecture's colour for the default pair; the colour cycle's others in order for the rest."""
    spare = [f"C{index}" for index in range(10) if f"C{index}" not in ("C2", "C4")]  # C2, C4: the pair's colours
    named = {topology: ARCHITECTURE_COLORS[topology] for topology in topologies if topology in ARCHITECTURE_COLORS}
    others = [topology for topology in topologies if topology not in named]
    return {topology: named.get(topology) or spare[others.index(topology) % len(spare)] for topology in topologies}

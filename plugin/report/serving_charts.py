"""The serving benchmarks' curves against the offered rate, one figure per dataset and a line per architecture:
achieved throughput (with y = x), TTFT and TPOT p50/p99, SLO attainment and energy per (good) request. A point
without an offered rate sits at its achieved rate, hollow; a missing value is left out, never drawn as 0."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib.pyplot as plt
from matplotlib.figure import Figure
from matplotlib.ticker import FuncFormatter

from plugin.report.charts import (
    ARCHITECTURE_COLORS,
    SHORT_WINDOW_COLOR,
    SHORT_WINDOW_LABEL,
    WIDE,
    _no_panel,
    _save,
    placeholder,
    plain_log_ticks,
    plain_number,
)
from plugin.report.data import Run
from plugin.report.serving_data import ServingPoint, serving_points

AT_ACHIEVED_RATE = "all at once / closed loop: at achieved rate"
PERCENTILE_STYLES = {"p50": "-", "p99": "--"}
ENERGY_CURVE_METRICS = ("j_per_good_request", "j_per_request")


def serving_curves(run: Run, dataset: str, path: Path) -> Path:
    """One dataset's serving benchmarks against the offered rate, one line per architecture (``serving_figure``);
    a placeholder saying why when none of them can be placed on the rate axis."""
    title = f"Serving: dataset {dataset}, against the offered rate"
    points = [point for point in serving_points(run.serving) if point.dataset == dataset]
    if not points:
        why = "no benchmark of this dataset has an offered rate or an achieved throughput (no request completed)"
        return placeholder(path, title, why)
    return _save(serving_figure(title, points, run.power_reason if not run.power_measured else None), path)


def serving_figure(title: str, points: list[ServingPoint], unmeasured: str | None) -> Figure:
    """Achieved throughput (with y = x), TTFT and TPOT p50/p99, SLO attainment and J per good request (J per
    request where no target was given) against the offered rate. A point without an offered rate is hollow, at its
    achieved rate, and not joined to the curve; a missing figure (or one a log axis cannot show: 0) is skipped."""
    figure, axes = plt.subplots(2, 3, figsize=(WIDE[0], 7.6), layout="constrained")
    figure.suptitle(title)
    throughput, ttft, tpot, slo, energy, key = axes.flat
    colors = _group_colors(points)
    _serving_panel(throughput, points, colors, {"": "request_throughput"}, "achieved throughput (req/s)")
    _diagonal(throughput, points)
    _serving_panel(ttft, points, colors, {"p50": "median_ttft_ms", "p99": "p99_ttft_ms"}, "TTFT (ms)")
    _serving_panel(tpot, points, colors, {"p50": "median_tpot_ms", "p99": "p99_tpot_ms"}, "TPOT (ms)")
    targets = any(point.has_targets for point in points)
    if targets:
        _serving_panel(slo, points, colors, {"": "slo_attainment_pct"}, "SLO attainment (%)", log=False)
        slo.set_ylim(0.0, 105.0)
    else:
        _no_panel(slo, "SLO attainment (%)", "no --goodput targets were given")
    energy_label = "J per good request" if targets else "J per request (no --goodput targets)"
    if unmeasured is None:
        metric = "j_per_good_request" if targets else "j_per_request"
        _serving_panel(energy, points, colors, {"": metric}, energy_label)
    else:
        _no_panel(energy, energy_label, unmeasured)
    key.axis("off")
    handles = _serving_handles(colors, any(not point.offered for point in points))
    if unmeasured is None and any(point.short_window for point in points):
        handles.append(_short_handle())
    key.legend(handles=handles, loc="center", fontsize=9)
    return figure


def _group_colors(points: list[ServingPoint]) -> dict[str, str]:
    """The architecture's colour for its line; a colour of the cycle each where an architecture has several (DVFS
    settings)."""
    groups = list(dict.fromkeys(point.group for point in points))
    return {group: ARCHITECTURE_COLORS.get(group, f"C{index}") for index, group in enumerate(groups)}


def _serving_panel(
    axis: Any, points: list[ServingPoint], colors: dict[str, str], metrics: dict[str, str], label: str, log: bool = True
) -> None:
    drawn = 0
    for group, color in colors.items():
        for percentile, metric in metrics.items():
            have = [p for p in points if p.group == group and metric in p.values and (p.values[metric] > 0 or not log)]
            curve = sorted((p for p in have if p.offered), key=lambda p: p.x_rps)
            alone = [p for p in have if not p.offered]
            name = f"{group} {percentile}".strip()
            style = PERCENTILE_STYLES.get(percentile, "-")
            axis.plot([p.x_rps for p in curve], [p.values[metric] for p in curve], linestyle=style, marker="o",
                      color=color, label=name)  # fmt: skip
            axis.plot([p.x_rps for p in alone], [p.values[metric] for p in alone], linestyle="none", marker="o",
                      markerfacecolor="white", markeredgecolor=color, label=f"{name} at achieved rate")  # fmt: skip
            _serving_errors(axis, have, metric, color, name)
            drawn += len(have)
    axis.set_title(label, fontsize=10)
    axis.set_xlabel("offered rate (req/s)")
    if not drawn:
        axis.text(0.5, 0.5, "no value", ha="center", va="center", transform=axis.transAxes)
        axis.set_xticks([])
        axis.set_yticks([])
        return
    axis.set_xscale("log")
    plain_log_ticks(axis.xaxis)
    if log:
        axis.set_yscale("log")
        plain_log_ticks(axis.yaxis)
    else:
        axis.yaxis.set_major_formatter(FuncFormatter(plain_number))


def _serving_errors(axis: Any, points: list[ServingPoint], metric: str, color: str, name: str) -> None:
    """The ± 95 % bars of an energy figure where known, and a red ring on a point whose energy rests on too few
    sensor updates (latency points are not rung: the flag is about the power sensor)."""
    bars = [p for p in points if metric in p.errors]
    if bars:
        axis.errorbar([p.x_rps for p in bars], [p.values[metric] for p in bars], yerr=[p.errors[metric] for p in bars],
                      fmt="none", ecolor=color, capsize=3, label=f"{name} 95 %")  # fmt: skip
    short = [p for p in points if p.short_window and metric in ENERGY_CURVE_METRICS]
    if short:
        axis.plot([p.x_rps for p in short], [p.values[metric] for p in short], linestyle="none", marker="o",
                  markersize=12, markerfacecolor="none", markeredgecolor=SHORT_WINDOW_COLOR,
                  label=SHORT_WINDOW_LABEL)  # fmt: skip


def _diagonal(axis: Any, points: list[ServingPoint]) -> None:
    """y = x, where achieved throughput equals the offered rate, across the panel's points."""
    values = [p.x_rps for p in points] + [
        p.values["request_throughput"] for p in points if "request_throughput" in p.values
    ]
    low, high = min(values), max(values)
    axis.plot([low, high], [low, high], color="gray", linestyle=":", label="achieved = offered")


def _short_handle() -> Any:
    from matplotlib.lines import Line2D

    return Line2D([], [], linestyle="none", marker="o", markersize=10, markerfacecolor="none",
                  markeredgecolor=SHORT_WINDOW_COLOR, label=SHORT_WINDOW_LABEL)  # fmt: skip


def _serving_handles(colors: dict[str, str], hollow: bool) -> list[Any]:
    from matplotlib.lines import Line2D

    at_achieved = Line2D(
        [], [], color="black", linestyle="none", marker="o", markerfacecolor="white", label=AT_ACHIEVED_RATE
    )
    return [
        *(Line2D([], [], color=color, marker="o", label=group) for group, color in colors.items()),
        Line2D([], [], color="black", linestyle="-", label="p50"),
        Line2D([], [], color="black", linestyle="--", label="p99"),
        *([at_achieved] if hollow else []),
        Line2D([], [], color="gray", linestyle=":", label="achieved = offered (y = x)"),
    ]

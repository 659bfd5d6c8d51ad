"""A dataset's serving benchmarks against the offered rate, one series per topology (and DVFS setting): SLO
attainment with its 95 % (Wilson) interval and the attainment that meets the targets, J per good request with its
± 95 %, and TTFT and TPOT p99 with their targets; and the Pareto view, J per good request against goodput per GPU,
one point per topology and rate. A point without an offered rate sits hollow at its achieved rate, not joined to
the curve; a missing value is left out, never drawn as 0."""

from __future__ import annotations

import math
from typing import Any

import plotly.graph_objects as go
from plotly.colors import qualitative
from plotly.subplots import make_subplots

from plugin.report.charts import SHORT_WINDOW_COLOR, SHORT_WINDOW_LABEL
from plugin.report.data import Run
from plugin.report.interactive import Chart, figure, say_why
from plugin.report.serving_data import ServingPoint, serving_points

NO_TARGETS = "no --goodput targets were given: no SLO attainment"
LATENCY_PANELS = {"p99_ttft_ms": ("TTFT p99 (ms)", "ttft"), "p99_tpot_ms": ("TPOT p99 (ms)", "tpot")}
"""Each latency panel's figure, title and goodput target key."""
RATE_AXIS = {"title": "offered rate (req/s)", "type": "log", "exponentformat": "none"}


def rate_curves(run: Run, dataset: str, index: int) -> Chart:
    """The four panels of one dataset against the offered rate; one line saying why when none of its benchmarks
    can be placed on the rate axis."""
    title = f"Serving: dataset {dataset}, against the offered rate"
    points = [point for point in serving_points(run.serving) if point.dataset == dataset]
    chart_id = f"rate-curves-{index}"
    if not points:
        why = f"{title}: no benchmark of this dataset has an offered rate or an achieved throughput"
        return Chart(chart_id, title, missing=why)
    return Chart(chart_id, title, rate_figure(title, points, _targets(run, dataset), run.attainment_pct,
                                              None if run.power_measured else run.power_reason))  # fmt: skip


def rate_figure(
    title: str, points: list[ServingPoint], targets_ms: dict[str, float], attainment_pct: float, unmeasured: str | None
) -> go.Figure:
    """SLO attainment, energy, TTFT p99 and TPOT p99 (log axes for the latencies and the rate: p99 grows by
    orders past saturation). ``unmeasured``: why the run has no energy figure (``None``: power measured)."""
    targets = any(point.has_targets for point in points)
    energy = "j_per_good_request" if targets else "j_per_request"
    energy_title = "J per good request (± 95 %)" if targets else "J per request (± 95 %; no --goodput targets)"
    titles = ["SLO attainment (%, 95 % interval)", energy_title, *(label for label, _ in LATENCY_PANELS.values())]
    fig = make_subplots(rows=2, cols=2, subplot_titles=titles, horizontal_spacing=0.1, vertical_spacing=0.16,
                        figure=figure(title, 720))  # fmt: skip
    colors = group_colors(points)
    if targets:
        _series(fig, points, colors, "slo_attainment_pct", "%", 1, 1)
        fig.add_hline(y=attainment_pct, line={"dash": "dot", "color": "gray"}, row=1, col=1,
                      annotation_text=f"meets the targets ({attainment_pct:g} %)")  # fmt: skip
        fig.update_yaxes(range=[0, 105], row=1, col=1)
    else:
        say_why(fig, NO_TARGETS, "x", "y")
    if unmeasured is not None:
        say_why(fig, unmeasured, "x2", "y2")
    elif not _series(fig, points, colors, energy, "J", 1, 2):
        say_why(fig, "no value in this run", "x2", "y2")
    else:
        fig.update_yaxes(rangemode="tozero", row=1, col=2)  # linear from 0: savings read as lengths
        _ring_short_windows(fig, points, energy)
    for (metric, (_, target_key)), (row, col) in zip(LATENCY_PANELS.items(), ((2, 1), (2, 2)), strict=True):
        refs = ("x3", "y3") if col == 1 else ("x4", "y4")
        if not _series(fig, points, colors, metric, "ms", row, col, positive=True):
            say_why(fig, "no value in this run", *refs)
            continue
        fig.update_yaxes(type="log", exponentformat="none", row=row, col=col)
        if (target := targets_ms.get(target_key)) is not None:
            fig.add_hline(y=target, line={"dash": "dot", "color": "gray"}, row=row, col=col)  # its label: at the log
            fig.add_annotation(text=f"target {target:g} ms", xref=f"{refs[0]} domain", yref=refs[1], x=1,
                               y=math.log10(target), xanchor="right", yanchor="bottom", showarrow=False)  # fmt: skip
    fig.update_xaxes(**RATE_AXIS)
    return fig


def pareto(run: Run, dataset: str, index: int) -> Chart:
    """J per good request against goodput per GPU, one point per topology and offered rate, the front of points
    no other beats on both joined; one line saying why when the run has no such point."""
    title = f"Pareto view: dataset {dataset}, J per good request against goodput per GPU"
    chart_id = f"pareto-{index}"
    axes = {"goodput_per_gpu_rps", "j_per_good_request"}
    points = [p for p in serving_points(run.serving) if p.dataset == dataset and p.offered and axes <= set(p.values)]
    if not points:
        if not run.power_measured:
            why = run.power_reason
        elif not any(point.has_targets for point in serving_points(run.serving) if point.dataset == dataset):
            why = "no --goodput targets were given: no good request to count"
        else:
            why = "no benchmark has both goodput per GPU and J per good request (a file from before per-GPU figures?)"
        return Chart(chart_id, title, missing=f"{title}: {why}")
    return Chart(chart_id, title, pareto_figure(title, points))


def pareto_figure(title: str, points: list[ServingPoint]) -> go.Figure:
    fig = figure(title, 480)
    colors = group_colors(points)
    for group, color in colors.items():
        mine = sorted((p for p in points if p.group == group), key=lambda p: p.x_rps)
        fig.add_trace(
            go.Scatter(
                x=[p.values["goodput_per_gpu_rps"] for p in mine],
                y=[p.values["j_per_good_request"] for p in mine],
                error_y=_error_bars(mine, "j_per_good_request"),
                mode="markers+text", text=[f"{p.x_rps:g}" for p in mine], textposition="top center",
                marker={"color": color, "size": 10}, name=group,
                customdata=[[p.name, p.x_rps, _pm_text(p, "j_per_good_request")] for p in mine],
                hovertemplate=f"<b>{group}</b> at %{{customdata[1]:g}} req/s<br>%{{customdata[0]}}<br>goodput per GPU"
                " %{x:.4g} good req/s<br>%{y:.4g}%{customdata[2]} J per good request<extra></extra>",
            )
        )  # fmt: skip
    front = front_of([(p.values["goodput_per_gpu_rps"], p.values["j_per_good_request"]) for p in points])
    fig.add_trace(go.Scatter(x=[x for x, _ in front], y=[y for _, y in front], mode="lines", name="Pareto front",
                             line={"dash": "dash", "color": "gray"}, hoverinfo="skip"))  # fmt: skip
    fig.update_xaxes(title="goodput per GPU (good req/s)", rangemode="tozero")
    fig.update_yaxes(title="J per good request (± 95 %)", rangemode="tozero")
    fig.add_annotation(text="labels: offered rate (req/s); better: right and down", xref="paper", yref="paper",
                       x=1, y=1.06, showarrow=False, font={"color": "dimgray", "size": 11})  # fmt: skip
    return fig


def front_of(points: list[tuple[float, float]]) -> list[tuple[float, float]]:
    """The points (goodput, energy) that no other point beats on both (more goodput and less energy), by goodput."""
    front: list[tuple[float, float]] = []
    for goodput, energy in sorted(points, key=lambda p: (-p[0], p[1])):
        if not front or energy < front[-1][1]:
            front.append((goodput, energy))
    return front[::-1]


def group_colors(points: list[ServingPoint]) -> dict[str, str]:
    """One colour per series, in the order the series ran."""
    groups = list(dict.fromkeys(point.group for point in points))
    palette = qualitative.Plotly
    return {group: palette[index % len(palette)] for index, group in enumerate(groups)}


def _series(
    fig: go.Figure, points: list[ServingPoint], colors: dict[str, str], metric: str, unit: str, row: int, col: int,
    positive: bool = False,
) -> int:  # fmt: skip
    """Each series' line over its points at an offered rate and its hollow points at the achieved rate, with the
    metric's interval as error bars where known; each series is named in the legend once (clicking it toggles the
    series in every panel). Returns how many points were drawn."""
    drawn = 0
    named = {trace.legendgroup for trace in fig.data if trace.showlegend is not False}
    for group, color in colors.items():
        have = [p for p in points if p.group == group and metric in p.values and (p.values[metric] > 0 or not positive)]
        curve = sorted((p for p in have if p.offered), key=lambda p: p.x_rps)
        alone = [p for p in have if not p.offered]
        for mine, hollow in ((curve, False), (alone, True)):
            if not mine:
                continue
            where = "at its achieved rate" if hollow else "offered"
            fig.add_trace(
                go.Scatter(
                    x=[p.x_rps for p in mine], y=[p.values[metric] for p in mine], error_y=_error_bars(mine, metric),
                    mode="markers" if hollow else "lines+markers", name=group, legendgroup=group,
                    showlegend=group not in named,
                    marker={"color": "white" if hollow else color, "line": {"color": color, "width": 2}, "size": 9},
                    line={"color": color},
                    customdata=[[p.name, _pm_text(p, metric)] for p in mine],
                    hovertemplate=f"<b>{group}</b><br>%{{customdata[0]}}<br>%{{x:.3g}} req/s {where}<br>"
                    f"%{{y:.4g}}%{{customdata[1]}} {unit}<extra></extra>",
                ),
                row=row, col=col,
            )  # fmt: skip
            named.add(group)
        drawn += len(have)
    return drawn


def _ring_short_windows(fig: go.Figure, points: list[ServingPoint], metric: str) -> None:
    """A red ring round each energy point that rests on too few sensor updates (the flag is about the power
    sensor: latency points are not rung)."""
    short = [p for p in points if p.short_window and metric in p.values]
    if short:
        fig.add_trace(
            go.Scatter(x=[p.x_rps for p in short], y=[p.values[metric] for p in short], mode="markers",
                       name=SHORT_WINDOW_LABEL, hoverinfo="skip",
                       marker={"symbol": "circle-open", "size": 20, "color": SHORT_WINDOW_COLOR, "line": {"width": 2}}),
            row=1, col=2,
        )  # fmt: skip


def _error_bars(points: list[ServingPoint], metric: str) -> dict[str, Any] | None:
    """The metric's 95 % interval as error bars: SLO attainment's Wilson bounds (asymmetric), an energy figure's
    ± half-width; ``None`` where no point has one (an unknown interval is no bar, never a bar of 0)."""
    if metric == "slo_attainment_pct":
        bounds = [_wilson(p) for p in points]
        if all(bound is None for bound in bounds):
            return None
        return {
            "type": "data", "symmetric": False,
            "array": [None if b is None else b[1] - p.values[metric] for p, b in zip(points, bounds, strict=True)],
            "arrayminus": [None if b is None else p.values[metric] - b[0] for p, b in zip(points, bounds, strict=True)],
        }  # fmt: skip
    if not any(metric in p.errors for p in points):
        return None
    return {"type": "data", "array": [p.errors.get(metric) for p in points]}


def _wilson(point: ServingPoint) -> tuple[float, float] | None:
    low, high = point.values.get("slo_attainment_low_pct"), point.values.get("slo_attainment_high_pct")
    return None if low is None or high is None else (low, high)


def _pm_text(point: ServingPoint, metric: str) -> str:
    """`` (95 %: 81.2-97.5)`` or `` ± 0.12``: the hover's interval, empty where unknown."""
    if metric == "slo_attainment_pct" and (bounds := _wilson(point)) is not None:
        return f" (95 %: {bounds[0]:.1f}-{bounds[1]:.1f})"
    error = point.errors.get(metric)
    return "" if error is None else f" ± {error:.2g}"


def _targets(run: Run, dataset: str) -> dict[str, float]:
    """The goodput targets of the dataset's benchmarks (the first that has them)."""
    for benchmark in run.serving:
        targets = benchmark.summary.get("goodput_targets_ms")
        if str(benchmark.workload.dataset) == dataset and targets:
            return {key: float(value) for key, value in targets.items()}
    return {}

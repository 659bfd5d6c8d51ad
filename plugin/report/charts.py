"""The report's charts as PNG files of a fixed pixel size (``SIZE`` x ``DPI``), so the page can state each
image's real size. A chart whose data the run does not have says so in the image, never drawing zeros."""

from __future__ import annotations

import textwrap
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # files only: no display, safe in a pytest process and on a server

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from matplotlib.axis import Axis  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402
from matplotlib.ticker import LogFormatter  # noqa: E402

from plugin.analysis.uncertainty import MIN_SENSOR_UPDATES  # noqa: E402
from plugin.records.results import BenchmarkResult  # noqa: E402
from plugin.records.workload import SERVING, workload_id
from plugin.report.data import ERROR_SUFFIX, Run  # noqa: E402

DPI = 100
WIDE = (11.0, 4.2)
ARCHITECTURE_COLORS = {"traditional": "tab:green", "disaggregated": "tab:purple"}
PHASE_ENERGY = {
    "prefill": ("j_per_prompt_token", "J/prompt tok"),
    "decode": ("j_per_output_token", "J/output tok"),
    "e2e": ("j_per_request", "J/request"),
}
"""The one energy figure of each phase (``plugin.analysis.phase_figures.energy_figures``) and its unit."""
"""The legend's words for a serving point without an offered rate, drawn hollow at its achieved throughput."""
SHORT_WINDOW_COLOR = "red"
SHORT_WINDOW_LABEL = f"short window (< {MIN_SENSOR_UPDATES} sensor updates)"
"""How a figure resting on too few sensor updates is marked on a chart: ringed (bars: hatched) in red."""


def _save(figure: Figure, path: Path) -> Path:
    figure.savefig(path, dpi=DPI)  # no bbox_inches="tight": the pixel size stays exactly figsize x DPI
    plt.close(figure)
    return path


def plain_number(value: float, _position: Any = None) -> str:
    """``400``, ``0.01``, ``1000000``: a tick label a reader takes in at a glance, never ``4×10²``."""
    return str(np.format_float_positional(float(f"{value:.6g}"), trim="-"))


class PlainLogFormatter(LogFormatter):
    """matplotlib's choice of which ticks of a log axis get a label, written as plain numbers."""

    def __call__(self, x: float, pos: int | None = None) -> str:
        return plain_number(x) if super().__call__(x, pos) else ""


def plain_log_ticks(axis: Axis) -> None:
    """Label a log axis's major and minor ticks as plain numbers (matplotlib's default writes ``4×10²``)."""
    axis.set_major_formatter(PlainLogFormatter())
    axis.set_minor_formatter(PlainLogFormatter())


def placeholder(path: Path, title: str, message: str, figsize: tuple[float, float] = WIDE) -> Path:
    """A chart that cannot be drawn from this run: its title and why, in the image itself."""
    figure = plt.figure(figsize=figsize, layout="constrained")
    figure.suptitle(title)
    figure.text(0.5, 0.5, message, ha="center", va="center", wrap=True, fontsize=12, color="dimgray")
    return _save(figure, path)


def latency_distributions(run: Run, path: Path) -> Path:
    """TTFT, TBT and E2E of every request, one box per benchmark."""
    benchmarks = run.benchmarks
    if not benchmarks:
        return placeholder(path, "Latency distributions", "no benchmark finished in this run")
    labels = [_short(benchmark) for benchmark in benchmarks]
    frames = [run.requests(benchmark) for benchmark in benchmarks]
    figsize = (WIDE[0], 9.0)
    figure, axes = plt.subplots(3, 1, figsize=figsize, layout="constrained", sharex=True)
    figure.suptitle("Latency per request (box: quartiles, whiskers: 1.5 IQR)")
    series = {
        "TTFT (ms)": [frame["ttft_ms"].dropna().tolist() for frame in frames],
        "TBT (ms)": [[gap for gaps in frame["tbt_ms"] for gap in gaps] for frame in frames],
        "E2E (ms)": [frame["e2e_ms"].dropna().tolist() for frame in frames],
    }
    for axis, (name, values) in zip(axes, series.items(), strict=True):
        axis.boxplot([v if v else [float("nan")] for v in values], showfliers=False)
        axis.set_ylabel(name)
        axis.set_yscale("log")
        plain_log_ticks(axis.yaxis)
    axes[-1].set_xticks(range(1, len(labels) + 1), labels, rotation=60, ha="right", fontsize=8)
    return _save(figure, path)


def energy_per_token(run: Run, path: Path) -> Path:
    """J per prompt token against prompt length (prefill benchmarks) and J per output token against output
    length (decode benchmarks), one line per architecture and concurrency (``energy_per_token_figure``)."""
    if not run.power_measured:
        return placeholder(path, "Energy per token", run.power_reason)
    return _save(energy_per_token_figure(run.table()), path)


def energy_per_token_figure(table: pd.DataFrame) -> Figure:
    """The two panels, each point with its ± 95 % error bar where known; a point resting on too few sensor
    updates is ringed in red and named in the legend, never drawn bare."""
    figure, (prefill_axis, decode_axis) = plt.subplots(1, 2, figsize=WIDE, layout="constrained")
    figure.suptitle("Energy per token (bars: 95 % interval)")
    for axis, phase, x, y, label in (
        (prefill_axis, "prefill", "input_len", "j_per_prompt_token", "J per prompt token"),
        (decode_axis, "decode", "output_len", "j_per_output_token", "J per output token"),
    ):
        rows = table[(table["phase"] == phase) & table[y].notna()]
        for (architecture, concurrency), group in rows.groupby(["architecture", "concurrency"]):
            group = group.sort_values(x)
            axis.errorbar(group[x], group[y], yerr=_errors(group, y), marker="o", capsize=3,
                          label=f"{architecture}, c={concurrency}",
                          color=ARCHITECTURE_COLORS.get(str(architecture)))  # fmt: skip
        _ring_short_windows(axis, rows, x, y)
        axis.set_xlabel(f"{x.replace('_', ' ')} (tokens)")
        axis.set_ylabel(label)
        axis.set_title(f"{phase} benchmarks", fontsize=10)
        if len(rows):
            axis.legend(fontsize=8)
        else:
            axis.text(0.5, 0.5, f"no {phase} benchmark with energy", ha="center", transform=axis.transAxes)
    return figure


def _errors(rows: pd.DataFrame, figure: str) -> Any:
    """The figure's ± half-widths as error bar lengths; ``None`` (no bars) where none is known, NaN (no bar for
    that point) where one is missing: an unknown error is never drawn as 0."""
    column = f"{figure}{ERROR_SUFFIX}"
    if column not in rows or rows[column].isna().all():
        return None
    return rows[column].astype(float).to_numpy()


def _ring_short_windows(axis: Any, rows: pd.DataFrame, x: str, y: str) -> None:
    short = rows[rows["short_window"].notna()]
    if len(short):
        axis.plot(short[x], short[y], linestyle="none", marker="o", markersize=12, markerfacecolor="none",
                  markeredgecolor=SHORT_WINDOW_COLOR, label=SHORT_WINDOW_LABEL)  # fmt: skip


def architectures(run: Run, path: Path) -> Path:
    """Traditional against disaggregated on the phase workloads both ran (``architectures_figure``), or a
    placeholder saying why there is nothing to compare. Serving benchmarks are compared on their own curves
    against the offered rate (``plugin.report.rate_curves``)."""
    title = "Traditional vs disaggregated, same workloads"
    table = run.table()
    table = table[table["phase"] != SERVING].copy()
    both = table.groupby("workload_id")["architecture"].nunique()
    if not (both > 1).any():
        if not len(table) and run.serving:
            return placeholder(path, title, "this run has serving benchmarks only: see the Serving section")
        found = ", ".join(sorted(table["architecture"].unique())) or "none"
        return placeholder(path, title, f"this run has one architecture only ({found}): run both to compare them")
    return _save(architectures_figure(table, run.power_measured), path)


def architectures_figure(table: pd.DataFrame, power_measured: bool) -> Figure:
    """Latency and, where measured, each phase's energy figure (J per prompt token, per output token or per
    request, named on the panel's rows) with its ± 95 % error bar where known; a bar resting on too few sensor
    updates is hatched in red."""
    title = "Traditional vs disaggregated, same workloads"
    both = table.groupby("workload_id")["architecture"].nunique()
    shared = sorted(both[both > 1].index)
    metrics = {"median_ttft_ms": "TTFT p50 (ms)", "median_tpot_ms": "TPOT p50 (ms)", "median_e2el_ms": "E2E p50 (ms)"}
    energy, error, short = "phase_energy", "phase_energy_pm", "phase_short"
    table = table.copy()
    figures = [PHASE_ENERGY.get(phase, ("", ""))[0] for phase in table["phase"]]
    table[energy] = [row.get(key) for key, (_, row) in zip(figures, table.iterrows(), strict=True)]
    table[error] = [row.get(f"{key}{ERROR_SUFFIX}") for key, (_, row) in zip(figures, table.iterrows(), strict=True)]
    table[short] = table["short_window"].notna().astype(float)
    figure, axes = plt.subplots(1, len(metrics) + 1, figsize=(WIDE[0], 5.0), layout="constrained")
    figure.suptitle(title)
    pivot = table[table["workload_id"].isin(shared)].pivot_table(
        index="workload_id", columns="architecture", values=[*metrics, energy, error, short], aggfunc="first"
    )
    drawn = 0
    for axis, (metric, label) in zip(axes, [*metrics.items(), (energy, "energy of the phase (bars: 95 %)")],
                                     strict=True):  # fmt: skip
        if metric == energy and not power_measured:
            _no_panel(axis, label, "power not measured")
            continue
        values = _pivoted(pivot, metric, shared)
        axis.set_title(label, fontsize=10)
        if values.empty or values.isna().all().all():
            axis.text(0.5, 0.5, "no value", ha="center", va="center", transform=axis.transAxes)
            axis.set_xticks([])
            axis.set_yticks([])
            continue
        colors = [ARCHITECTURE_COLORS.get(str(c)) for c in values.columns]
        if metric == energy:
            errors = _pivoted(pivot, error, shared).reindex(columns=values.columns)
            xerr = None if errors.isna().all().all() else errors
            values.plot.barh(ax=axis, color=colors, legend=False, xerr=xerr, capsize=3)
            _hatch_short_bars(axis, _pivoted(pivot, short, shared).reindex(columns=values.columns))
            axis.set_yticklabels([PHASE_ENERGY.get(str(w).split()[0], ("", "?"))[1] for w in shared], fontsize=8)
            axis.yaxis.tick_right()
        else:
            values.plot.barh(ax=axis, color=colors, legend=False)
        axis.set_ylabel("")
        if metric != energy and drawn:
            axis.set_yticklabels([])
        elif metric != energy:  # the first panel drawn names the workloads and the architectures
            axis.tick_params(axis="y", labelsize=8)
            axis.legend(fontsize=8)
        drawn += 1
    return figure


def _pivoted(pivot: pd.DataFrame, metric: str, shared: list[str]) -> pd.DataFrame:
    """One metric's workloads x architectures, in the shared workloads' order; empty where no value exists."""
    if metric not in pivot.columns.get_level_values(0):
        return pd.DataFrame()
    return pivot[metric].reindex(shared)


def _hatch_short_bars(axis: Any, short: pd.DataFrame) -> None:
    """pandas draws one bar container per column (architecture), one bar per row (workload)."""
    if short.empty:
        return
    hatched = False
    bars = [container for container in axis.containers if hasattr(container, "patches")]
    for container, column in zip(bars, short.columns, strict=False):
        for patch, flag in zip(container.patches, short[column].tolist(), strict=False):
            if flag == 1.0:
                patch.set_hatch("///")
                patch.set_edgecolor(SHORT_WINDOW_COLOR)
                hatched = True
    if hatched:
        from matplotlib.patches import Patch

        key = Patch(facecolor="white", edgecolor=SHORT_WINDOW_COLOR, hatch="///", label=SHORT_WINDOW_LABEL)
        axis.legend(handles=[key], fontsize=7, loc="lower right")


def _short(benchmark: BenchmarkResult) -> str:
    architecture = {"traditional": "trad", "disaggregated": "disagg"}.get(benchmark.architecture, "?")
    return f"{architecture} {benchmark.phase} {workload_id(benchmark.workload)}"


def dvfs_groups(analysis: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The DVFS analysis groups with only their points that have both energy and latency (a missing latency stays
    missing, it is not drawn at zero), and only the groups left with a point."""
    groups = [
        {**group, "points": [p for p in group["points"] if p["energy_j"] is not None and p["latency_ms"] is not None]}
        for group in analysis
    ]
    return [group for group in groups if group["points"]]


def dvfs_tradeoff(run: Run, path: Path) -> Path:
    """Energy per token against latency for every DVFS setting, one panel per phase, Pareto front joined. A
    setting missing its energy or its latency is left out, never drawn at zero."""
    title = "DVFS: energy against latency per setting"
    measured = dvfs_groups((run.header.get("dvfs") or {}).get("analysis") or [])
    if not measured:
        why = run.power_reason if not run.power_measured else "no benchmark has both energy and latency"
        return placeholder(path, title, f"{why}: the settings cannot be compared by energy")
    phases = sorted({group["phase"] for group in measured})
    figure, axes = plt.subplots(1, len(phases), figsize=WIDE, layout="constrained", squeeze=False)
    figure.suptitle(title)
    for axis, phase in zip(axes[0], phases, strict=True):
        groups = [group for group in measured if group["phase"] == phase]
        for group in groups:
            points = group["points"]
            label = f"{group.get('topology') or group['architecture']} {group['workload']}"  # older runs: none
            dots = axis.scatter([p["latency_ms"] for p in points], [p["energy_j"] for p in points], label=label)
            color = dots.get_facecolor()[0]  # one colour per topology and workload: 2p2d and 1p3d are told apart
            front = sorted((p for p in points if p["pareto"]), key=lambda p: p["latency_ms"])
            axis.plot([p["latency_ms"] for p in front], [p["energy_j"] for p in front], color=color, alpha=0.5)
            for point in points:
                axis.annotate(point["setting"], (point["latency_ms"], point["energy_j"]), fontsize=7)
        axis.set_title(phase, fontsize=10)
        axis.set_xlabel(groups[0]["latency_metric"])
        axis.set_ylabel(groups[0]["energy_metric"])
        axis.legend(fontsize=7)
    return _save(figure, path)


PANEL_TEXT_CHARS = 28


def _no_panel(axis: Any, title: str, why: str) -> None:
    """A panel that says why it is empty; the text is wrapped to the panel (``wrap=True`` wraps to the figure)."""
    axis.set_title(title, fontsize=10)
    text = textwrap.fill(why, PANEL_TEXT_CHARS)
    axis.text(0.5, 0.5, text, ha="center", va="center", transform=axis.transAxes, color="dimgray", fontsize=9)
    axis.set_xticks([])
    axis.set_yticks([])

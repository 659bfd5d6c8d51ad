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
from matplotlib.ticker import FuncFormatter, LogFormatter  # noqa: E402

from plugin.load.workload import SERVING, workload_id  # noqa: E402
from plugin.report.data import Run, ServingPoint, serving_points  # noqa: E402
from plugin.results.schema import BenchmarkResult, PowerWindow  # noqa: E402

DPI = 100
WIDE = (11.0, 4.2)
PREFILL_COLOR, DECODE_COLOR, ROUND_COLOR = "tab:orange", "tab:blue", "dimgray"
ARCHITECTURE_COLORS = {"traditional": "tab:green", "disaggregated": "tab:purple"}
PHASE_ENERGY = {
    "prefill": ("j_per_prompt_token", "J/prompt tok"),
    "decode": ("j_per_output_token", "J/output tok"),
    "e2e": ("j_per_request", "J/request"),
}
"""The one energy figure of each phase (``plugin.analysis.benchmark.energy_figures``) and its unit."""
AT_ACHIEVED_RATE = "all at once / closed loop: at achieved rate"
"""The legend's words for a serving point without an offered rate, drawn hollow at its achieved throughput."""
PERCENTILE_STYLES = {"p50": "-", "p99": "--"}


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


def timeline(run: Run, benchmark: BenchmarkResult, path: Path) -> Path:
    """Each GPU's power and SM clock from the first round's window to the last's, with every request's prefill
    and decode shaded and the rounds' edges marked; without power data, the requests' phases alone, and the
    reason in the title."""
    requests = run.requests(benchmark)
    windows = benchmark.power.windows
    if windows:
        start_s, end_s = windows[0].start_s, windows[-1].end_s
    else:
        start_s = float(requests["send_s"].min()) if len(requests) else 0.0
        end_s = float(requests["end_s"].max()) if len(requests) else 1.0
    gpus = list(dict.fromkeys(gpu for window in windows for gpu in window.gpus)) if benchmark.power.measured else []
    frames: dict[str, pd.DataFrame] = {}
    for gpu in gpus:
        frame = run.samples(gpu, start_s, end_s)
        if frame is not None and len(frame):
            frames[gpu] = frame
    title = benchmark.name
    if not frames:
        reason = benchmark.power.unmeasured_reason or run.power_reason
        return _request_phases(requests, windows, start_s, path, f"{title}\n{reason}")
    figsize = (WIDE[0], 2.8 * len(frames) + 0.6)
    figure, axes = plt.subplots(len(frames), 1, figsize=figsize, layout="constrained", squeeze=False)
    figure.suptitle(title)
    roles = benchmark.power.gpu_roles
    for axis, (gpu, frame) in zip(axes[:, 0], frames.items(), strict=True):
        watts = frame["power_instant_w"].fillna(frame["power_avg_w"])
        axis.plot(frame["t_s"] - start_s, watts, color="black", label="power (W)")
        axis.set_ylabel("power (W)")
        axis.set_title(f"GPU {gpu} ({roles.get(gpu, 'role unknown')})", fontsize=10)
        clock = axis.twinx()
        clock.plot(frame["t_s"] - start_s, frame["sm_clock_mhz"], color="tab:red", alpha=0.6, label="SM clock")
        clock.set_ylabel("SM clock (MHz)", color="tab:red")
        _shade_phases(axis, requests, start_s)
        handles = _mark_rounds(axis, windows, start_s)
        axis.set_xlabel("time since the first round began (s)")
        axis.legend(loc="upper left", handles=[*axis.get_legend_handles_labels()[0], *_phase_handles(), *handles])
    return _save(figure, path)


def _request_phases(
    requests: pd.DataFrame, windows: tuple[PowerWindow, ...], start_s: float, path: Path, title: str
) -> Path:
    figure, axis = plt.subplots(figsize=WIDE, layout="constrained")
    figure.suptitle(title, fontsize=10)
    for row, request in enumerate(requests.itertuples()):
        if request.first_token_s is None or pd.isna(request.first_token_s):
            continue
        send, first, end = request.send_s - start_s, request.first_token_s - start_s, request.end_s - start_s
        axis.barh(row, first - send, left=send, color=PREFILL_COLOR)
        axis.barh(row, end - first, left=first, color=DECODE_COLOR)
    handles = _mark_rounds(axis, windows, start_s)
    axis.set_xlabel("time since the first round began (s)")
    axis.set_ylabel("request")
    axis.legend(handles=[*_phase_handles(), *handles], loc="lower right")
    return _save(figure, path)


def _shade_phases(axis: Any, requests: pd.DataFrame, start_s: float) -> None:
    for request in requests.itertuples():
        if request.first_token_s is None or pd.isna(request.first_token_s):
            continue
        axis.axvspan(request.send_s - start_s, request.first_token_s - start_s, color=PREFILL_COLOR, alpha=0.12)
        axis.axvspan(request.first_token_s - start_s, request.end_s - start_s, color=DECODE_COLOR, alpha=0.08)


def _mark_rounds(axis: Any, windows: tuple[PowerWindow, ...], start_s: float) -> list[Any]:
    """Dashed lines where each round's power window began and ended, when there is more than one round."""
    if len(windows) < 2:
        return []
    from matplotlib.lines import Line2D

    for window in windows:
        for edge_s in (window.start_s, window.end_s):
            axis.axvline(edge_s - start_s, color=ROUND_COLOR, linestyle="--", linewidth=0.8)
    return [Line2D([], [], color=ROUND_COLOR, linestyle="--", linewidth=0.8, label="round window")]


def _phase_handles() -> list[Any]:
    from matplotlib.patches import Patch

    return [Patch(color=PREFILL_COLOR, label="prefill"), Patch(color=DECODE_COLOR, label="decode")]


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
    length (decode benchmarks), one line per architecture and concurrency."""
    title = "Energy per token"
    if not run.power_measured:
        return placeholder(path, title, run.power_reason)
    table = run.table()
    figure, (prefill_axis, decode_axis) = plt.subplots(1, 2, figsize=WIDE, layout="constrained")
    figure.suptitle(title)
    for axis, phase, x, y, label in (
        (prefill_axis, "prefill", "input_len", "j_per_prompt_token", "J per prompt token"),
        (decode_axis, "decode", "output_len", "j_per_output_token", "J per output token"),
    ):
        rows = table[(table["phase"] == phase) & table[y].notna()]
        for (architecture, concurrency), group in rows.groupby(["architecture", "concurrency"]):
            group = group.sort_values(x)
            axis.plot(group[x], group[y], marker="o", label=f"{architecture}, c={concurrency}",
                      color=ARCHITECTURE_COLORS.get(str(architecture)))  # fmt: skip
        axis.set_xlabel(f"{x.replace('_', ' ')} (tokens)")
        axis.set_ylabel(label)
        axis.set_title(f"{phase} benchmarks", fontsize=10)
        if len(rows):
            axis.legend(fontsize=8)
        else:
            axis.text(0.5, 0.5, f"no {phase} benchmark with energy", ha="center", transform=axis.transAxes)
    return _save(figure, path)


def architectures(run: Run, path: Path) -> Path:
    """Traditional against disaggregated on the phase workloads both ran: latency and, where measured, each
    phase's energy figure (J per prompt token, per output token or per request, named on the panel's rows).
    Serving benchmarks are compared on their own curves against the offered rate (``serving_curves``)."""
    title = "Traditional vs disaggregated, same workloads"
    table = run.table()
    table = table[table["phase"] != SERVING].copy()
    both = table.groupby("workload_id")["architecture"].nunique()
    shared = sorted(both[both > 1].index)
    if not shared:
        if not len(table) and run.serving:
            return placeholder(path, title, "this run has serving benchmarks only: see the Serving section")
        found = ", ".join(sorted(table["architecture"].unique())) or "none"
        return placeholder(path, title, f"this run has one architecture only ({found}): run both to compare them")
    metrics = {"median_ttft_ms": "TTFT p50 (ms)", "median_tpot_ms": "TPOT p50 (ms)", "median_e2el_ms": "E2E p50 (ms)"}
    energy = "phase_energy"
    table[energy] = [row.get(PHASE_ENERGY.get(row["phase"], ("", ""))[0]) for _, row in table.iterrows()]
    figure, axes = plt.subplots(1, len(metrics) + 1, figsize=(WIDE[0], 5.0), layout="constrained")
    figure.suptitle(title)
    pivot = table[table["workload_id"].isin(shared)].pivot_table(
        index="workload_id", columns="architecture", values=[*metrics, energy], aggfunc="first"
    )
    drawn = 0
    for axis, (metric, label) in zip(axes, [*metrics.items(), (energy, "energy of the phase")], strict=True):
        if metric == energy and not run.power_measured:
            axis.text(0.5, 0.5, "power not measured", ha="center", va="center", transform=axis.transAxes)
            axis.set_title(label, fontsize=10)
            axis.set_xticks([])
            axis.set_yticks([])
            continue
        values = pivot[metric].reindex(shared) if metric in pivot.columns.get_level_values(0) else pd.DataFrame()
        axis.set_title(label, fontsize=10)
        if values.empty or values.isna().all().all():
            axis.text(0.5, 0.5, "no value", ha="center", va="center", transform=axis.transAxes)
            axis.set_xticks([])
            axis.set_yticks([])
            continue
        values.plot.barh(ax=axis, color=[ARCHITECTURE_COLORS.get(str(c)) for c in values.columns], legend=False)
        axis.set_ylabel("")
        if metric == energy:
            axis.set_yticklabels([PHASE_ENERGY.get(str(w).split()[0], ("", "?"))[1] for w in shared], fontsize=8)
            axis.yaxis.tick_right()
        elif drawn:
            axis.set_yticklabels([])
        else:  # the first panel drawn names the workloads and the architectures
            axis.tick_params(axis="y", labelsize=8)
            axis.legend(fontsize=8)
        drawn += 1
    return _save(figure, path)


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
            label = f"{group['architecture']} {group['workload']}"
            color = ARCHITECTURE_COLORS.get(group["architecture"])
            axis.scatter([p["latency_ms"] for p in points], [p["energy_j"] for p in points], color=color, label=label)
            front = sorted((p for p in points if p["pareto"]), key=lambda p: p["latency_ms"])
            axis.plot([p["latency_ms"] for p in front], [p["energy_j"] for p in front], color=color, alpha=0.5)
            for point in points:
                axis.annotate(point["setting"], (point["latency_ms"], point["energy_j"]), fontsize=7)
        axis.set_title(phase, fontsize=10)
        axis.set_xlabel(groups[0]["latency_metric"])
        axis.set_ylabel(groups[0]["energy_metric"])
        axis.legend(fontsize=7)
    return _save(figure, path)


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
    key.legend(handles=_serving_handles(colors, any(not point.offered for point in points)), loc="center", fontsize=9)
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


def _diagonal(axis: Any, points: list[ServingPoint]) -> None:
    """y = x, where achieved throughput equals the offered rate, across the panel's points."""
    values = [p.x_rps for p in points] + [
        p.values["request_throughput"] for p in points if "request_throughput" in p.values
    ]
    low, high = min(values), max(values)
    axis.plot([low, high], [low, high], color="gray", linestyle=":", label="achieved = offered")


PANEL_TEXT_CHARS = 28


def _no_panel(axis: Any, title: str, why: str) -> None:
    """A panel that says why it is empty; the text is wrapped to the panel (``wrap=True`` wraps to the figure)."""
    axis.set_title(title, fontsize=10)
    text = textwrap.fill(why, PANEL_TEXT_CHARS)
    axis.text(0.5, 0.5, text, ha="center", va="center", transform=axis.transAxes, color="dimgray", fontsize=9)
    axis.set_xticks([])
    axis.set_yticks([])


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

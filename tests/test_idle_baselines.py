"""The run's idle baselines (``plugin.fixtures``): one before any server, one per topology and DVFS setting with
its servers loaded, each window naming the one it subtracted. A fake NVML whose idle power rises as servers would
load (no context, then topology A's servers, then topology B's) shows which baseline each window used; a stored
run from before the baselines still loads."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from plugin.idle_baselines import measure_baseline, use_loaded_baseline, write_session_power
from plugin.power import Sampler
from plugin.power.devices import Inventory
from plugin.power.nvml import NvmlBackend
from plugin.records.windows import LOADED, NO_BASELINE, NO_CONTEXT, RUN_BASELINE, BaselineOrigin, GpuWindow
from plugin.results.store import load_run
from plugin.session import RunSession
from tests.fake_nvml import FakeGpu, FakeNvml, Step
from tests.settings import make_settings

STORED = Path(__file__).parent / "data" / "run-fake-nvml"
# Idle power per GPU: no context until 0.5 s, then topology A's servers (GPU 1 unused by A), then topology B's.
TRACE_W = {0: (80.0, 120.0, 150.0), 1: (70.0, 70.0, 140.0)}
A_FROM_S, B_FROM_S = 0.5, 1.5


def fake_gpus() -> FakeNvml:
    def gpu(watts: tuple[float, float, float]) -> FakeGpu:
        no_context, a, b = watts
        steps = (Step(A_FROM_S, no_context), Step(B_FROM_S - A_FROM_S, a), Step(1.0, b))
        return FakeGpu(steps, update_interval_s=0.0)  # an exact counter

    return FakeNvml([gpu(TRACE_W[0]), gpu(TRACE_W[1])])


def window_of(sampler: Sampler, name: str) -> tuple[GpuWindow, ...]:
    sampler.begin_window(name)
    time.sleep(0.05)
    return sampler.end_window(name).gpus


def test_each_topology_and_setting_subtracts_its_own_loaded_baseline(tmp_path: Path) -> None:
    fake = fake_gpus()

    def wait_until(elapsed_s: float) -> None:
        time.sleep(max(0.0, elapsed_s - fake.elapsed_s()))

    session = RunSession(make_settings(reports_dir=tmp_path, idle_baseline_s=0.2), Inventory((), None, None), [])
    folder = session.open_run(None)
    with Sampler(NvmlBackend(nvml=fake.module()), folder, period_ms=5.0) as sampler:
        wait_until(0.05)
        session.idle_no_context = measure_baseline(session, sampler, NO_CONTEXT)
        wait_until(A_FROM_S + 0.05)
        use_loaded_baseline(session, sampler, "dp:1", None)
        first_a = window_of(sampler, "A first benchmark")
        use_loaded_baseline(session, sampler, "dp:1", None)  # the same pair: measured once
        second_a = window_of(sampler, "A second benchmark")
        wait_until(B_FROM_S + 0.05)
        use_loaded_baseline(session, sampler, "1p1d", "sm1500")
        b = window_of(sampler, "B")
        write_session_power(session, sampler)
    power = json.loads((folder / "results.json").read_text())["power"]

    no_context = power["idle_baseline_no_context"]
    idle_w = [(gpu["gpu"], gpu["mean_power_w"]) for gpu in no_context]
    assert idle_w == [(gpu, pytest.approx(TRACE_W[gpu][0], rel=0.02)) for gpu in (0, 1)]
    loaded = power["idle_baselines_loaded"]
    assert [(entry["topology"], entry["dvfs_setting"]) for entry in loaded] == [("dp:1", None), ("1p1d", "sm1500")]
    origins = [
        BaselineOrigin(entry["topology"], entry["dvfs_setting"], entry["start_s"], entry["end_s"]) for entry in loaded
    ]
    for windows, origin, level in ((first_a, origins[0], 1), (second_a, origins[0], 1), (b, origins[1], 2)):
        assert [window.idle_baseline for window in windows] == [LOADED, LOADED]
        assert [window.idle_baseline_origin for window in windows] == [origin, origin]
        assert [window.idle_power_w for window in windows] == [
            pytest.approx(TRACE_W[gpu][level], rel=0.02) for gpu in (0, 1)
        ]
        assert [window.energy_above_idle_j for window in windows] == [pytest.approx(0.0, abs=0.5)] * 2
    # Each loaded baseline's own window is above the no-context one: what the topology's idle servers cost.
    a_gpus = {gpu["gpu"]: gpu for gpu in loaded[0]["gpus"]}
    assert a_gpus[0]["idle_baseline"] == NO_CONTEXT
    servers_w = TRACE_W[0][1] - TRACE_W[0][0]
    assert a_gpus[0]["energy_above_idle_j"] == pytest.approx(
        servers_w * (origins[0].end_s - origins[0].start_s), rel=0.1
    )
    assert all(gpu["idle_baseline"] == NO_BASELINE for gpu in no_context)


def test_without_a_baseline_the_windows_say_none(tmp_path: Path) -> None:
    session = RunSession(make_settings(reports_dir=tmp_path, idle_baseline_s=0.0), Inventory((), None, None), [])
    folder = session.open_run(None)
    with Sampler(NvmlBackend(nvml=FakeNvml().module()), folder, period_ms=5.0) as sampler:
        session.idle_no_context = measure_baseline(session, sampler, NO_CONTEXT)
        use_loaded_baseline(session, sampler, "dp:1", None)
        windows = window_of(sampler, "w")
        write_session_power(session, sampler)
    power = json.loads((folder / "results.json").read_text())["power"]
    assert (power["idle_baseline_no_context"], power["idle_baselines_loaded"]) == (None, [])
    assert [(w.idle_baseline, w.idle_power_w, w.energy_above_idle_j) for w in windows] == [(NO_BASELINE, None, None)]


def test_a_stored_run_from_before_reads_as_the_one_run_baseline() -> None:
    run = load_run(STORED)
    windows = [gpu.window for b in run.benchmarks for window in b.power.windows for gpu in window.gpus.values()]
    assert windows and {(w.idle_baseline, w.idle_baseline_origin) for w in windows} == {(RUN_BASELINE, None)}
    assert "idle_baseline_no_context" not in run.header["power"]


def test_the_run_opens_before_the_first_server_and_learns_the_vllm_version_from_it(tmp_path: Path) -> None:
    """The sampler opens the run (its no-context baseline comes first); the first deployment's version is kept."""
    session = RunSession(make_settings(reports_dir=tmp_path), Inventory((), None, None), [])
    folder = session.open_run(None)
    assert session.open_run("0.32.0") == folder and session.open_run(None) == folder
    assert json.loads((folder / "results.json").read_text())["environment"]["vllm_version"] == "0.32.0"

"""The DVFS code against ``tests/fake_dvfs_nvml.py``, a stand-in NVML that records every set and reset call:
the sweep's order, applying and restoring, clamped and refused settings, the state file for ``kill -9``, the
permission check, and the dry run (no set call at all)."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

import tests.fake_dvfs_nvml as fake
from plugin.analysis.dvfs import analyse
from plugin.dvfs.controller import STATE_FILE, DvfsController, restore_from_state
from plugin.dvfs.plan import DvfsError, DvfsSetting, GpuSetting, sweep
from plugin.dvfs.preflight import preflight
from plugin.options import value_list
from tests.conftest import ROOT

SM_1500 = DvfsSetting(GpuSetting(1500, None, 400), GpuSetting(1500, None, 400))
ONE_GPU = {0: "prefill+decode"}


@pytest.fixture(autouse=True)
def fresh_fake(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    for knob in ("FAKE_NVML_LOG", "FAKE_NVML_NO_PERMISSION", "FAKE_NVML_REFUSE_SM", "FAKE_NVML_GPUS"):
        monkeypatch.delenv(knob, raising=False)
    fake.reset()
    yield
    fake.reset()


@pytest.fixture
def controller(tmp_path: Path) -> Iterator[DvfsController]:
    made = DvfsController(fake, [0, 1], tmp_path)  # type: ignore[arg-type]
    yield made
    made.close()


def names() -> list[tuple[str, int]]:
    return [(call["name"].removeprefix("nvmlDevice"), call["gpu"]) for call in fake.set_calls()]


def test_value_lists_and_ranges() -> None:
    assert value_list("900:1980:180") == (900, 1080, 1260, 1440, 1620, 1800, 1980)
    assert value_list("1980, 1500,1500,900:1000:50") == (1980, 1500, 900, 950, 1000)
    for bad in ("0", "a", "1980:900:10", "900:1000:0", "900:1000", ","):
        with pytest.raises(ValueError):
            value_list(bad)


def test_sweep_order_and_the_disaggregated_cross_product() -> None:
    traditional = sweep("traditional", (1980, 900), (2619,), (700, 400))
    assert [s.id for s in traditional] == [
        "sm1980-mem2619-pl700", "sm1980-mem2619-pl400", "sm900-mem2619-pl700", "sm900-mem2619-pl400",
    ]  # fmt: skip
    crossed = sweep("disaggregated", (), (), (), prefill_sm_clocks=(1980, 1200), decode_sm_clocks=(900, 1980))
    assert [(s.prefill.sm_clock_mhz, s.decode.sm_clock_mhz) for s in crossed] == [
        (1980, 900), (1980, 1980), (1200, 900), (1200, 1980),
    ]  # fmt: skip
    assert [s.id for s in crossed][:2] == ["p-sm1980-d-sm900", "sm1980"]
    shared = sweep("disaggregated", (1980, 900), (), (), shared_gpu=True)
    assert [s.id for s in shared] == ["sm1980", "sm900"]  # one GPU holds one clock


def test_setting_is_applied_read_back_and_restored(controller: DvfsController, tmp_path: Path) -> None:
    setting = DvfsSetting(GpuSetting(1500, 1593, 400), GpuSetting(900, 1593, 400))
    with controller.applied(setting, {0: "prefill", 1: "decode"}) as record:
        assert (tmp_path / STATE_FILE).is_file()  # written before the first change, for `kill -9`
        assert names() == [
            ("SetMemoryLockedClocks", 0), ("SetGpuLockedClocks", 0), ("SetPowerManagementLimit", 0),
            ("SetMemoryLockedClocks", 1), ("SetGpuLockedClocks", 1), ("SetPowerManagementLimit", 1),
        ]  # fmt: skip
        assert record["gpus"]["0"]["readback"] == {"sm_clock_mhz": 1500, "mem_clock_mhz": 1593, "power_limit_w": 400}
        assert record["gpus"]["1"]["readback"]["sm_clock_mhz"] == 900
        assert record["refused"] == [] and record["clamped"] == []
    restored = names()[6:]
    assert sorted(restored) == sorted(
        [(f"Reset{k}LockedClocks", g) for k in ("Gpu", "Memory") for g in (0, 1)]
        + [("SetPowerManagementLimit", 0), ("SetPowerManagementLimit", 1)]
    )
    assert all(gpu.locked_sm is None and gpu.locked_mem is None and gpu.limit_mw == 700_000 for gpu in fake.STATE.gpus)
    assert not (tmp_path / STATE_FILE).exists()


def test_restored_when_the_benchmark_fails(controller: DvfsController) -> None:
    with pytest.raises(RuntimeError, match="benchmark failed"):
        with controller.applied(SM_1500, ONE_GPU):
            raise RuntimeError("benchmark failed")
    assert fake.STATE.gpus[0].locked_sm is None and fake.STATE.gpus[0].limit_mw == 700_000
    assert names()[-2:] in (
        [("ResetGpuLockedClocks", 0), ("SetPowerManagementLimit", 0)],
        [("SetPowerManagementLimit", 0), ("ResetGpuLockedClocks", 0)],
    )


def test_clamped_and_refused_settings_are_reported(controller: DvfsController, monkeypatch: pytest.MonkeyPatch) -> None:
    clamped = DvfsSetting(GpuSetting(1505), GpuSetting(1505))
    with controller.applied(clamped, ONE_GPU) as record:
        assert record["gpus"]["0"]["readback"]["sm_clock_mhz"] == 1500
        assert record["clamped"] == [
            "GPU 0: SM clock 1505 MHz is between supported steps; the driver clamps it (expected 1500 MHz)"
        ]
    monkeypatch.setenv("FAKE_NVML_REFUSE_SM", "900")
    with controller.applied(DvfsSetting(GpuSetting(900), GpuSetting(900)), ONE_GPU) as record:
        assert record["refused"] == ["GPU 0: sm_clock 900: Not Supported"]
    assert fake.STATE.gpus[0].locked_sm is None


def test_out_of_range_and_no_permission_stop_the_run_before_anything_changes(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    plan = [("traditional", [DvfsSetting(GpuSetting(3000), GpuSetting(3000))], ONE_GPU)]
    with pytest.raises(DvfsError, match="SM clock 3000 MHz is outside 345 to 1980 MHz"):
        preflight(fake, plan, False, tmp_path)  # type: ignore[arg-type]
    with pytest.raises(DvfsError, match="power limit 900 W is outside 200 to 700 W"):
        preflight(
            fake, [("traditional", [DvfsSetting(GpuSetting(None, None, 900), GpuSetting())], ONE_GPU)], False, tmp_path
        )  # type: ignore[arg-type]
    assert fake.set_calls() == []
    monkeypatch.setenv("FAKE_NVML_NO_PERMISSION", "1")
    with pytest.raises(DvfsError, match="no permission to change clocks or power limits"):
        preflight(fake, [("traditional", [SM_1500], ONE_GPU)], False, tmp_path)  # type: ignore[arg-type]


def test_dry_run_makes_no_set_call(tmp_path: Path) -> None:
    plan = [("traditional", [SM_1500, DvfsSetting(GpuSetting(1505), GpuSetting(1505))], ONE_GPU)]
    lines = preflight(fake, plan, True, tmp_path)  # type: ignore[arg-type]
    assert lines[0] == "traditional sm1500-pl400: GPU 0 (prefill+decode): sm1500-pl400"
    assert "clamps it (expected 1500 MHz)" in lines[1]
    assert fake.set_calls() == []


def test_restore_command_after_a_crash(tmp_path: Path) -> None:
    crashed = DvfsController(fake, [0], tmp_path)  # type: ignore[arg-type]
    left_applied = crashed.applied(SM_1500, ONE_GPU)
    left_applied.__enter__()  # applied, then never restored: as after `kill -9`
    assert fake.STATE.gpus[0].locked_sm == (1500, 1500)
    with pytest.raises(DvfsError, match="an earlier run left GPU settings changed; restore them first"):
        DvfsController(fake, [0], tmp_path)  # type: ignore[arg-type]  # its "found" limit would be the changed one
    done = restore_from_state(fake, tmp_path)  # type: ignore[arg-type]
    assert done == ["GPU 0: reset power_limit, sm_clock (power limit 700 W)"]
    assert fake.STATE.gpus[0].locked_sm is None and fake.STATE.gpus[0].limit_mw == 700_000
    assert not (tmp_path / STATE_FILE).exists()
    with pytest.raises(DvfsError, match="nothing recorded to restore"):
        restore_from_state(fake, tmp_path)  # type: ignore[arg-type]


def test_restored_at_interpreter_exit(tmp_path: Path) -> None:
    """A process that leaves a setting applied and exits without unwinding it still restores it (atexit)."""
    log = tmp_path / "calls.jsonl"
    script = (
        "import tests.fake_dvfs_nvml as fake\n"
        "from pathlib import Path\n"
        "from plugin.dvfs.controller import DvfsController\nfrom plugin.dvfs.plan import DvfsSetting, GpuSetting\n"
        f"controller = DvfsController(fake, [0], Path({str(tmp_path)!r}))\n"
        "left_applied = controller.applied(DvfsSetting(GpuSetting(1200), GpuSetting(1200)), {0: 'decode'})\n"
        "left_applied.__enter__()\n"
        "print(fake.STATE.gpus[0].locked_sm)\n"
    )
    env = {"PATH": "/usr/bin:/bin", "FAKE_NVML_LOG": str(log), "PYTHONPATH": str(ROOT)}
    done = subprocess.run([sys.executable, "-c", script], check=True, env=env, cwd=ROOT, capture_output=True, text=True)
    assert done.stdout.strip() == "(1200, 1200)"  # still applied when the script's last line ran
    calls = [json.loads(line)["name"] for line in log.read_text().splitlines()]
    assert calls == ["nvmlDeviceSetGpuLockedClocks", "nvmlDeviceResetGpuLockedClocks"]


def test_analysis_finds_the_pareto_front_and_the_best_setting_under_the_target() -> None:
    def entry(setting: str, ttft: float, energy: float | None) -> dict[str, object]:
        return {
            "name": f"test_prefill[{setting}]", "architecture": "traditional", "phase": "prefill",
            "workload": {"input_len": 512, "output_len": 1, "concurrency": 1}, "dvfs": {"setting": setting},
            "summary": {"median_ttft_ms": ttft, "median_tbt_ms": None, "energy_per_prompt_token_j": energy},
        }  # fmt: skip

    entries = [
        entry("sm1980", 50, 0.30),
        entry("sm1500", 60, 0.25),
        entry("sm1200", 80, 0.26),
        entry("sm900", 100, 0.20),
    ]
    (result,) = analyse(entries, slo_ttft_ms=90, slo_tbt_ms=None)
    assert {p["setting"]: p["pareto"] for p in result["points"]} == {
        "sm1980": True, "sm1500": True, "sm1200": False, "sm900": True,
    }  # fmt: skip
    assert result["best_setting"] == "sm1500"  # sm900 uses less energy but misses the 90 ms target
    (unmeasured,) = analyse([entry("sm1980", 50, None), entry("sm900", 90, None)], None, None)
    assert unmeasured["best_setting"] is None
    assert unmeasured["why_no_best"] == "power not measured: no energy to compare the settings by"

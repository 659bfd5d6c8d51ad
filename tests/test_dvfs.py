"""The DVFS code against ``tests/fake_nvml.py``, the fake NVML that records every set and reset call: the
sweep's order, applying and restoring, clamped and refused settings, the state file for ``kill -9``, the
permission check, and the dry run (no set call at all)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from plugin.analysis.dvfs import analyse
from plugin.dvfs.controller import STATE_FILE, DvfsController, restore_from_state
from plugin.dvfs.plan import DvfsError, DvfsSetting, GpuSetting, sweep
from plugin.dvfs.preflight import preflight
from plugin.option_values import DEFAULT_SLO_ATTAINMENT_PCT, GoodputTargets, value_list
from plugin.records.results import BenchmarkPower, BenchmarkResult
from plugin.records.workload import Workload
from tests.conftest import ROOT
from tests.fake_nvml import FakeGpu, FakeNvml, GpuSettings

SM_1500 = DvfsSetting(GpuSetting(1500, None, 400), GpuSetting(1500, None, 400))
ONE_GPU = {0: "prefill+decode"}


@pytest.fixture
def fake() -> FakeNvml:
    """Two H100-like GPUs at their defaults: no clock locked, power limit 700 W."""
    return FakeNvml([FakeGpu(), FakeGpu()])


@pytest.fixture
def controller(fake: FakeNvml, tmp_path: Path) -> Iterator[DvfsController]:
    made = DvfsController(fake.module(), [0, 1], tmp_path)
    yield made
    made.close()


def names(fake: FakeNvml) -> list[tuple[str, int]]:
    return [(call["name"].removeprefix("nvmlDevice"), call["gpu"]) for call in fake.set_calls()]


def at_defaults(fake: FakeNvml, gpus: tuple[int, ...] = (0, 1)) -> bool:
    return all(fake.settings[gpu] == GpuSettings(power_limit_mw=700_000) for gpu in gpus)


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


def test_setting_is_applied_read_back_and_restored(fake: FakeNvml, controller: DvfsController, tmp_path: Path) -> None:
    setting = DvfsSetting(GpuSetting(1500, 1593, 400), GpuSetting(900, 1593, 400))
    with controller.applied(setting, {0: "prefill", 1: "decode"}) as record:
        assert (tmp_path / STATE_FILE).is_file()  # written before the first change, for `kill -9`
        assert names(fake) == [
            ("SetMemoryLockedClocks", 0), ("SetGpuLockedClocks", 0), ("SetPowerManagementLimit", 0),
            ("SetMemoryLockedClocks", 1), ("SetGpuLockedClocks", 1), ("SetPowerManagementLimit", 1),
        ]  # fmt: skip
        assert record["gpus"]["0"]["readback"] == {"sm_clock_mhz": 1500, "mem_clock_mhz": 1593, "power_limit_w": 400}
        assert record["gpus"]["1"]["readback"]["sm_clock_mhz"] == 900
        assert record["refused"] == [] and record["clamped"] == []
    restored = names(fake)[6:]
    assert sorted(restored) == sorted(
        [(f"Reset{k}LockedClocks", g) for k in ("Gpu", "Memory") for g in (0, 1)]
        + [("SetPowerManagementLimit", 0), ("SetPowerManagementLimit", 1)]
    )
    assert at_defaults(fake)
    assert not (tmp_path / STATE_FILE).exists()


def test_restored_when_the_benchmark_fails(fake: FakeNvml, controller: DvfsController) -> None:
    with pytest.raises(RuntimeError, match="benchmark failed"):
        with controller.applied(SM_1500, ONE_GPU):
            raise RuntimeError("benchmark failed")
    assert at_defaults(fake)
    assert names(fake)[-2:] in (
        [("ResetGpuLockedClocks", 0), ("SetPowerManagementLimit", 0)],
        [("SetPowerManagementLimit", 0), ("ResetGpuLockedClocks", 0)],
    )


def test_clamped_and_refused_settings_are_reported(fake: FakeNvml, controller: DvfsController) -> None:
    clamped = DvfsSetting(GpuSetting(1505), GpuSetting(1505))
    with controller.applied(clamped, ONE_GPU) as record:
        assert record["gpus"]["0"]["readback"]["sm_clock_mhz"] == 1500
        assert record["clamped"] == [
            "GPU 0: SM clock 1505 MHz is between supported steps; the driver clamps it (expected 1500 MHz)"
        ]
    fake.refused_sm_mhz = {900}
    with controller.applied(DvfsSetting(GpuSetting(900), GpuSetting(900)), ONE_GPU) as record:
        assert record["refused"] == ["GPU 0: sm_clock 900: Not Supported"]
    assert at_defaults(fake)


def test_out_of_range_and_no_permission_stop_the_run_before_anything_changes(fake: FakeNvml, tmp_path: Path) -> None:
    plan = [("traditional", [DvfsSetting(GpuSetting(3000), GpuSetting(3000))], ONE_GPU)]
    with pytest.raises(DvfsError, match="SM clock 3000 MHz is outside 345 to 1980 MHz"):
        preflight(fake.module(), plan, False, tmp_path)
    high_limit = [("traditional", [DvfsSetting(GpuSetting(None, None, 900), GpuSetting())], ONE_GPU)]
    with pytest.raises(DvfsError, match="power limit 900 W is outside 200 to 700 W"):
        preflight(fake.module(), high_limit, False, tmp_path)
    assert fake.set_calls() == []
    fake.no_permission = True
    with pytest.raises(DvfsError, match="no permission to change clocks or power limits"):
        preflight(fake.module(), [("traditional", [SM_1500], ONE_GPU)], False, tmp_path)
    assert names(fake) == [("SetPowerManagementLimit", 0)]  # the permission probe, refused
    assert at_defaults(fake)


def test_dry_run_makes_no_set_call(fake: FakeNvml, tmp_path: Path) -> None:
    plan = [("traditional", [SM_1500, DvfsSetting(GpuSetting(1505), GpuSetting(1505))], ONE_GPU)]
    lines = preflight(fake.module(), plan, True, tmp_path)
    assert lines[0] == "traditional sm1500-pl400: GPU 0 (prefill+decode): sm1500-pl400"
    assert "clamps it (expected 1500 MHz)" in lines[1]
    assert fake.set_calls() == []


def test_restore_command_after_a_crash(fake: FakeNvml, tmp_path: Path) -> None:
    crashed = DvfsController(fake.module(), [0], tmp_path)
    left_applied = crashed.applied(SM_1500, ONE_GPU)
    left_applied.__enter__()  # applied, then never restored: as after `kill -9`
    assert fake.settings[0].locked_sm_mhz == (1500, 1500) and fake.settings[0].power_limit_mw == 400_000
    with pytest.raises(DvfsError, match="an earlier run left GPU settings changed; restore them first"):
        DvfsController(fake.module(), [0], tmp_path)  # its "found" limit would be the changed one
    done = restore_from_state(fake.module(), tmp_path)
    assert done == ["GPU 0: reset power_limit, sm_clock (power limit 700 W)"]
    assert at_defaults(fake)
    assert not (tmp_path / STATE_FILE).exists()
    with pytest.raises(DvfsError, match="nothing recorded to restore"):
        restore_from_state(fake.module(), tmp_path)


def test_restored_at_interpreter_exit(tmp_path: Path) -> None:
    """A process that leaves a setting applied and exits without unwinding it still restores it (atexit). The
    fake is the module itself here, as ``PD_ENERGY_BENCH_NVML_MODULE=tests.fake_nvml`` gives it to a run."""
    log = tmp_path / "calls.jsonl"
    script = (
        "import tests.fake_nvml as fake\n"
        "from pathlib import Path\n"
        "from plugin.dvfs.controller import DvfsController\nfrom plugin.dvfs.plan import DvfsSetting, GpuSetting\n"
        f"controller = DvfsController(fake, [0], Path({str(tmp_path)!r}))\n"
        "left_applied = controller.applied(DvfsSetting(GpuSetting(1200), GpuSetting(1200)), {0: 'decode'})\n"
        "left_applied.__enter__()\n"
        "print(fake.module_fake().settings[0].locked_sm_mhz)\n"
    )
    env = {"PATH": "/usr/bin:/bin", "FAKE_NVML_LOG": str(log), "PYTHONPATH": str(ROOT)}
    done = subprocess.run([sys.executable, "-c", script], check=True, env=env, cwd=ROOT, capture_output=True, text=True)
    assert done.stdout.strip() == "(1200, 1200)"  # still applied when the script's last line ran
    calls = [json.loads(line)["name"] for line in log.read_text().splitlines()]
    assert calls == ["nvmlDeviceSetGpuLockedClocks", "nvmlDeviceResetGpuLockedClocks"]


def bench(phase: str, setting: str, **summary: float | None) -> BenchmarkResult:
    """A benchmark of one DVFS setting whose summary holds only the figures the analysis reads."""
    workload = {"prefill": Workload("prefill", 512, 1, 1, 4), "decode": Workload("decode", 32, 256, 1, 4)}.get(
        phase, Workload(phase, 512, 128, 1, 10)
    )
    power = BenchmarkPower(False, "none", "power not measured", {}, None, None, None, None, None, (), ())
    return BenchmarkResult(
        id=f"test_{phase}[{setting}]", name=f"test_{phase}[{setting}]", architecture="traditional", phase=phase,
        workload=workload, summary=summary, rounds=(), power=power, dvfs={"setting": setting}, requests_file="",
    )  # fmt: skip


def judged(phase: str, setting: str, good: int, requests: int, **summary: float | None) -> BenchmarkResult:
    """A benchmark judged on goodput targets: ``good`` of ``requests`` met them."""
    return bench(phase, setting, slo_attainment_pct=100.0 * good / requests, good_requests=good, requests=requests,
                 **summary)  # fmt: skip


def by_phase(analyses: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {entry["phase"]: entry for entry in analyses}


def test_analysis_finds_the_pareto_front_and_the_best_setting_under_the_median_targets() -> None:
    """Without goodput targets: --slo-ttft-ms bounds prefill's median TTFT, --slo-tbt-ms decode's median TBT."""
    prefill = [
        bench("prefill", "sm1980", median_ttft_ms=50, energy_per_prompt_token_j=0.30),
        bench("prefill", "sm1500", median_ttft_ms=60, energy_per_prompt_token_j=0.25),
        bench("prefill", "sm1200", median_ttft_ms=80, energy_per_prompt_token_j=0.26),
        bench("prefill", "sm900", median_ttft_ms=100, energy_per_prompt_token_j=0.20),
    ]
    decode = [
        bench("decode", "sm1980", median_tbt_ms=10, energy_per_output_token_j=0.9),
        bench("decode", "sm1200", median_tbt_ms=14, energy_per_output_token_j=0.7),
        bench("decode", "sm900", median_tbt_ms=21, energy_per_output_token_j=0.5),  # lowest, over the 20 ms TBT
    ]
    analyses = by_phase(analyse([*prefill, *decode], slo_ttft_ms=90, slo_tbt_ms=20))
    result = analyses["prefill"]
    assert {p["setting"]: p["pareto"] for p in result["points"]} == {
        "sm1980": True, "sm1500": True, "sm1200": False, "sm900": True,
    }  # fmt: skip
    assert result["best_setting"] == "sm1500"  # sm900 uses less energy but misses the 90 ms target
    assert analyses["decode"]["best_setting"] == "sm1200"  # the TTFT target does not apply to decode
    assert analyses["decode"]["energy_metric"] == "energy_per_output_token_j"
    assert result["slo_attainment_min_pct"] is None
    (none_met,) = analyse(prefill, slo_ttft_ms=40, slo_tbt_ms=None)
    assert (none_met["best_setting"], none_met["why_no_best"]) == (None, "no setting met the latency targets")
    (unmeasured,) = analyse(
        [bench("prefill", "sm1980", median_ttft_ms=50), bench("prefill", "sm900", median_ttft_ms=90)], None, None
    )
    assert unmeasured["best_setting"] is None
    assert unmeasured["why_no_best"] == "power not measured: no energy to compare the settings by"


def test_analysis_under_goodput_targets_judges_attainment_by_its_interval_and_energy_per_good_request() -> None:
    """With --goodput: a setting meets the targets when its SLO attainment's Wilson 95 % interval lies at or above
    90 %, misses them below, and is undecided across it; end to end, the best is the lowest energy per good
    request among those that meet them; the median thresholds no longer apply."""
    e2e = [
        judged("e2e", "sm1980", 200, 200, energy_per_good_request_j=3.0, energy_per_request_j=3.0,
               median_e2el_ms=900, median_ttft_ms=40),  # 98-100 %: met
        judged("e2e", "sm1500", 195, 200, energy_per_good_request_j=2.5, energy_per_request_j=2.4,
               median_e2el_ms=1000, median_ttft_ms=60),  # 94-99 %: met; over slo_ttft_ms=50, ignored
        judged("e2e", "sm1200", 180, 200, energy_per_good_request_j=2.6, energy_per_request_j=2.3,
               median_e2el_ms=1100, median_ttft_ms=45),  # 90 % measured, 85-93 %: undecided, dearer than sm1500
        judged("e2e", "sm1000", 10, 10, energy_per_good_request_j=2.3, energy_per_request_j=2.3,
               median_e2el_ms=1200, median_ttft_ms=45),  # all 10 good, 72-100 %: undecided, cheaper than sm1500
        judged("e2e", "sm900", 165, 200, energy_per_good_request_j=2.2, energy_per_request_j=2.0,
               median_e2el_ms=1400, median_ttft_ms=45),  # 77-87 %: missed
        bench("e2e", "sm600", energy_per_good_request_j=1.0, energy_per_request_j=1.0, median_e2el_ms=2000,
              median_ttft_ms=45),  # not judged on the targets at all: never meets them
    ]  # fmt: skip
    prefill = [
        judged("prefill", "sm1980", 200, 200, energy_per_prompt_token_j=0.30, median_ttft_ms=50),
        judged("prefill", "sm1500", 195, 200, energy_per_prompt_token_j=0.25, median_ttft_ms=60),
        judged("prefill", "sm900", 100, 200, energy_per_prompt_token_j=0.20, median_ttft_ms=100),
    ]
    targets = GoodputTargets(ttft_ms=200, tpot_ms=50)
    analyses = by_phase(analyse([*e2e, *prefill], slo_ttft_ms=50, slo_tbt_ms=None, goodput=targets))
    result = analyses["e2e"]
    assert result["energy_metric"] == "energy_per_good_request_j"
    assert result["slo_attainment_min_pct"] == DEFAULT_SLO_ATTAINMENT_PCT == 90.0
    points = {p["setting"]: p for p in result["points"]}
    assert {setting: p["slo_status"] for setting, p in points.items()} == {
        "sm1980": "met", "sm1500": "met", "sm1200": "undecided", "sm1000": "undecided", "sm900": "missed",
        "sm600": None,
    }  # fmt: skip
    assert [setting for setting, p in points.items() if p["meets_slo"]] == ["sm1980", "sm1500"]
    assert points["sm1500"]["energy_j"] == 2.5 and points["sm1500"]["slo_attainment_low_pct"] > 90.0
    assert result["best_setting"] == "sm1500"
    # sm1000 could beat it: the analysis says so, with its interval; sm1200 (dearer) could not
    assert result["undecided_settings"] == ["sm1000"]
    assert result["undecided"] == (
        "undecided: the SLO attainment of sm1000 (72-100 %) straddles 90% (Wilson 95 % interval) with less energy "
        "than sm1500; more requests or rounds decide"
    )
    assert analyses["prefill"]["energy_metric"] == "energy_per_prompt_token_j"  # a phase keeps its per-token energy
    assert analyses["prefill"]["best_setting"] == "sm1500" and analyses["prefill"]["undecided"] is None
    nobody = [judged("e2e", s, 0, 10, energy_per_request_j=2.0) for s in ("sm1980", "sm900", "sm600")]
    (missed,) = analyse(nobody, None, None, goodput=targets)
    assert missed["best_setting"] is None
    assert missed["why_no_best"] == "no setting had at least 90% of its requests meet the goodput targets"
    # --slo-attainment 80: sm1200 (85-93 %) now meets them, sm900 (77-87 %) turns undecided, sm1000 stays so
    lenient = by_phase(analyse(e2e, None, None, goodput=targets, attainment_pct=80.0))["e2e"]
    assert lenient["slo_attainment_min_pct"] == 80.0 and lenient["best_setting"] == "sm1500"
    assert {p["setting"] for p in lenient["points"] if p["meets_slo"]} == {"sm1980", "sm1500", "sm1200"}
    assert lenient["undecided_settings"] == ["sm1000", "sm900"]
    # --slo-attainment 95: nothing is sure to reach it; the cheapest undecided ones are named
    (none_at_95,) = analyse(e2e[1:], None, None, goodput=targets, attainment_pct=95.0)
    assert none_at_95["best_setting"] is None
    assert none_at_95["why_no_best"] == "no setting's SLO attainment is surely at least 95% (Wilson 95 % lower bound)"
    assert none_at_95["undecided_settings"] == ["sm1500", "sm1000"]


def test_the_attainment_interval_is_read_from_the_summary_before_it_is_computed() -> None:
    """A summary that stores its interval is judged by it; one without interval or request counts is undecided
    (how sure its attainment is cannot be said), never met on its point value alone."""
    targets = GoodputTargets(ttft_ms=200)
    stored = bench("e2e", "sm1980", slo_attainment_pct=100.0, slo_attainment_low_pct=91.0,
                   slo_attainment_high_pct=100.0, good_requests=5, requests=5, energy_per_good_request_j=1.0,
                   median_e2el_ms=10)  # fmt: skip
    bare = bench("e2e", "sm900", slo_attainment_pct=100.0, energy_per_good_request_j=0.5, median_e2el_ms=20)
    (result,) = analyse([stored, bare], None, None, goodput=targets)
    points = {p["setting"]: p for p in result["points"]}
    assert (points["sm1980"]["slo_status"], points["sm1980"]["slo_attainment_low_pct"]) == ("met", 91.0)
    assert (points["sm900"]["slo_status"], points["sm900"]["slo_attainment_low_pct"]) == ("undecided", None)
    assert result["best_setting"] == "sm1980"
    assert result["undecided"] == (
        "undecided: the SLO attainment of sm900 (no request count) straddles 90% (Wilson 95 % interval) with less "
        "energy than sm1980; more requests or rounds decide"
    )


def test_each_topology_gets_its_own_front_and_keeps_its_architecture() -> None:
    """2p2d, 1p3d and 3p1d are all disaggregated: each is its own group, not one front of all three."""
    entries = [
        replace(bench("prefill", setting, median_ttft_ms=latency, energy_per_prompt_token_j=energy),
                topology=topology, architecture="disaggregated")
        for topology, scale in (("2p2d", 1.0), ("1p3d", 2.0), ("3p1d", 0.5))
        for setting, latency, energy in (("sm1980", 50.0, 0.30 * scale), ("sm900", 100.0, 0.20 * scale))
    ]  # fmt: skip
    analyses = analyse(entries, slo_ttft_ms=90, slo_tbt_ms=None)
    assert [(a["topology"], a["architecture"], a["best_setting"]) for a in analyses] == [
        ("2p2d", "disaggregated", "sm1980"), ("1p3d", "disaggregated", "sm1980"), ("3p1d", "disaggregated", "sm1980"),
    ]  # fmt: skip
    # one front per topology: each keeps both its settings (pooled, 3p1d's would dominate 1p3d's)
    assert all([p["pareto"] for p in a["points"]] == [True, True] for a in analyses)


def test_a_capacity_search_plans_per_role_clocks_as_a_dry_run_and_changes_nothing(tmp_path: Path) -> None:
    """On lent GPUs a capacity search with per-role clocks runs only as a dry run: each topology's plans (the
    search's candidates) are listed, no GPU setting is touched and no benchmark runs (the NVML stand-in)."""
    log = tmp_path / "calls.jsonl"
    env = {**os.environ, "PD_ENERGY_BENCH_NVML_MODULE": "tests.fake_nvml", "FAKE_NVML_LOG": str(log),
           "PYTHONPATH": str(ROOT)}  # fmt: skip
    done = subprocess.run(
        [sys.executable, "-m", "pytest", str(ROOT / "benchmarks"), "-p", "no:cacheprovider", "-m", "serving",
         f"--reports-dir={tmp_path / 'reports'}", "--topologies=dp:2,1p1d", "--gpus=0,1",
         "--prefill-sm-clocks=1500,900", "--decode-sm-clocks=900", "--request-rate=capacity:2",
         "--goodput", "ttft:200", "--dvfs-dry-run"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    assert "1p1d p-sm1500-d-sm900: GPU 0 (prefill): sm1500, GPU 1 (decode): sm900" in done.stdout
    assert "1p1d sm900: GPU 0 (prefill): sm900, GPU 1 (decode): sm900" in done.stdout
    calls = [json.loads(line)["name"] for line in log.read_text().splitlines()] if log.exists() else []
    assert not [name for name in calls if "Set" in name or "Reset" in name]
    assert not (tmp_path / "reports").exists() or not any((tmp_path / "reports").iterdir())

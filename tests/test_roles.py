"""Energy by GPU role, the idle baseline and the KV hand-off apart, and clock and throttle residency per phase: on
two fake GPUs of constant power and hand-made requests, where every answer is known exactly."""

from __future__ import annotations

import math
import time
from pathlib import Path

import pytest

from plugin.analysis.accounting import work_inside
from plugin.analysis.energy import (
    ROLE_METHOD,
    SHARED_METHOD,
    UNKNOWN_ROLE_METHOD,
    attribute_energy,
    kv_handoff_intervals,
    phase_slices,
)
from plugin.analysis.power_entry import benchmark_power, window_power
from plugin.analysis.residency import residency
from plugin.power import Sample, Sampler
from plugin.power.nvml import NvmlBackend
from plugin.power.window import ClockSeries, IdleBaseline, WindowAccumulator, WindowMeasurement
from plugin.records.requests import RequestRecord
from plugin.records.results import BenchmarkPower, GpuEnergy, from_json, to_json
from plugin.records.windows import LOADED, BaselineOrigin
from tests.fake_nvml import FakeGpu, FakeNvml, Step

SW_POWER_CAP = 0x4
SW_THERMAL = 0x20


def request(send_s: float, first_s: float, end_s: float, kv_handoff_ms: float | None = None) -> RequestRecord:
    return RequestRecord(
        index=0, prompt_len=100, max_tokens=10, due_s=send_s, send_s=send_s, first_token_s=first_s,
        token_times_s=tuple(first_s + (end_s - first_s) * i / 9 for i in range(10)), end_s=end_s,
        prompt_tokens=100, completion_tokens=10, error=None, kv_handoff_ms=kv_handoff_ms,
    )  # fmt: skip


# A: sent 1, hand-off 2.5-3, first token 3, end 6. B: sent 2, hand-off 3.2-4, first token 4, end 8. The hand-off
# is decode's: A in prefill 1-2.5 and in decode 2.5-6, B in prefill 2-3.2 and in decode 3.2-8. In a 0-10 s window:
# prefill only 1-2.5, both 2.5-3.2, decode only 3.2-8, nothing 0-1 and 8-10. Prefill 2.2 s, decode 5.5 s, idle 3 s.
RECORDS = [request(1.0, 3.0, 6.0, kv_handoff_ms=500.0), request(2.0, 4.0, 8.0, kv_handoff_ms=800.0)]
PLAIN = [request(1.0, 3.0, 6.0), request(2.0, 4.0, 8.0)]
"""The same requests from a traditional server (no hand-off): prefill only 1-3, both 3-4, decode only 4-8."""


def sample(t_s: float, gpu: int, power_w: float, sm_clock_mhz: int | None = 1980, reasons: int | None = 0) -> Sample:
    return Sample(t_s, gpu, power_w, None, sm_clock_mhz, 2619, 90, 1000, 60, reasons)


def window(
    watts: dict[int, float],
    counter_j: dict[int, float],
    idle_w: dict[int, float | None],
    clocks: dict[int, list[Sample]],
) -> WindowMeasurement:
    """A 0-10 s window, flat power per GPU sampled every 0.5 s (clock and reasons from ``clocks`` where given)."""
    accumulators, gpus = {}, []
    idle = IdleBaseline(
        LOADED, BaselineOrigin("1p1d", None, -3.0, 0.0), {g: w for g, w in idle_w.items() if w is not None}
    )
    for gpu, power_w in watts.items():
        accumulator = WindowAccumulator(gpu, 0.0, 0)
        for s in clocks.get(gpu) or [sample(step / 2, gpu, power_w) for step in range(21)]:
            accumulator.add(s)
        accumulators[gpu] = accumulator
        gpus.append(accumulator.finish(10.0, round(counter_j[gpu] * 1000), idle))
    curves = {gpu: a.curve for gpu, a in accumulators.items()}
    series = {gpu: a.clocks for gpu, a in accumulators.items()}
    return WindowMeasurement("w", "nvml", 0.0, 10.0, tuple(gpus), (), None, curves, series)


def disaggregated() -> dict[str, GpuEnergy]:
    # GPU 0 (prefill): 300 W sampled, its counter 10 % above (330 W). GPU 1 (decode): 200 W, counter agrees.
    measured = window({0: 300.0, 1: 200.0}, {0: 3300.0, 1: 2000.0}, {0: 60.0, 1: None}, {})
    return window_power(0, measured, RECORDS, {0: "prefill", 1: "decode"}).gpus


def test_a_prefill_gpu_charges_prefill_only_and_waits_the_rest() -> None:
    gpu = disaggregated()["0"]
    phases = gpu.phases
    assert gpu.method == ROLE_METHOD and phases is not None
    assert phases.prefill_j == pytest.approx(2.2 * 330.0)
    assert phases.decode_j == pytest.approx(0.0)
    assert phases.idle_j == pytest.approx(7.8 * 330.0)  # nothing running, and decode only (3.2-8)
    assert phases.prefill_above_idle_j == pytest.approx(2.2 * (330.0 - 60.0))
    assert phases.total_j == pytest.approx(3300.0, rel=1e-12)
    assert gpu.idle_baseline_j == pytest.approx(600.0)
    assert (gpu.idle_baseline_j or 0.0) + (gpu.window.energy_above_idle_j or 0.0) == pytest.approx(3300.0)


def test_a_decode_gpu_charges_decode_only() -> None:
    gpu = disaggregated()["1"]
    phases = gpu.phases
    assert gpu.method == ROLE_METHOD and phases is not None
    # decode from each request's hand-off (2.5-8): the KV load and first step are decode's work
    assert (phases.prefill_j, phases.decode_j, phases.idle_j) == pytest.approx((0.0, 5.5 * 200.0, 4.5 * 200.0))
    assert phases.total_j == pytest.approx(2000.0, rel=1e-12)
    assert gpu.idle_baseline_j is None and phases.decode_above_idle_j is None


def test_the_kv_handoff_is_shown_on_both_gpus_apart_from_the_phases() -> None:
    gpus = disaggregated()
    # Hand-offs 2.5-3 and 3.2-4: 1.3 s, inside decode on the decode GPU; on the prefill GPU inside B's prefill
    # (2.5-3.2) or idle (3.2-4).
    assert gpus["0"].kv_handoff_s == pytest.approx(1.3) and gpus["1"].kv_handoff_s == pytest.approx(1.3)
    assert gpus["0"].kv_handoff_j == pytest.approx(1.3 * 330.0)
    assert gpus["1"].kv_handoff_j == pytest.approx(1.3 * 200.0)


def test_window_and_benchmark_sum_the_roles_and_match_the_counters() -> None:
    measured = window({0: 300.0, 1: 200.0}, {0: 3300.0, 1: 2000.0}, {0: 60.0, 1: None}, {})
    entry = window_power(0, measured, RECORDS, {0: "prefill", 1: "decode"})
    assert entry.phases is not None and entry.energy_j == pytest.approx(5300.0)
    assert (entry.phases.prefill_j, entry.phases.decode_j, entry.phases.idle_j) == pytest.approx(
        (2.2 * 330.0, 5.5 * 200.0, 7.8 * 330.0 + 4.5 * 200.0)
    )
    assert math.fsum([entry.phases.prefill_j or 0, entry.phases.decode_j or 0, entry.phases.idle_j or 0]) == (
        pytest.approx(entry.energy_j, rel=1e-12)
    )
    assert (entry.phases.prefill_s, entry.phases.decode_s, entry.phases.overlap_s, entry.phases.idle_s) == (
        pytest.approx((2.2, 5.5, 0.7, 3.0))
    )
    work = work_inside(RECORDS, 0.0, 10.0)
    power = benchmark_power([entry], "nvml", None, {0: "prefill", 1: "decode"}, work)
    assert power.phases is not None and power.phases.total_j == pytest.approx(5300.0)
    back = from_json(BenchmarkPower, to_json(power))
    assert back.windows[0].gpus["0"] == entry.gpus["0"]


def test_a_shared_gpu_keeps_the_time_rule_and_says_so() -> None:
    measured = window({0: 300.0}, {0: 3300.0}, {0: 60.0}, {})
    gpu = window_power(0, measured, RECORDS, {0: "prefill+decode"}).gpus["0"]
    phases = gpu.phases
    assert gpu.method == SHARED_METHOD and phases is not None
    # 1-2 A prefill, 2-2.5 both prefill, 2.5-3.2 half each, 3.2-8 decode, the rest idle, at 330 W.
    assert (phases.prefill_j, phases.decode_j, phases.idle_j) == pytest.approx((1.85 * 330, 5.15 * 330, 3 * 330))
    old = attribute_energy([measured.curves[0]], RECORDS, 0.0, 10.0, 60.0, 3300.0)
    assert (phases.prefill_j, phases.decode_j, phases.idle_j) == (old.prefill_j, old.decode_j, old.idle_j)
    unknown = window_power(0, measured, RECORDS, {}).gpus["0"]
    assert unknown.method == UNKNOWN_ROLE_METHOD and unknown.phases == gpu.phases


def test_a_traditional_server_has_no_handoff_figures() -> None:
    gpu = window_power(0, window({0: 300.0}, {0: 3300.0}, {0: None}, {}), PLAIN, {0: "prefill+decode"}).gpus["0"]
    assert gpu.kv_handoff_s is None and gpu.kv_handoff_j is None and gpu.idle_baseline_j is None


def test_handoffs_start_no_earlier_than_the_send_merge_and_are_clipped_to_the_window() -> None:
    records = [
        request(1.0, 3.0, 6.0, kv_handoff_ms=5000.0),  # 5 s before its first token is before its send: 1-3
        request(2.0, 2.5, 6.0, kv_handoff_ms=1000.0),  # 1.5-2.5 clamped to 2-2.5, inside the first
        request(9.0, 9.5, 12.0, kv_handoff_ms=300.0),  # 9.2-9.5
        request(9.8, 10.5, 12.0, kv_handoff_ms=600.0),  # 9.9-10.5, of which 9.9-10 in the window
        request(4.0, 5.0, 6.0),  # no hand-off time
    ]
    intervals = kv_handoff_intervals(records)
    assert intervals is not None
    assert [t for interval in intervals for t in interval] == pytest.approx([1.0, 3.0, 2.0, 2.5, 9.2, 9.5, 9.9, 10.5])
    curve = window({0: 100.0}, {0: 1000.0}, {0: None}, {}).curves[0]
    split = attribute_energy([curve], records, 0.0, 10.0, kv_handoffs=intervals)
    assert split.kv_handoff_s == pytest.approx(2.4) and split.kv_handoff_j == pytest.approx(240.0)
    assert kv_handoff_intervals(records[-1:]) is None


def test_residency_per_phase_holds_each_reading_until_the_next() -> None:
    # 1755 MHz under the power cap until 2.5 s, then 1600 MHz capped and thermally slowed until 4 s, then full clock.
    def reading(t_s: float) -> Sample:
        if t_s < 2.5:
            return sample(t_s, 0, 300.0, 1755, SW_POWER_CAP)
        if t_s < 4.0:
            return sample(t_s, 0, 300.0, 1600, SW_POWER_CAP | SW_THERMAL)
        return sample(t_s, 0, 300.0, 1980, 0)

    measured = window({0: 300.0}, {0: 3000.0}, {0: None}, {0: [reading(step / 2) for step in range(21)]})
    gpu = window_power(0, measured, PLAIN, {0: "prefill"}).gpus["0"]
    assert gpu.residency == {
        "prefill": {  # 1-3 s
            "sm_clock_mhz": {"1755": pytest.approx(0.75), "1600": pytest.approx(0.25)},
            "throttle": {"sw_power_cap": pytest.approx(1.0), "sw_thermal_slowdown": pytest.approx(0.25)},
        },
        "decode": {"sm_clock_mhz": {"1980": pytest.approx(1.0)}, "throttle": {"none": pytest.approx(1.0)}},  # 4-8 s
        "both": {  # 3-4 s
            "sm_clock_mhz": {"1600": pytest.approx(1.0)},
            "throttle": {"sw_power_cap": pytest.approx(1.0), "sw_thermal_slowdown": pytest.approx(1.0)},
        },
        "idle": {  # 0-1 s and 8-10 s
            "sm_clock_mhz": {"1980": pytest.approx(2 / 3), "1755": pytest.approx(1 / 3)},
            "throttle": {"none": pytest.approx(2 / 3), "sw_power_cap": pytest.approx(1 / 3)},
        },
    }
    assert list(gpu.residency["idle"]["sm_clock_mhz"]) == ["1980", "1755"]  # fastest first


def test_residency_skips_failed_reads_and_the_time_before_the_first() -> None:
    series = ClockSeries(
        [sample(0.5, 0, 100.0, 1980, 0), sample(1.5, 0, 100.0, None, None), sample(2.0, 0, 100.0, 1410, SW_POWER_CAP)]
    )
    shares = residency(series, phase_slices([request(1.0, 2.0, 3.0)], 0.0, 3.0))
    assert shares == {
        "prefill": {"sm_clock_mhz": {"1980": 1.0}, "throttle": {"none": 1.0}},
        "decode": {"sm_clock_mhz": {"1410": 1.0}, "throttle": {"sw_power_cap": 1.0}},
        "idle": {"sm_clock_mhz": {"1980": 1.0}, "throttle": {"none": 1.0}},  # 0.5-1 s read, 0-0.5 s not
    }
    assert residency(ClockSeries(), phase_slices([], 0.0, 1.0)) == {}


def test_the_sampler_hands_out_each_window_clock_series(tmp_path: Path) -> None:
    steps = (Step(0.3, 300.0, sm_clock_mhz=1755, throttle_reasons=SW_POWER_CAP), Step(1.0, 200.0))
    fake = FakeNvml([FakeGpu(steps, update_interval_s=0.005)])
    with Sampler(NvmlBackend(nvml=fake.module()), tmp_path, period_ms=2.0) as sampler:
        sampler.begin_window("load")
        time.sleep(0.5)
        measured = sampler.end_window("load")
    series = measured.clocks[0]
    assert set(series.sm_clocks_mhz) == {1755, 1980} and set(series.reason_masks) == {SW_POWER_CAP, 0}
    assert series.clock_times_s == sorted(series.clock_times_s)

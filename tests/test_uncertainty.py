"""The energy uncertainty: each part on a case worked on paper, one round, short windows flagged, nothing when
power was not measured, and ``benchmark_result`` carrying it all into ``BenchmarkPower``."""

from __future__ import annotations

import math

import pytest

from plugin import terminal
from plugin.analysis.accounting import Work
from plugin.analysis.benchmark import benchmark_result
from plugin.analysis.power_entry import benchmark_power
from plugin.analysis.uncertainty import (
    MIN_SENSOR_UPDATES,
    energy_uncertainty,
    rounds_part,
    t95,
    with_uncertainty,
)
from plugin.measurement import Measurement, Round
from plugin.power.backend import Sample
from plugin.power.window import PowerCurve, WindowAccumulator, WindowMeasurement
from plugin.records.results import (
    BenchmarkPower,
    BenchmarkResult,
    GpuEnergy,
    PhaseSplit,
    PowerWindow,
    from_json,
    to_json,
)
from plugin.records.topology import DEFAULT_TOPOLOGIES
from plugin.records.windows import GpuWindow
from plugin.records.workload import Workload
from tests.test_power_entry import request_record


def _gpu(
    start_s: float, end_s: float, counter_j: float | None, samples_j: float, interval_s: float | None
) -> GpuWindow:
    energy_j = counter_j if counter_j is not None else samples_j
    return GpuWindow(
        gpu=0, start_s=start_s, end_s=end_s, energy_counter_j=counter_j, energy_samples_j=samples_j,
        disagreement_pct=None, mean_power_w=energy_j / (end_s - start_s), max_power_w=None, mean_sm_clock_mhz=None,
        throttled_s=None, throttle_reasons_s=(), idle_power_w=None, energy_above_idle_j=None, samples=20,
        sample_errors=0, power_source="instant", sensor_interval_s=interval_s,
    )  # fmt: skip


def _phases(prefill_j: float, decode_j: float) -> PhaseSplit:
    return PhaseSplit(
        prefill_j=prefill_j, decode_j=decode_j, idle_j=0.0, prefill_above_idle_j=None, decode_above_idle_j=None,
        prefill_s=1.0, decode_s=1.0, overlap_s=0.0, idle_s=0.0, requests=10, prompt_tokens=1000, output_tokens=100,
        integral_j=None, j_per_prompt_token=prefill_j / 1000, j_per_output_token=decode_j / 100,
        j_per_request=(prefill_j + decode_j) / 10,
    )  # fmt: skip


def _power(gpu_windows: list[GpuWindow]) -> BenchmarkPower:
    """A benchmark of one GPU, one window per round, each round's energy split 40/60 into prefill and decode."""
    windows = []
    for i, gpu in enumerate(gpu_windows):
        energy_j = gpu.energy_j or 0.0
        split = _phases(0.4 * energy_j, 0.6 * energy_j)
        windows.append(PowerWindow(i, gpu.start_s, gpu.end_s, energy_j, {"0": GpuEnergy("prefill+decode", gpu, split)},
                                   split, ()))  # fmt: skip
    work = Work(sum(gpu.duration_s for gpu in gpu_windows), 10 * len(windows), 1000 * len(windows), 100 * len(windows))
    return benchmark_power(windows, "nvml", None, {0: "prefill+decode"}, work)


def _stepped_curve(start_s: float, end_s: float) -> PowerCurve:
    """200 W over the window's first 0.1 s, 50 W in between, 300 W over its last 0.1 s."""
    points = [(start_s - 1, 200.0), (start_s + 0.1, 200.0), (start_s + 0.2, 50.0), (end_s - 0.2, 50.0),
              (end_s - 0.1, 300.0), (end_s + 1, 300.0)]  # fmt: skip
    curve = PowerCurve()
    for t_s, power_w in points:
        curve.add(t_s, power_w)
    return curve


def test_three_rounds_each_part_as_worked_on_paper() -> None:
    # Counters 100, 110, 120 J; integrals 98, 113, 120 J; 2 s windows; sensor updates every 0.1 s.
    gpus = [_gpu(10.0 * i, 10.0 * i + 2, c, s, 0.1) for i, (c, s) in enumerate([(100, 98), (110, 113), (120, 120)])]
    power = _power(gpus)
    curves = [{0: _stepped_curve(g.start_s, g.end_s)} for g in gpus]
    found = energy_uncertainty(power, curves, repeats=[1, 1, 1])

    rounds = 4.3027 * 10.0 * math.sqrt(3)  # t(2 dof) x stdev(100, 110, 120) x sqrt(3 rounds) = 74.52 J
    edges = math.sqrt(3 * ((0.1 * 200) ** 2 + (0.1 * 300) ** 2))  # 20 J and 30 J per window: 62.45 J
    disagreement = 2.0 + 3.0 + 0.0
    assert found.parts == {
        "rounds": pytest.approx(rounds), "edges": pytest.approx(edges), "disagreement": pytest.approx(disagreement)
    }  # fmt: skip
    total = math.sqrt(rounds**2 + edges**2 + disagreement**2)  # 97.36 J on 330 J
    figures = found.figures
    assert total == pytest.approx(97.36, abs=0.01) and figures["energy_j"] == pytest.approx(total)
    relative = total / 330.0  # the totals carry the energy's relative ±, the rounds' spread included
    assert figures["prefill_j"] == pytest.approx(relative * 132.0)
    assert figures["decode_j"] == pytest.approx(relative * 198.0)
    # A figure per unit of work carries the measurement's parts (no rounds given for these: no rounds part) ...
    measured = math.sqrt(edges**2 + disagreement**2) / 330.0  # 19.0 %
    assert figures["energy_per_prompt_token_j"] == pytest.approx(measured * 0.11)
    assert figures["energy_per_output_token_j"] == pytest.approx(measured * 1.1)
    assert figures["energy_per_request_j"] == pytest.approx(measured * 11.0)
    assert found.sources["energy_per_request_j"] == ["disagreement", "edges"]
    # ... and the split's, their own spread between rounds: prefill 40 of 100, 110, 120 J over 1000 prompt tokens
    # a round is 0.040, 0.044, 0.048 J (stdev 0.004): t(2 dof) x 0.004 / sqrt(3) = 0.00994 J.
    spread = 4.3027 * 0.004 / math.sqrt(3)
    assert figures["prefill_j_per_prompt_token"] == pytest.approx(math.hypot(measured * 0.044, spread))
    assert figures["decode_j_per_output_token"] == pytest.approx(
        math.hypot(measured * 0.66, 4.3027 * 0.06 / math.sqrt(3))
    )  # 0.60, 0.66, 0.72 J
    assert figures["j_per_request"] == pytest.approx(math.hypot(measured * 11.0, 4.3027 * 1.0 / math.sqrt(3)))
    assert found.sources["j_per_request"] == ["disagreement", "edges", "rounds"]
    assert "energy_per_good_request_j" not in figures
    assert found.sensor_updates == pytest.approx((20.0, 20.0, 20.0)) and not found.short_window


def test_without_edge_samples_the_mean_power_stands_for_the_edges() -> None:
    gpus = [_gpu(10.0 * i, 10.0 * i + 2, c, c, 0.1) for i, c in enumerate([100.0, 110.0, 120.0])]
    found = energy_uncertainty(_power(gpus))  # mean powers 50, 55 and 60 W at both edges of each window
    assert found.parts["edges"] == pytest.approx(math.sqrt(2 * (5.0**2 + 5.5**2 + 6.0**2)))
    assert found.parts["disagreement"] == 0.0


def test_unequal_repeats_compare_rounds_per_load() -> None:
    # 3 loads of 100 J, 4 of 100 J, 3 of 110 J: per load 100, 100, 110 -- not the raw 300, 400, 330.
    per_load = [100.0, 100.0, 110.0]
    mean = sum(per_load) / 3
    stdev = math.sqrt(sum((x - mean) ** 2 for x in per_load) / 2)
    assert rounds_part([300.0, 400.0, 330.0], [3, 4, 3]) == pytest.approx(4.3027 * stdev * math.sqrt(9 + 16 + 9))
    thrice = rounds_part([300.0, 330.0, 360.0], [3, 3, 3])
    assert thrice is not None and rounds_part([100.0, 110.0, 120.0]) == pytest.approx(thrice / 3)


def test_one_round_has_no_rounds_part_but_a_total_from_the_others() -> None:
    found = energy_uncertainty(_power([_gpu(0.0, 2.0, 100.0, 96.0, 0.1)]))
    assert found.parts["rounds"] is None
    expected = math.sqrt(2 * (0.1 * 50.0) ** 2 + 4.0**2)
    assert found.figures["energy_j"] == pytest.approx(expected) and expected > 0


def test_parts_unknown_are_none_never_zero() -> None:
    # No counter (samples only) and no known sensor interval, one round: nothing to build a ± from.
    found = energy_uncertainty(_power([_gpu(0.0, 2.0, None, 96.0, None)]))
    assert found.parts == {"rounds": None, "edges": None, "disagreement": None}
    assert found.figures["energy_j"] is None and found.figures["energy_per_request_j"] is None
    assert found.sensor_updates == (None,) and found.sensor_updates_min is None and not found.short_window


def test_a_window_under_ten_sensor_updates_is_flagged() -> None:
    gpus = [_gpu(0.0, 2.0, 100.0, 100.0, 0.1), _gpu(10.0, 10.95, 50.0, 50.0, 0.1)]  # 20 and 9.5 updates
    found = energy_uncertainty(_power(gpus))
    assert found.sensor_updates == pytest.approx((20.0, 9.5)) and found.sensor_updates_min == pytest.approx(9.5)
    assert found.short_window and MIN_SENSOR_UPDATES == 10
    long_enough = energy_uncertainty(_power([_gpu(0.0, 1.0, 100.0, 100.0, 0.1)]))  # exactly 10 updates
    assert not long_enough.short_window


def test_power_not_measured_gives_no_uncertainty() -> None:
    power = with_uncertainty(
        benchmark_power([], "none", "power not measured: --power-backend none", {}, Work(0.0, 0, 0, 0)), [], []
    )
    assert power.uncertainty == {} and power.uncertainty_parts == {}
    assert power.sensor_updates_min is None and power.short_window is False


def test_the_good_request_figure_gets_its_share_and_the_good_count_its_own() -> None:
    power = _power([_gpu(0.0, 2.0, 100.0, 90.0, 0.1)])
    found = energy_uncertainty(power, summary={"energy_per_good_request_j": 25.0})
    spread_j = found.figures["energy_j"]
    assert spread_j is not None and found.figures["energy_per_good_request_j"] == pytest.approx(spread_j / 4)
    # 4 good of 8 completed: Wilson's 95 % interval of the good share is 21.5-78.5 %, so E / good may be
    # 50 / 21.5 - 1 = 133 % higher: that side is the good count's part.
    counted = energy_uncertainty(
        power, summary={"energy_per_good_request_j": 25.0, "window_good_completed": 4, "window_completed": 8}
    )
    low_pct = 21.5216
    good_count = (50.0 / low_pct - 1.0) * 25.0
    assert counted.figures["energy_per_good_request_j"] == pytest.approx(math.hypot(spread_j / 4, good_count), rel=1e-4)
    assert counted.sources["energy_per_good_request_j"] == ["disagreement", "edges", "good_count"]


def test_student_t() -> None:
    assert t95(1) == pytest.approx(12.706, abs=1e-3) and t95(2) == pytest.approx(4.303, abs=1e-3)
    assert t95(30) == pytest.approx(2.0423, abs=1e-4) and t95(31) == pytest.approx(2.0395, abs=1e-4)
    assert t95(120) == pytest.approx(1.9799, abs=1e-4)
    with pytest.raises(ValueError):
        t95(0)


# -- through benchmark_result, as a benchmark is assembled --------------------------------------------------


def _window(start_s: float, end_s: float, power_w: float, counter_j: float, interval_s: float) -> WindowMeasurement:
    """Flat power sampled every 0.05 s; the counter reads ``counter_j`` over the window."""
    accumulator = WindowAccumulator(0, start_s, 0)
    for step in range(round((end_s - start_s) * 20) + 1):
        accumulator.add(Sample(start_s + step / 20, 0, power_w, power_w, 1980, 2619, 90, 1000, 60, 0))
    gpu = accumulator.finish(end_s, round(counter_j * 1000), sensor_interval_s=interval_s)
    return WindowMeasurement("w", "nvml", start_s, end_s, (gpu,), (), None, {0: accumulator.curve})


def _result(windows: list[WindowMeasurement], repeats: list[int]) -> BenchmarkResult:
    rounds = tuple(
        Round(i, (request_record(w.start_s, w.start_s + 0.2, w.end_s - 0.1),), w, w.duration_s, repeats=r)
        for i, (w, r) in enumerate(zip(windows, repeats, strict=True))
    )
    return benchmark_result(
        "test_e2e[x]", "test_e2e[x]", DEFAULT_TOPOLOGIES[0], Workload("e2e", 100, 10, 1, 1),
        Measurement((), rounds, {}, {}), {0: "prefill+decode"}, None, "requests.jsonl",
    )  # fmt: skip


def test_benchmark_result_puts_the_uncertainty_into_its_power() -> None:
    # Flat 100 W over 6 s (600 J of samples); counters 630, 600, 660 J; sensor every 0.1 s.
    windows = [_window(10.0 * i, 10.0 * i + 6, 100.0, c, 0.1) for i, c in enumerate([630.0, 600.0, 660.0])]
    result = _result(windows, [2, 2, 2])
    power = result.power
    assert power.energy_j == pytest.approx(1890.0)
    rounds = 4.3027 * 30.0 * math.sqrt(3)  # the per-load spread, scaled back to 2 loads a round
    edges = math.sqrt(6 * (0.1 * 100.0) ** 2)  # the curves' edge power: 100 W, not the counter's mean power
    disagreement = 30.0 + 0.0 + 60.0
    assert power.uncertainty_parts == {
        "rounds": pytest.approx(rounds), "edges": pytest.approx(edges), "disagreement": pytest.approx(disagreement)
    }  # fmt: skip
    total = math.sqrt(rounds**2 + edges**2 + disagreement**2)
    assert power.uncertainty["energy_j"] == pytest.approx(total)
    # One request a round: J per request 630, 600, 660 by round (stdev 30), 630 in all.
    measured = math.sqrt(edges**2 + disagreement**2) / 1890
    per_request = math.hypot(measured * 630.0, 4.3027 * 30.0 / math.sqrt(3))
    assert power.uncertainty["energy_per_request_j"] == pytest.approx(per_request)
    assert [r["energy_per_request_j"] for r in result.rounds] == pytest.approx([630.0, 600.0, 660.0])
    assert power.phases is not None and power.phases.j_per_output_token is not None
    assert power.uncertainty_sources["decode_j_per_output_token"] == ["disagreement", "edges", "rounds"]
    assert [w.sensor_updates for w in power.windows] == pytest.approx([60.0, 60.0, 60.0])
    assert power.sensor_updates_min == pytest.approx(60.0) and power.short_window is False
    assert [r["repeats"] for r in result.rounds] == [2, 2, 2]
    again = from_json(BenchmarkPower, to_json(power))  # and results.json keeps them
    assert again.uncertainty == power.uncertainty and again.windows[0].sensor_updates == pytest.approx(60.0)


def test_terminal_shows_the_interval_and_flags_a_short_window() -> None:
    short = _result([_window(0.0, 0.5, 100.0, 50.0, 0.1)], [3])  # 5 sensor updates, one round
    long = _result([_window(0.0, 6.0, 100.0, 600.0, 0.1)], [1])
    assert short.power.short_window and not long.power.short_window
    lines: list[str] = []
    terminal._phase_table(lines.append, [short, long])
    terminal._energy_notes(lines.append, [short, long], 5.0)
    spread = short.power.uncertainty["energy_per_request_j"]
    assert spread is not None and f"50±{spread:.2g} J/req!" in lines[1]
    assert "±" in lines[2] and "!" not in lines[2]
    notes = "\n".join(lines[3:])
    assert "test_e2e[x]: a power window lasted only 5.0 sensor updates (under 10)" in notes
    assert "each round ran its load 3 times to fill a 5 s power window" in notes
    assert "more --rounds give it" in notes

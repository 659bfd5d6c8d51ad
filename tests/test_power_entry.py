"""Power per round and per benchmark: the phase split is anchored to the counter (prefill + decode + idle equals
the counter's energy exactly), each GPU keeps its role, and the rounds add up."""

from __future__ import annotations

import math

import pytest

from plugin.analysis.accounting import Work
from plugin.analysis.power_entry import benchmark_power, window_power
from plugin.power.backend import Sample
from plugin.power.window import WindowAccumulator, WindowMeasurement
from plugin.records.requests import RequestRecord
from plugin.records.results import PowerWindow


def request_record(send_s: float, first_s: float, end_s: float) -> RequestRecord:
    """A request of 100 prompt and 10 output tokens, the tokens evenly spread over its decode."""
    return RequestRecord(
        index=0, prompt_len=100, max_tokens=10, due_s=send_s, send_s=send_s, first_token_s=first_s,
        token_times_s=tuple(first_s + (end_s - first_s) * i / 9 for i in range(10)), end_s=end_s,
        prompt_tokens=100, completion_tokens=10, error=None,
    )  # fmt: skip


def _window(
    start_s: float, end_s: float, watts: dict[int, float], counter_j: dict[int, float | None]
) -> WindowMeasurement:
    """Flat power per GPU sampled every 0.1 s; each GPU's counter reads ``counter_j`` over the window."""
    accumulators = {}
    gpus = []
    for gpu, power_w in watts.items():
        total = counter_j[gpu]
        accumulator = WindowAccumulator(gpu, start_s, 0 if total is not None else None)
        for step in range(round((end_s - start_s) * 10) + 1):
            accumulator.add(Sample(start_s + step / 10, gpu, power_w, power_w, 1980, 2619, 90, 1000, 60, 0))
        accumulators[gpu] = accumulator
        gpus.append(accumulator.finish(end_s, None if total is None else round(total * 1000)))
    curves = {gpu: accumulator.curve for gpu, accumulator in accumulators.items()}
    return WindowMeasurement("w", "nvml", start_s, end_s, tuple(gpus), (), None, curves)


def test_phase_split_adds_up_to_the_counter_not_the_integral() -> None:
    window = _window(0.0, 6.0, {0: 100.0}, {0: 660.0})  # the samples integrate to 600 J
    entry = window_power(0, window, [request_record(0.0, 2.0, 5.0)], {0: "prefill+decode"})
    phases = entry.gpus["0"].phases
    assert phases is not None and phases.integral_j == pytest.approx(600.0)
    assert math.fsum([phases.prefill_j or 0, phases.decode_j or 0, phases.idle_j or 0]) == pytest.approx(
        660.0, rel=1e-12
    )
    assert phases.prefill_j == pytest.approx(220.0) and phases.decode_j == pytest.approx(330.0)
    assert phases.j_per_prompt_token == pytest.approx(2.2) and phases.j_per_output_token == pytest.approx(33.0)
    assert entry.energy_j == pytest.approx(660.0) and entry.gpus["0"].role == "prefill+decode"


def test_without_a_counter_the_integral_is_the_energy() -> None:
    entry = window_power(0, _window(0.0, 4.0, {0: 50.0}, {0: None}), [request_record(0.0, 1.0, 4.0)], {0: "decode"})
    phases = entry.phases
    assert phases is not None and phases.total_j == pytest.approx(200.0) == entry.energy_j


def test_two_gpus_add_energies_and_count_requests_once() -> None:
    window = _window(0.0, 6.0, {0: 100.0, 1: 200.0}, {0: 600.0, 1: 1320.0})
    entry = window_power(0, window, [request_record(0.0, 2.0, 5.0)], {0: "prefill", 1: "decode"})
    assert entry.phases is not None and entry.phases.total_j == pytest.approx(1920.0)
    assert entry.phases.requests == 1 and entry.phases.prefill_s == pytest.approx(2.0)
    assert {gpu: g.role for gpu, g in entry.gpus.items()} == {"0": "prefill", "1": "decode"}


def test_rounds_add_up_and_per_token_figures_use_every_round() -> None:
    def one_round(i: int) -> PowerWindow:
        start_s = 10.0 * i
        window = _window(start_s, start_s + 6.0, {0: 100.0}, {0: 600.0})
        return window_power(i, window, [request_record(start_s, start_s + 2, start_s + 5)], {0: "prefill+decode"})

    rounds = [one_round(i) for i in range(3)]
    work = Work(18.0, 3, 300, 30)  # what the three windows held: one request each, whole
    power = benchmark_power(rounds, "nvml", None, {0: "prefill+decode"}, work)
    assert power.measured and len(power.windows) == 3
    assert power.energy_j == pytest.approx(1800.0)
    assert (
        power.phases is not None and power.phases.prompt_tokens == 300 and power.phases.prefill_s == pytest.approx(6.0)
    )
    assert power.energy_per_prompt_token_j == pytest.approx(6.0)


def test_unmeasured_power_has_no_figures() -> None:
    power = benchmark_power([], "none", "power not measured: --power-backend none", {}, Work(0.0, 0, 0, 0))
    assert not power.measured and power.energy_j is None and power.phases is None

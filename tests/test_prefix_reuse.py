"""The server's cached prompt tokens as hit rates: per benchmark and per turn, ``None`` where the server reports
none; and the terminal's lines for them and for what a replayed file dropped."""

from __future__ import annotations

import math

import pytest

from plugin.analysis.cache_savings import COST, SAVED, UNDECIDED, UNMEASURED, cache_savings, saving_line
from plugin.analysis.prefix_reuse import per_turn, prefill_by_cache_hit, reuse_figures
from plugin.analysis.turn_energy import RequestEnergy, request_energies
from plugin.power.window import WindowMeasurement
from plugin.records.requests import RequestRecord
from plugin.records.results import BenchmarkPower, BenchmarkResult
from plugin.records.workload import Workload
from plugin.terminal import reuse_lines
from tests.test_power_entry import _window


def record(prompt: int, cached: int | None, turn: int | None = None, ttft_s: float = 0.1) -> RequestRecord:
    return RequestRecord(0, prompt, 4, 0.0, 0.0, ttft_s, (ttft_s,) * 4, 1.0, prompt, 4, None, cached_tokens=cached,
                         turn=turn)  # fmt: skip


def test_hit_rate_is_cached_over_prompt_tokens_of_the_requests_that_report_it() -> None:
    figures = reuse_figures([record(100, 50), record(300, 0), record(1000, None)])
    assert figures == {"cached_prompt_tokens": 50, "prefix_hit_rate": pytest.approx(50 / 400)}


def test_no_report_is_no_hit_rate_not_zero() -> None:
    assert reuse_figures([record(100, None)]) == {"cached_prompt_tokens": None, "prefix_hit_rate": None}


def test_per_turn_figures_follow_the_turns() -> None:
    records = [record(100, 0, 0, 0.2), record(120, 0, 0, 0.4), record(300, 224, 1, 0.1), record(50, 0)]
    energies = [RequestEnergy(1.0, 2.0), RequestEnergy(3.0, 4.0), None, RequestEnergy(9.0, 9.0)]
    first, second = per_turn([(records, energies)], measured_power(100.0))
    assert (first["turn"], first["requests"], first["prefix_hit_rate"]) == (0, 2, 0.0)
    assert first["mean_ttft_ms"] == pytest.approx(300.0)
    assert first["energy_per_request_j"] == pytest.approx(5.0)
    assert (second["turn"], second["mean_prompt_tokens"], second["energy_per_request_j"]) == (1, 300, None)
    assert (second["energy_per_request_pm_j"], second["energy_per_request_pm_sources"]) == (None, [])
    assert second["prefix_hit_rate"] == pytest.approx(224 / 300)
    assert per_turn([([record(50, 0)], [None])], measured_power(100.0)) == []


def measured_power(energy_j: float, edges_j: float | None = 2.0, disagreement_j: float | None = 1.0) -> BenchmarkPower:
    parts = {"rounds": 7.0, "edges": edges_j, "disagreement": disagreement_j}
    return BenchmarkPower(True, "nvml", None, {}, energy_j, None, None, None, None, (), (), uncertainty_parts=parts)


def test_j_per_turn_is_as_sure_as_the_energy_and_its_spread_between_rounds() -> None:
    """Energy 100 J ± 2 J (edges), 1 J (counter gap): a 5 J turn carries 2 % and 1 % of it, 0.1 J and 0.05 J; in
    two rounds of 4 J and 6 J its mean's spread is t(1) x s / sqrt(2) = 12.706 x 1.414 / 1.414."""
    one_round = [record(100, 0, 0), record(120, 0, 0)], [RequestEnergy(1.0, 2.0), RequestEnergy(3.0, 4.0)]
    (turn,) = per_turn([one_round], measured_power(100.0))
    assert turn["energy_per_request_pm_j"] == pytest.approx(math.hypot(0.1, 0.05))
    assert turn["energy_per_request_pm_sources"] == ["disagreement", "edges"]
    two_rounds = [([record(100, 0, 0)], [RequestEnergy(1.0, 3.0)]), ([record(100, 0, 0)], [RequestEnergy(2.0, 4.0)])]
    (turn,) = per_turn(two_rounds, measured_power(100.0, None, None))
    assert turn["energy_per_request_j"] == pytest.approx(5.0)
    assert turn["energy_per_request_pm_j"] == pytest.approx(12.7062)
    assert turn["energy_per_request_pm_sources"] == ["rounds"]
    (turn,) = per_turn([one_round], measured_power(100.0, None, None))
    assert (turn["energy_per_request_pm_j"], turn["energy_per_request_pm_sources"]) == (None, [])


def test_prefill_energy_per_prompt_token_with_and_without_cache_hits() -> None:
    records = [record(100, 64), record(300, 128), record(200, 0), record(50, None)]
    energies = [RequestEnergy(1.0, 5.0), RequestEnergy(2.0, 5.0), RequestEnergy(4.0, 5.0), RequestEnergy(9.0, 9.0)]
    assert prefill_by_cache_hit(records, energies) == {
        "prefill_j_per_prompt_token_cache_hit": pytest.approx(3.0 / 400),
        "prefill_j_per_prompt_token_no_cache_hit": pytest.approx(4.0 / 200),
    }


def test_each_request_gets_its_share_of_the_slices_it_ran_in() -> None:
    """100 W for 6 s, counter 660 J (scale 1.1). A: prefill 0-1 s, decode 1-4 s; B: prefill 1-2 s, decode 2-5 s;
    5-6 s idle. 0-1 s: A alone; 1-2: A decode, B prefill, halves; 2-4: halves; 4-5: B alone."""
    a = RequestRecord(0, 100, 3, 0.0, 0.0, 1.0, (1.0, 2.5, 4.0), 4.0, 100, 3, None)
    b = RequestRecord(1, 100, 3, 1.0, 1.0, 2.0, (2.0, 3.5, 5.0), 5.0, 100, 3, None)
    failed = RequestRecord(2, 100, 3, 1.0, 1.0, None, (), 1.5, None, None, "HTTP 500")
    window = _window(0.0, 6.0, {0: 100.0}, {0: 660.0})
    shares = request_energies(window, [a, b, failed], {0: "prefill+decode"})
    assert shares[2] is None
    assert shares[0] == RequestEnergy(pytest.approx(110.0), pytest.approx(55.0 + 110.0))  # type: ignore[arg-type]
    assert shares[1] == RequestEnergy(pytest.approx(55.0), pytest.approx(110.0 + 110.0))  # type: ignore[arg-type]
    decode_only = request_energies(window, [a, b], {0: "decode"})
    assert [share.prefill_j for share in decode_only if share] == [0.0, 0.0]
    assert request_energies(WindowMeasurement("w", "none", 0.0, 6.0, (), (), "no GPU"), [a], {}) == [None]


def test_terminal_lines_show_hit_rates_turns_and_drops() -> None:
    summary = {
        "prefix_hit_rate": 0.42,
        "prefix_cache": {"hit_rate": 0.45},
        "turns": [{"turn": 0, "prefix_hit_rate": 0.0, "mean_ttft_ms": 80.0}],
        "dataset": {"dropped": {"too_long_for_model": 2}},
    }
    assert reuse_lines("b", summary) == [
        "prefix reuse b: 42 % of prompt tokens cached (server's usage; /metrics 45 %); "
        "turn 1: 0 % cached, TTFT 80.0 ms",
        "dropped from b's dataset: 2 too long for model",
    ]
    assert reuse_lines("b", {"prefix_cache": {"hit_rate": None}, "dataset": {"dropped": {}}}) == []
    summary["turns"] = [
        {"turn": 1, "prefix_hit_rate": 0.5, "mean_ttft_ms": 40.0, "energy_per_request_j": 2.5},
        {"turn": 2, "prefix_hit_rate": 0.6, "mean_ttft_ms": 30.0, "energy_per_request_j": 2.0,
         "energy_per_request_pm_j": 0.25},
    ]  # fmt: skip
    summary |= {"prefill_j_per_prompt_token_cache_hit": 0.01, "prefill_j_per_prompt_token_no_cache_hit": 0.02}
    assert reuse_lines("b", summary)[0].endswith(
        "; prefill J/prompt token 0.01 with a hit, 0.02 without; turn 2: 50 % cached, TTFT 40.0 ms, 2.5 J; "
        "turn 3: 60 % cached, TTFT 30.0 ms, 2±0.25 J"
    )


def benchmark(name: str, j_per_request: float | None, spread: float | None, hit_rate: float) -> BenchmarkResult:
    workload = Workload("serving", 1, 1, 0, 1, "mooncake-tiny", replay=True)
    power = BenchmarkPower(j_per_request is not None, "nvml", None, {}, None, None, None, j_per_request, None, (), (),
                           uncertainty={"energy_per_request_j": spread})  # fmt: skip
    summary = {"prefix_hit_rate": hit_rate, "mean_ttft_ms": 10.0}
    return BenchmarkResult(name, name, "traditional", "serving", workload, summary, (), power, None, "r.jsonl")


@pytest.mark.parametrize(
    ("cached_j", "control_j", "spreads", "verdict"),
    [(6.0, 10.0, (1.0, 1.0), SAVED), (9.0, 10.0, (1.0, 1.0), UNDECIDED), (12.0, 10.0, (0.5, 0.5), COST)],
)
def test_the_saving_is_the_controls_energy_minus_the_cached_ones_with_both_spreads(
    cached_j: float, control_j: float, spreads: tuple[float, float], verdict: str
) -> None:
    cached = benchmark("test_serving[t-mooncake-tiny-replay]", cached_j, spreads[0], 0.5)
    control = benchmark("test_serving[t-mooncake-tiny-replay-nocache]", control_j, spreads[1], 0.0)
    (found,) = cache_savings([cached, control, benchmark("test_serving[t-other-r1]", 1.0, 0.1, 0.0)])
    assert found.verdict == verdict
    assert found.saved_j_per_request == pytest.approx(control_j - cached_j)
    assert found.saved_half_width_j == pytest.approx(math.hypot(*spreads))
    assert found.saved_share == pytest.approx((control_j - cached_j) / control_j)


def test_without_energy_the_saving_is_unmeasured_and_the_line_says_so() -> None:
    cached = benchmark("b[x-replay]", None, None, 0.55)
    (found,) = cache_savings([cached, benchmark("b[x-replay-nocache]", None, None, 0.0)])
    assert found.verdict == UNMEASURED and found.saved_j_per_request is None
    assert saving_line(found) == (
        "prefix cache b[x-replay]: energy not measured; 55 % of prompt tokens cached against 0 % in its control; "
        "mean TTFT 10 ms against 10 ms"
    )

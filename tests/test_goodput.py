"""Goodput from hand-made records whose TTFT, TPOT and E2E are exact in binary, so every figure (and every
inclusive boundary) can be checked on paper."""

from __future__ import annotations

import pytest

from plugin.analysis.accounting import energy_per_work, rates, work_inside
from plugin.analysis.goodput import attainment_interval_pct, attainment_summary, is_good
from plugin.option_values import GoodputTargets
from plugin.records.requests import RequestRecord


def record(token_times_s: tuple[float, ...], error: str | None = None) -> RequestRecord:
    """Sent (and due) at 0, ended with its last token."""
    return RequestRecord(
        index=0,
        prompt_len=10,
        max_tokens=len(token_times_s),
        due_s=0.0,
        send_s=0.0,
        first_token_s=token_times_s[0] if token_times_s else None,
        token_times_s=token_times_s,
        end_s=token_times_s[-1] if token_times_s else 0.5,
        prompt_tokens=10,
        completion_tokens=len(token_times_s) if token_times_s else None,
        error=error,
    )


#                                              TTFT ms  TPOT ms  E2E ms   tokens
A = record((0.125, 0.25, 0.375))  #            125      125      375      3
B = record((0.5, 0.625))  #                    500      125      625      2
C = record((0.0625, 0.5625, 1.0625))  #        62.5     500      1062.5   3
D = record((0.25,))  #                         250      0 (one)  250      1
F = record((0.015625, 0.03125), error="boom")  # fast on every target, but failed
RECORDS = [A, B, C, D, F]
ENERGY_J, DURATION_S = 100.0, 2.0


def good(targets: GoodputTargets) -> list[str]:
    return [name for name, r in zip("ABCDF", RECORDS, strict=True) if is_good(r, targets)]


def test_each_target_alone_is_inclusive() -> None:
    assert good(GoodputTargets(ttft_ms=250)) == ["A", "C", "D"]  # D's 250 ms meets a 250 ms target
    assert good(GoodputTargets(tpot_ms=125)) == ["A", "B", "D"]
    assert good(GoodputTargets(e2el_ms=375)) == ["A", "D"]
    assert good(GoodputTargets(e2el_ms=374)) == ["D"]


def test_targets_combined_must_all_be_met() -> None:
    assert good(GoodputTargets(ttft_ms=250, tpot_ms=125)) == ["A", "D"]
    assert good(GoodputTargets(ttft_ms=500, tpot_ms=500, e2el_ms=700)) == ["A", "B", "D"]


def test_one_output_token_counts_as_tpot_zero() -> None:
    """vLLM's rule: a one-token answer has no time per output token, and meets any TPOT target."""
    assert good(GoodputTargets(tpot_ms=1)) == ["D"]
    assert good(GoodputTargets(ttft_ms=200, tpot_ms=1)) == []  # the TTFT target still applies to it


def test_failed_or_tokenless_requests_are_never_good() -> None:
    assert not is_good(F, GoodputTargets(ttft_ms=10_000, tpot_ms=10_000, e2el_ms=10_000))
    assert not is_good(record(()), GoodputTargets(e2el_ms=10_000))  # succeeded without a token
    assert good(GoodputTargets()) == ["A", "B", "C", "D"]  # no target: every successful request is good


def figures(records: list[RequestRecord], targets: GoodputTargets, energy_j: float | None) -> dict[str, object]:
    """Attainment over ``records``, goodput and energy over the work they did inside a 2 s window."""
    work = work_inside(records, 0.0, DURATION_S, [r for r in records if is_good(r, targets)])
    return {**attainment_summary(records, targets), **rates(work), **energy_per_work(energy_j, work)}


def test_attainment_goodput_and_energy_per_good_request_and_token() -> None:
    summary = figures(RECORDS, GoodputTargets(ttft_ms=250), ENERGY_J)
    assert summary["goodput_targets_ms"] == {"ttft": 250.0}
    assert summary["good_requests"] == 3  # A, C, D
    assert summary["slo_attainment_pct"] == pytest.approx(60.0)  # 3 of the 5 sent: the failed one counts
    assert summary["goodput_rps"] == pytest.approx(1.5)  # 3 good in 2 s
    assert summary["energy_per_good_request_j"] == pytest.approx(100.0 / 3)
    assert summary["energy_per_good_output_token_j"] == pytest.approx(100.0 / 7)  # 3 + 3 + 1 tokens
    combined = figures(RECORDS, GoodputTargets(ttft_ms=250, tpot_ms=125, e2el_ms=2000), ENERGY_J)
    assert combined["goodput_targets_ms"] == {"ttft": 250.0, "tpot": 125.0, "e2el": 2000.0}
    assert (combined["good_requests"], combined["slo_attainment_pct"]) == (2, pytest.approx(40.0))  # A, D
    assert combined["goodput_rps"] == pytest.approx(1.0)
    assert combined["energy_per_good_request_j"] == pytest.approx(50.0)
    assert combined["energy_per_good_output_token_j"] == pytest.approx(25.0)  # 3 + 1 tokens


def test_failed_requests_lower_the_attainment() -> None:
    summary = figures([A, F], GoodputTargets(ttft_ms=250), ENERGY_J)
    assert (summary["good_requests"], summary["slo_attainment_pct"]) == (1, pytest.approx(50.0))
    assert summary["energy_per_good_request_j"] == pytest.approx(100.0)  # the failed one's energy is charged too


def test_missing_energy_gives_none_never_zero() -> None:
    summary = figures(RECORDS, GoodputTargets(ttft_ms=250), None)
    assert summary["energy_per_good_request_j"] is None
    assert summary["energy_per_good_output_token_j"] is None
    assert (summary["good_requests"], summary["slo_attainment_pct"]) == (3, pytest.approx(60.0))


def test_no_good_request_gives_no_energy_per_good_request() -> None:
    summary = figures(RECORDS, GoodputTargets(ttft_ms=10), ENERGY_J)
    assert (summary["good_requests"], summary["slo_attainment_pct"], summary["goodput_rps"]) == (0, 0.0, 0.0)
    assert summary["energy_per_good_request_j"] is None
    assert summary["energy_per_good_output_token_j"] is None
    empty = attainment_summary([], GoodputTargets(ttft_ms=10))
    assert empty["slo_attainment_pct"] is None
    assert (empty["slo_attainment_low_pct"], empty["slo_attainment_high_pct"]) == (None, None)


@pytest.mark.parametrize(
    ("good", "total", "low", "high"),
    [  # Wilson's score interval as published (e.g. statsmodels' proportion_confint(method="wilson")), in %
        (9, 10, 59.585, 98.212),
        (10, 10, 72.247, 100.0),
        (0, 10, 0.0, 27.753),
        (90, 100, 82.563, 94.477),
        (1, 1, 20.654, 100.0),
    ],
)
def test_attainment_interval_is_wilsons(good: int, total: int, low: float, high: float) -> None:
    assert attainment_interval_pct(good, total) == (pytest.approx(low, abs=1e-3), pytest.approx(high, abs=1e-3))


def test_all_met_still_has_an_interval_below_100() -> None:
    """All 20 requests met: the point estimate is 100 %, but 20 requests cannot prove a 90 % attainment."""
    summary = attainment_summary([A] * 20, GoodputTargets(ttft_ms=250))
    assert summary["slo_attainment_pct"] == 100.0
    assert summary["slo_attainment_low_pct"] < 90.0
    assert attainment_interval_pct(0, 0) is None

"""One accounting per round: which requests the latency figures count and which work the throughput and energy
figures divide by, on hand-made rounds whose answers are known."""

from __future__ import annotations

import pytest

from plugin.analysis.accounting import Work, arrival_rate_rps, counted, energy_per_work, rates, work_inside
from plugin.analysis.benchmark import benchmark_result
from plugin.measurement import Measurement, Round
from plugin.records.requests import RequestRecord
from plugin.records.topology import DEFAULT_TOPOLOGIES
from plugin.records.workload import Workload
from tests.test_uncertainty import _window


def request(due_s: float, first_s: float | None, end_s: float, tokens: int = 4, prompt: int = 100) -> RequestRecord:
    """Sent when due; ``tokens`` output tokens spread evenly from the first token to the end."""
    times = () if first_s is None else tuple(first_s + (end_s - first_s) * i / (tokens - 1) for i in range(tokens))
    return RequestRecord(
        index=0, prompt_len=prompt, max_tokens=tokens, due_s=due_s, send_s=due_s, first_token_s=first_s,
        token_times_s=times, end_s=end_s, prompt_tokens=prompt if first_s is not None else None,
        completion_tokens=tokens if first_s is not None else None, error=None if first_s is not None else "HTTP 500",
    )  # fmt: skip


# A steady-state round: window 10-20 s, measured stretch 10-20 s by the schedule.
BEFORE = request(9.0, 10.5, 12.0)  # due before the stretch (keeps the batch full), all its work inside the window
WHOLE = request(11.0, 11.5, 13.0)  # due, prefilled and finished inside
CUT = request(18.0, 19.5, 22.5)  # prefilled inside, 2 of its 4 tokens (19.5, 20.5, 21.5, 22.5) inside, ends after
LATE = request(19.9, 20.5, 21.0)  # due inside, all its work after the window: the drain
FAILED = request(12.0, None, 12.5)  # due inside, failed: counted for attainment, no work
ROUND = [BEFORE, WHOLE, CUT, LATE, FAILED]


def test_latency_counts_the_requests_due_in_the_stretch() -> None:
    assert counted(ROUND, (10.0, 20.0)) == [WHOLE, CUT, LATE, FAILED]
    assert counted(ROUND, None) == ROUND  # a closed loop counts every request


def test_throughput_and_energy_count_only_the_work_inside_the_window() -> None:
    work = work_inside(ROUND, 10.0, 20.0)
    assert work == Work(window_s=10.0, completed=2, prompt_tokens=300, output_tokens=4 + 4 + 1)
    # BEFORE and WHOLE completed inside; BEFORE, WHOLE and CUT prefilled inside; CUT's first token only
    assert rates(work) == {
        "request_throughput": pytest.approx(0.2),
        "output_throughput": pytest.approx(0.9),
        "total_token_throughput": pytest.approx(30.9),
    }


def test_the_drain_after_the_window_is_in_no_figure() -> None:
    """A saturated server keeps finishing requests after the window closed: they change no figure of it."""
    drained = [*ROUND, request(19.0, 25.0, 30.0), request(19.5, 31.0, 40.0)]
    assert work_inside(drained, 10.0, 20.0) == work_inside(ROUND, 10.0, 20.0)
    figures = energy_per_work(900.0, work_inside(drained, 10.0, 20.0))
    assert figures["output_tokens_per_j"] == pytest.approx(9 / 900.0)
    assert figures["energy_per_output_token_j"] == pytest.approx(100.0)
    assert figures["energy_per_request_j"] == pytest.approx(450.0)


def test_good_requests_inside_the_window() -> None:
    work = work_inside(ROUND, 10.0, 20.0, good=[WHOLE, CUT])
    assert (work.good_completed, work.good_output_tokens) == (1, 4 + 1)
    figures = energy_per_work(900.0, work)
    assert figures["energy_per_good_request_j"] == pytest.approx(900.0)
    assert figures["energy_per_good_output_token_j"] == pytest.approx(180.0)
    assert rates(work)["goodput_rps"] == pytest.approx(0.1)


def test_a_closed_loop_window_holds_every_request_whole() -> None:
    requests = [request(0.0, 0.5, 1.0), request(0.0, 0.7, 2.0, tokens=8), request(0.0, None, 0.1)]
    assert work_inside(requests, -0.1, 2.1) == Work(pytest.approx(2.2), 2, 200, 12)  # type: ignore[arg-type]


def test_rounds_add_up() -> None:
    one, two = work_inside(ROUND, 10.0, 20.0, good=[WHOLE]), work_inside([WHOLE], 0.0, 20.0, good=[])
    assert one + two == Work(30.0, 3, 400, 13, 1, 4)
    assert (one + work_inside([WHOLE], 0.0, 20.0)).good_completed is None  # unknown stays unknown


def test_no_energy_or_no_work_gives_none_never_zero() -> None:
    figures = energy_per_work(None, work_inside(ROUND, 10.0, 20.0))
    assert all(value is None for value in figures.values())
    empty = energy_per_work(100.0, Work(10.0, 0, 0, 0))
    assert empty["energy_per_request_j"] is None and empty["energy_per_output_token_j"] is None
    assert empty["output_tokens_per_j"] == 0.0


def test_offered_load_as_it_was_drawn() -> None:
    """A draw of 5 arrivals spanning 1.6 s offered 4 gaps in 1.6 s: 2.5 req/s, whatever the nominal rate; a
    steady-state stretch offered its arrivals over its length."""
    due = [0.0, 0.3, 0.4, 1.2, 1.6]
    assert arrival_rate_rps([(due, None)]) == pytest.approx(2.5)
    assert arrival_rate_rps([(due, (0.0, 2.0))]) == pytest.approx(2.5)  # 5 in 2 s
    assert arrival_rate_rps([(due, (0.0, 2.0)), ([3.0], (2.0, 4.0))]) == pytest.approx(1.5)  # 6 in 4 s
    assert arrival_rate_rps([([0.0, 0.0, 0.0], None)]) is None  # all at once
    assert arrival_rate_rps([([1.0], None)]) is None


def test_a_window_no_request_completed_in_says_why_it_has_no_figure_per_request() -> None:
    """Past saturation every request can outlast a steady-state window: the tokens made inside it still give
    tokens per joule, but there is no completion to divide by, and the summary says why."""
    window = _window(10.0, 20.0, 500.0, 5000.0, 0.1)
    slow = request(11.0, 15.0, 40.0, tokens=26)  # due inside, first token inside, ends 20 s after the window
    one_round = Round(0, (slow,), window, window.duration_s, counted_s=(10.0, 20.0))
    result = benchmark_result(
        "test_serving[x]", "test_serving[x]", DEFAULT_TOPOLOGIES[0], Workload("serving", 0, 0, 0, 0, duration_s=20.0),
        Measurement((), (one_round,), {}, {}), {0: "prefill+decode"}, None, "requests.jsonl",
    )  # fmt: skip
    summary = result.summary
    assert summary["window_completed"] == 0 and summary["request_throughput"] == 0.0
    assert summary["energy_per_request_j"] is None and result.power.energy_per_request_j is None
    assert summary["window_output_tokens"] == 6  # 15, 16, ... 20 s
    assert summary["output_tokens_per_j"] == pytest.approx(6 / 5000.0)
    assert "no request completed inside a power window" in summary["window_note"]
    whole = Round(0, (request(11.0, 12.0, 14.0),), window, window.duration_s, counted_s=(10.0, 20.0))
    again = benchmark_result(
        "test_serving[x]", "test_serving[x]", DEFAULT_TOPOLOGIES[0], Workload("serving", 0, 0, 0, 0, duration_s=20.0),
        Measurement((), (whole,), {}, {}), {0: "prefill+decode"}, None, "requests.jsonl",
    )  # fmt: skip
    assert again.summary["window_note"] is None and again.summary["energy_per_request_j"] == pytest.approx(5000.0)

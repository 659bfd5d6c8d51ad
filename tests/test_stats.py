"""Summary metrics from hand-made records with known timestamps, so every figure can be checked by hand."""

from __future__ import annotations

import pytest

from plugin.analysis.stats import summarize, tbt_gaps_s
from plugin.records.requests import RequestRecord

METRICS = ("ttft", "tbt", "tpot", "e2el", "queue")
KINDS = ("mean", "median", "p90", "p99")


def record(
    due_s: float,
    send_s: float,
    token_times_s: tuple[float, ...],
    end_s: float,
    prompt_tokens: int | None,
    error: str | None = None,
) -> RequestRecord:
    return RequestRecord(
        index=0,
        prompt_len=prompt_tokens or 0,
        max_tokens=len(token_times_s),
        due_s=due_s,
        send_s=send_s,
        first_token_s=token_times_s[0] if token_times_s else None,
        token_times_s=token_times_s,
        end_s=end_s,
        prompt_tokens=prompt_tokens,
        completion_tokens=len(token_times_s) if token_times_s else None,
        error=error,
    )


# TTFT 0.1 / 0.3 / 0.2 s; E2E 0.5 / 0.4 / 0.2 s; TBT gaps 0.1, 0.2 | 0.1 | none; TPOT 0.2 / 0.1 / none;
# queue 0 / 1.0 / 0. The failed one would shift every figure (and the queue) if it were counted.
THREE_TOKENS = record(0.0, 0.0, (0.1, 0.2, 0.4), 0.5, prompt_tokens=10)
TWO_TOKENS_QUEUED = record(0.0, 1.0, (1.3, 1.4), 1.4, prompt_tokens=20)
ONE_TOKEN = record(0.0, 0.0, (0.2,), 0.2, prompt_tokens=30)
FAILED_MID_STREAM = record(0.0, 1.5, (1.6, 1.7), 2.0, prompt_tokens=40, error="error in stream: boom")
RECORDS = [THREE_TOKENS, TWO_TOKENS_QUEUED, ONE_TOKEN, FAILED_MID_STREAM]


def test_n_tokens_give_n_minus_one_gaps() -> None:
    assert tbt_gaps_s(THREE_TOKENS) == pytest.approx([0.1, 0.2])
    assert tbt_gaps_s(record(0.0, 0.0, (1.0, 1.5, 1.75, 2.0, 3.0), 3.0, 5)) == pytest.approx([0.5, 0.25, 0.25, 1.0])
    assert tbt_gaps_s(ONE_TOKEN) == []


def test_a_chunk_of_several_tokens_gives_one_gap_as_vllm_times_itl() -> None:
    """Tokens of one chunk share its arrival: ITL is chunk to chunk (vLLM's ``bench serve``), no zero gaps."""
    assert tbt_gaps_s(record(0.0, 0.0, (1.0, 1.0, 1.0, 1.5, 1.5, 2.0), 2.0, 6)) == pytest.approx([0.5, 0.5])


def test_summary_has_every_vllm_key() -> None:
    summary = summarize(RECORDS)
    for metric in METRICS:
        for kind in KINDS:
            assert isinstance(summary[f"{kind}_{metric}_ms"], float), f"{kind}_{metric}_ms"


def test_counts_and_failures() -> None:
    summary = summarize(RECORDS)
    assert (summary["requests"], summary["completed"], summary["failed"]) == (4, 3, 1)
    assert summary["errors"] == ["error in stream: boom"]
    assert summary["total_input_tokens"] == 60
    assert summary["total_output_tokens"] == 6


def test_ttft_percentiles_in_ms() -> None:
    summary = summarize(RECORDS)
    # numpy's linear percentiles of [100, 200, 300]: p90 at rank 1.8, p99 at rank 1.98.
    assert summary["mean_ttft_ms"] == pytest.approx(200.0)
    assert summary["median_ttft_ms"] == pytest.approx(200.0)
    assert summary["p90_ttft_ms"] == pytest.approx(280.0)
    assert summary["p99_ttft_ms"] == pytest.approx(298.0)


def test_tbt_tpot_e2e_and_queue_exclude_the_failed_request() -> None:
    summary = summarize(RECORDS)
    # Three gaps in all: 2 from the three-token request, 1 from the two-token one, 0 from the one-token one.
    assert summary["mean_tbt_ms"] == pytest.approx(400.0 / 3)
    assert summary["median_tbt_ms"] == pytest.approx(100.0)
    assert summary["mean_tpot_ms"] == pytest.approx(150.0)
    assert summary["median_tpot_ms"] == pytest.approx(150.0)
    assert summary["mean_e2el_ms"] == pytest.approx(1100.0 / 3)
    assert summary["median_e2el_ms"] == pytest.approx(400.0)
    assert summary["mean_queue_ms"] == pytest.approx(1000.0 / 3)
    assert summary["median_queue_ms"] == pytest.approx(0.0)


def test_phase_rates_over_the_requests_spans() -> None:
    summary = summarize(RECORDS)
    assert "request_throughput" not in summary  # throughput is the work inside the window (test_accounting)
    # Prompt tokens over first send (0.0) -> last first token (1.3); tokens after the first over 0.1 -> 1.4.
    assert summary["prefill_tokens_per_s"] == pytest.approx(60 / 1.3)
    assert summary["decode_tokens_per_s"] == pytest.approx(3 / 1.3)


def test_empty_input_gives_none() -> None:
    summary = summarize([])
    assert (summary["requests"], summary["completed"], summary["failed"]) == (0, 0, 0)
    assert summary["prefill_tokens_per_s"] is None and summary["decode_tokens_per_s"] is None
    assert all(summary[f"{kind}_{metric}_ms"] is None for metric in METRICS for kind in KINDS)


def test_only_failures_give_no_latencies() -> None:
    summary = summarize([FAILED_MID_STREAM, record(0.0, 0.0, (), 0.5, None, error="HTTP 500: x")])
    assert (summary["completed"], summary["failed"]) == (0, 2)
    assert summary["errors"] == ["HTTP 500: x", "error in stream: boom"]
    assert summary["total_output_tokens"] == 0
    assert all(summary[f"{kind}_{metric}_ms"] is None for metric in METRICS for kind in KINDS)

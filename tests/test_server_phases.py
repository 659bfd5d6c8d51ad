"""Server-side phase times from two scrapes made by vLLM 0.32's own stat logger (``tests/data/vllm-metrics``):
between them requests B (engine 0) and C (engine 1) finished, so every delta is B + C, worked out by hand from
``capture.py``'s table; then a histogram the server lacks, an older name, a restart, no scrape at all, and the
figures in a benchmark's summary."""

from __future__ import annotations

from pathlib import Path

import pytest

from plugin import prometheus_text
from plugin.analysis.benchmark import benchmark_result
from plugin.analysis.server_phases import PHASE_HISTOGRAMS, server_phase_times
from plugin.measurement import Measurement, Round
from plugin.power.window import WindowMeasurement
from plugin.records.requests import RequestRecord
from plugin.records.topology import parse_topology
from plugin.records.workload import Workload

DATA = Path(__file__).parent / "data" / "vllm-metrics"
BEFORE_TEXT = (DATA / "before.txt").read_text()
AFTER_TEXT = (DATA / "after.txt").read_text()


def _without(text: str, name: str) -> str:
    return "".join(line for line in text.splitlines(keepends=True) if name not in line)


def test_deltas_of_two_real_scrapes() -> None:
    phases = server_phase_times(prometheus_text.parse(BEFORE_TEXT), prometheus_text.parse(AFTER_TEXT), "server")
    # (metric, count, sum_s, mean_ms): B + C, e.g. queue 0.5 + 0.0625 s over 2 requests = 281.25 ms
    expected = {
        "queue": ("vllm:request_queue_time_seconds", 2, 0.5625, 281.25),
        "prefill": ("vllm:request_prefill_time_seconds", 2, 0.75, 375.0),
        "decode": ("vllm:request_decode_time_seconds", 2, 3.0, 1500.0),
        "inference": ("vllm:request_inference_time_seconds", 2, 3.75, 1875.0),
        "e2e": ("vllm:e2e_request_latency_seconds", 2, 5.0, 2500.0),
        "ttft": ("vllm:time_to_first_token_seconds", 2, 1.3125, 656.25),
        "itl": ("vllm:inter_token_latency_seconds", 15 + 31, 46 * 0.0625, 62.5),
    }
    for phase, (metric, count, sum_s, mean_ms) in expected.items():
        assert phases[phase] == {"metric": metric, "count": count, "sum_s": sum_s, "mean_ms": mean_ms}, phase
    assert phases["iteration_tokens"] == {
        "metric": "vllm:iteration_tokens_total", "steps": 2, "tokens": 216 + 332, "mean_tokens_per_step": 274.0
    }  # fmt: skip
    assert phases["source"] == "server"
    assert phases["note"] is None


def test_a_histogram_the_server_lacks_is_none_and_named() -> None:
    name = "vllm:request_prefill_time_seconds"
    phases = server_phase_times(prometheus_text.parse(BEFORE_TEXT), prometheus_text.parse(_without(AFTER_TEXT, name)))
    assert phases["prefill"] == {"metric": None, "count": None, "sum_s": None, "mean_ms": None}
    assert phases["note"] == f"the server did not expose {name}"
    assert phases["decode"]["sum_s"] == 3.0


def test_an_older_name_is_used_when_the_new_one_is_absent() -> None:
    def renamed(text: str) -> str:
        return text.replace("vllm:inter_token_latency_seconds", "vllm:time_per_output_token_seconds")

    phases = server_phase_times(prometheus_text.parse(renamed(BEFORE_TEXT)), prometheus_text.parse(renamed(AFTER_TEXT)))
    assert phases["itl"] == {"metric": "vllm:time_per_output_token_seconds", "count": 46, "sum_s": 2.875,
                             "mean_ms": 62.5}  # fmt: skip
    assert phases["note"] is None


def test_a_restart_between_the_scrapes_gives_none_not_a_negative_time() -> None:
    phases = server_phase_times(prometheus_text.parse(AFTER_TEXT), prometheus_text.parse(BEFORE_TEXT))
    assert all(phases[phase]["sum_s"] is None for phase in PHASE_HISTOGRAMS)
    assert phases["iteration_tokens"]["tokens"] is None
    assert "vllm:request_queue_time_seconds" in phases["note"] and "went backwards" in phases["note"]


def test_no_request_finished_between_the_scrapes_counts_zero_with_no_mean() -> None:
    scrape = prometheus_text.parse(AFTER_TEXT)
    phases = server_phase_times(scrape, scrape)
    assert phases["decode"] == {"metric": "vllm:request_decode_time_seconds", "count": 0, "sum_s": 0.0,
                                "mean_ms": None}  # fmt: skip
    assert phases["iteration_tokens"]["mean_tokens_per_step"] is None


def test_no_scrape_gives_nothing_but_a_note() -> None:
    phases = server_phase_times({}, prometheus_text.parse(AFTER_TEXT))
    assert [phases[phase]["count"] for phase in PHASE_HISTOGRAMS] == [None] * len(PHASE_HISTOGRAMS)
    assert phases["iteration_tokens"]["steps"] is None
    assert phases["note"] == "the server's /metrics was not read or has no vLLM histograms"


def _measurement() -> Measurement:
    record = RequestRecord(
        index=0, prompt_len=100, max_tokens=2, due_s=0.0, send_s=0.0, first_token_s=0.5, token_times_s=(0.5, 1.0),
        end_s=1.0, prompt_tokens=100, completion_tokens=2, error=None,
    )  # fmt: skip
    window = WindowMeasurement("w", "none", 0.0, 1.0, (), (), "power is not part of this test")
    return Measurement((), (Round(0, (record,), window, 1.0),), prometheus_text.parse(BEFORE_TEXT),
                       prometheus_text.parse(AFTER_TEXT))  # fmt: skip


@pytest.mark.parametrize(("kind", "source"), [("traditional", "server"),
                                                      ("disaggregated", "decode instance only")])  # fmt: skip
def test_the_summary_carries_them_and_says_whose_they_are(kind: str, source: str) -> None:
    result = benchmark_result(
        "test_e2e[x]", "test_e2e[x]", parse_topology(kind), Workload("e2e", 100, 2, 1, 1), _measurement(), {}, None,
        "requests.jsonl",
    )  # fmt: skip
    phases = result.summary["server_phases"]
    assert phases["source"] == source
    assert phases["e2e"]["mean_ms"] == 2500.0
    assert result.summary["mean_e2el_ms"] == 1000.0  # the client's view beside it

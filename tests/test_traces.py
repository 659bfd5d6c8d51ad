"""Trace replay: Mooncake and Azure files read and checked, arrivals from their timestamps (scaled, sliced), equal
hash ids as equal token blocks, and bad input refused or dropped with a count."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest

from plugin.errors import BenchError
from plugin.load.replay_plan import trace_prefix_reuse
from plugin.load.traces import (
    MOONCAKE_BLOCK_TOKENS,
    NO_OUTPUT,
    TOO_LONG,
    TraceRequest,
    read_trace,
    replay,
    trace_prompts,
)
from plugin.option_values import TraceSlice, trace_slice
from plugin.options import SHIPPED_SHAREGPT

DATA = SHIPPED_SHAREGPT.parent
VOCAB = (2, 1000)


def mooncake(tmp_path: Path, *lines: dict[str, object] | str) -> Path:
    path = tmp_path / "trace.jsonl"
    path.write_text("\n".join(line if isinstance(line, str) else json.dumps(line) for line in lines) + "\n")
    return path


def line(timestamp: float, input_len: int, output_len: int, hash_ids: list[int]) -> dict[str, object]:
    return {"timestamp": timestamp, "input_length": input_len, "output_length": output_len, "hash_ids": hash_ids}


def test_equal_hash_ids_become_equal_blocks_and_the_last_block_is_cut_to_the_length() -> None:
    requests = [
        TraceRequest(1, 0.0, 700, 4, (0, 1)),
        TraceRequest(2, 0.1, 1024, 4, (0, 2)),
        TraceRequest(3, 0.2, 1000, 4, (0, 1)),
    ]
    (first, _), (second, _), (third, _) = trace_prompts(requests, random.Random(1), VOCAB)
    assert [len(first), len(second), len(third)] == [700, 1024, 1000]
    block = MOONCAKE_BLOCK_TOKENS
    assert first[:block] == second[:block] == third[:block]  # hash id 0
    assert first == third[:700]  # hash id 1, cut to 188 tokens in the first
    assert second[block:] != third[block : 2 * block]  # hash ids 2 and 1 differ


def test_each_call_draws_fresh_blocks_so_rounds_do_not_warm_each_other() -> None:
    requests = [TraceRequest(1, 0.0, 512, 4, (7,))]
    rng = random.Random(3)
    assert trace_prompts(requests, rng, VOCAB) != trace_prompts(requests, rng, VOCAB)


def test_arrivals_follow_the_timestamps_scaled_and_sliced(tmp_path: Path) -> None:
    path = mooncake(tmp_path, *(line(t, 100, 4, [t]) for t in (1000, 1500, 4000, 9000)))
    assert replay("mooncake", path, 1.0, TraceSlice(), 4096).due_offsets_s == pytest.approx((0.0, 0.5, 3.0, 8.0))
    assert replay("mooncake", path, 0.5, TraceSlice(), 4096).due_offsets_s == pytest.approx((0.0, 0.25, 1.5, 4.0))
    sliced = replay("mooncake", path, 1.0, TraceSlice(1.2, 4.0), 4096)  # trace time 1.5 s and 4.0 s: END excluded
    assert sliced.due_offsets_s == pytest.approx((0.0,))
    assert [r.line for r in sliced.requests] == [2]


def test_requests_that_cannot_be_sent_are_dropped_with_their_reason_and_the_clock_stays(tmp_path: Path) -> None:
    path = mooncake(tmp_path, line(0, 100, 4, [1]), line(1000, 3000, 4, [2, 3, 4, 5, 6, 7]), line(2000, 100, 0, [8]),
                    line(3000, 100, 4, [9]))  # fmt: skip
    result = replay("mooncake", path, 1.0, TraceSlice(), 2048)
    assert result.dropped == {TOO_LONG: 1, NO_OUTPUT: 1}
    assert result.in_slice == 4
    assert result.due_offsets_s == pytest.approx((0.0, 3.0))  # the last still arrives 3 s after the first


@pytest.mark.parametrize(
    ("lines", "message"),
    [
        (['{"timestamp": 0, "input_length": 5, "hash_ids": [1]}'], "line 1: no output_length"),
        (["not json"], "line 1: not valid JSON"),
        ([line(0, 5, 1, [1]), line(-0.5 + 0, 5, 1, [2])], "line 2: its timestamp is 0.0005 s before line 1"),
        ([line(0, 600, 1, [2])], "line 1: 1 hash ids for 600 prompt tokens"),
        ([line(0, 5.5, 1, [1])], "whole numbers"),
        ([line("soon", 5, 1, [1])], "not a number of milliseconds"),  # type: ignore[arg-type]
        ([], "holds no request"),
    ],
)
def test_a_bad_mooncake_line_is_an_error_naming_it(tmp_path: Path, lines: list[object], message: str) -> None:
    path = mooncake(tmp_path, *lines)  # type: ignore[arg-type]
    with pytest.raises(BenchError, match=message):
        read_trace("mooncake", path)


def test_unreadable_lines_among_good_ones_are_skipped_and_counted(tmp_path: Path) -> None:
    path = mooncake(tmp_path, line(0, 5, 1, [1]), "not json", line(1000, 600, 1, [2]), line(2000, 5, 1, [3]))
    result = replay("mooncake", path, 1.0, TraceSlice(), 4096)
    assert [r.line for r in result.requests] == [1, 4] and result.skipped.count == 2
    assert str(result.skipped.first).startswith(f"{path}, line 2: not valid JSON")
    azure = tmp_path / "azure.csv"
    azure.write_text("TIMESTAMP,ContextTokens,GeneratedTokens\n2023-11-16 18:15:46,3,4\nyesterday,3,4\n")
    requests, skipped = read_trace("azure", azure)
    assert len(requests) == 1 and skipped.count == 1 and "line 3: TIMESTAMP 'yesterday'" in str(skipped.first)


def test_a_slice_without_requests_and_a_trace_that_fits_nowhere_are_errors(tmp_path: Path) -> None:
    path = mooncake(tmp_path, line(0, 1000, 4, [1, 2]))
    with pytest.raises(BenchError, match="no request arrives inside --trace-slice 5:"):
        replay("mooncake", path, 1.0, TraceSlice(5.0, None), 4096)
    too_long = r"none of the 1 requests .*\(1 too long for model, .*max_model_len 512.*raise --max-model-len"
    with pytest.raises(BenchError, match=too_long):
        replay("mooncake", path, 1.0, TraceSlice(), 512)


def test_azure_rows_arrive_at_their_timestamps(tmp_path: Path) -> None:
    path = tmp_path / "azure.csv"
    path.write_text(
        "TIMESTAMP,ContextTokens,GeneratedTokens\n"
        "2023-11-16 18:15:46.6805900,374,44\n2023-11-16 18:15:47.1805900,80,3\n2023-11-16 18:15:50.6805900,10,1\n"
    )
    result = replay("azure", path, 2.0, TraceSlice(), 4096)
    assert result.due_offsets_s == pytest.approx((0.0, 1.0, 8.0))
    lengths = [(r.input_len, r.output_len, r.hash_ids) for r in result.requests]
    assert lengths == [(374, 44, ()), (80, 3, ()), (10, 1, ())]
    prompts = trace_prompts(result.requests, random.Random(0), VOCAB)
    assert [len(prompt) for prompt, _ in prompts] == [374, 80, 10]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("TIMESTAMP,ContextTokens\n2023-11-16 18:15:46,3\n", "no column GeneratedTokens"),
        ("TIMESTAMP,ContextTokens,GeneratedTokens\nyesterday,3,4\n", "line 2: TIMESTAMP 'yesterday'"),
        ("TIMESTAMP,ContextTokens,GeneratedTokens\n2023-11-16 18:15:46,3,\n", "line 2: a value of"),
        (
            "TIMESTAMP,ContextTokens,GeneratedTokens\n2023-11-16 18:15:46,3,4\n2023-11-16 18:15:45,3,4\n",
            "line 3: its timestamp is 1 s before line 2",
        ),
    ],
)
def test_a_bad_azure_row_is_an_error_naming_it(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "azure.csv"
    path.write_text(text)
    with pytest.raises(BenchError, match=message):
        read_trace("azure", path)


@pytest.mark.parametrize(
    ("text", "expected"),
    [("0:600", TraceSlice(0.0, 600.0)), ("3600:", TraceSlice(3600.0, None)), (":10", TraceSlice(None, 10.0))],
)
def test_trace_slice_values(text: str, expected: TraceSlice) -> None:
    assert trace_slice(text) == expected


@pytest.mark.parametrize(("text", "message"), [("600", "START:END"), ("5:2", "after START"), ("a:b", "seconds")])
def test_bad_trace_slices(text: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        trace_slice(text)


def test_prefix_reuse_of_a_trace_counts_the_tokens_an_earlier_request_had() -> None:
    requests = [
        TraceRequest(1, 0.0, 700, 1, (0, 1)),  # nothing seen: 0 of 700
        TraceRequest(2, 0.0, 1024, 1, (0, 1)),  # block 0 whole (512) and the 188 tokens of block 1 sent before
        TraceRequest(3, 0.0, 512, 1, (1,)),  # block 1 at the front is another prefix: 0
    ]
    assert trace_prefix_reuse(requests) == pytest.approx((512 + 188) / (700 + 1024 + 512))
    assert trace_prefix_reuse([TraceRequest(1, 0.0, 10, 1)]) is None


def test_the_shipped_traces_read_and_the_mooncake_one_repeats_blocks() -> None:
    assert len(read_trace("azure", DATA / "azure-tiny.csv")[0]) == 10
    shipped, skipped = read_trace("mooncake", DATA / "mooncake-tiny.jsonl")
    assert skipped.count == 0
    reuse = trace_prefix_reuse(shipped)
    assert reuse is not None and reuse > 0.3


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        (["--dataset=mooncake:{bad}"], "{bad}, line 2: its timestamp is 1 s before line 1*sort the file*"),
        (["--dataset=mooncake:{good}", "--trace-slice=50:"], "{good}: no request arrives inside --trace-slice 50:*"),
        (["--dataset=mooncake:{good}", "--trace-time-scale=0"], "--trace-time-scale='0': must be a positive number"),
        (["--dataset=sessions:{empty}"], "{empty} has no session with a turn*"),
    ],
)
def test_a_bad_replay_file_is_a_usage_error_before_any_server_starts(
    pytester: pytest.Pytester, arguments: list[str], message: str
) -> None:
    bad = mooncake(pytester.path, line(1000, 5, 1, [1]), line(0, 5, 1, [2]))
    good = bad.with_name("good.jsonl")
    good.write_text(json.dumps(line(0, 5, 1, [1])) + "\n")
    empty = bad.with_name("sessions.jsonl")
    empty.write_text('{"session_id": "a", "turns": []}\n')
    paths = {"bad": bad, "good": good, "empty": empty}
    result = pytester.runpytest(*(argument.format(**paths) for argument in arguments))
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines([f"ERROR: {message.format(**paths)}*"])


def test_a_ramp_needs_its_three_options(pytester: pytest.Pytester) -> None:
    result = pytester.runpytest("--ramp-up-strategy=linear", "--ramp-up-start-rps=1")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["ERROR: --ramp-up-strategy, --ramp-up-start-rps and --ramp-up-end-rps go together*"])
    bad = pytester.runpytest("--ramp-up-strategy=step", "--ramp-up-start-rps=1", "--ramp-up-end-rps=2")
    bad.stderr.fnmatch_lines(["ERROR: --ramp-up-strategy='step': expected one of linear, exponential"])

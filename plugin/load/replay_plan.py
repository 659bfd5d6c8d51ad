"""The schedules of a serving benchmark whose requests come from a trace (its own arrivals) or from multi-turn
sessions (arriving open-loop, each turn after the previous answer), and what the results record of them: the
requests dropped and why, and the prefix reuse the file itself holds (what a perfect cache could skip)."""

from __future__ import annotations

import random
from collections.abc import Sequence
from typing import Any

from plugin.errors import BenchError
from plugin.load.datasets import Tokenizer
from plugin.load.schedule import Arrivals, Schedule, arrival_offsets, measured_stretch
from plugin.load.sessions import (
    EMPTY_SESSION,
    SESSIONS_TOO_LONG,
    Session,
    fitting,
    read_sessions,
    session_requests,
    tokenize,
)
from plugin.load.traces import MOONCAKE_BLOCK_TOKENS, TOO_LONG, TraceRequest, replay, trace_prompts
from plugin.option_values import DatasetSpec, TraceSlice


def trace_schedules(
    spec: DatasetSpec,
    arrivals: Arrivals,
    rounds: int,
    time_scale: float,
    window: TraceSlice,
    rng: random.Random,
    vocab: tuple[int, int],
    max_model_len: int,
    warmup_requests: int,
) -> tuple[Schedule, tuple[Schedule, ...], dict[str, Any]]:
    """The warm-up, one schedule per round (the same arrivals, each round its own tokens per hash id) and the
    dataset's entry."""
    assert spec.path is not None
    trace = replay(spec.kind, spec.path, time_scale, window, max_model_len, spec.id)
    schedules = tuple(
        Schedule(tuple(trace_prompts(trace.requests, rng, vocab)), trace.due_offsets_s, arrivals.concurrency)
        for _ in range(rounds)
    )
    warmup_request = trace_prompts(trace.requests[:1], rng, vocab)[0]
    warmup = Schedule((warmup_request,) * warmup_requests, (0.0,) * warmup_requests, None)
    prompts = [request.input_len for request in trace.requests]
    entry = {
        "source": trace.source,
        "requests_drawn": len(trace.requests) * rounds,
        "skipped_by_length": 0,
        "too_long_for_model": trace.dropped.get(TOO_LONG, 0),
        "unreadable_entries": trace.skipped.count,
        "mean_prompt_tokens": sum(prompts) / len(prompts),
        "mean_output_tokens": sum(request.output_len for request in trace.requests) / len(trace.requests),
        "requests_in_slice": trace.in_slice,
        "requests_per_round": len(trace.requests),
        "dropped": trace.dropped,
        "trace_time_scale": time_scale,
        "trace_slice": window.text,
        "replay_span_s": trace.due_offsets_s[-1],
        "trace_prefix_reuse": trace_prefix_reuse(trace.requests),
    }
    return warmup, schedules, entry


def trace_prefix_reuse(requests: Sequence[TraceRequest]) -> float | None:
    """The share of prompt tokens in blocks whose whole prefix of hash ids an earlier request of the slice had: the
    hit rate of an unbounded prefix cache of 512-token blocks. ``None`` for a trace without hash ids."""
    if not any(request.hash_ids for request in requests):
        return None
    seen: dict[tuple[int, ...], int] = {}  # a prefix of hash ids: the most tokens of its last block sent so far
    reused = total = 0
    for request in requests:
        for blocks in range(1, len(request.hash_ids) + 1):
            prefix = request.hash_ids[:blocks]
            tokens = min(MOONCAKE_BLOCK_TOKENS, request.input_len - (blocks - 1) * MOONCAKE_BLOCK_TOKENS)
            reused += min(tokens, seen.get(prefix, 0))
            seen[prefix] = max(tokens, seen.get(prefix, 0))
        total += request.input_len
    return reused / total if total else None


def session_schedules(
    spec: DatasetSpec,
    arrivals: Arrivals,
    rounds: int,
    sessions_per_round: int,
    burstiness: float,
    think_time_s: float,
    rng: random.Random,
    tokenizer: Tokenizer | None,
    vocab: tuple[int, int],
    max_model_len: int,
    prefix_tokens: int,
    warmup_requests: int,
) -> tuple[Schedule, tuple[Schedule, ...], dict[str, Any]]:
    """The warm-up (a first turn of its own), one schedule per round (sessions arriving as ``arrivals`` says, the
    next ones of the shuffled file each round) and the dataset's entry."""
    assert spec.path is not None
    file = read_sessions(spec.path)
    sessions, dropped = fitting(tokenize(file, tokenizer, rng, vocab, spec.path), prefix_tokens, max_model_len)
    if file.empty:
        dropped[EMPTY_SESSION] = file.empty
    if not sessions:
        raise BenchError(
            f"no session of {spec.path} fits the model's max_model_len {max_model_len} ({_reasons(dropped)}); raise "
            "--max-model-len or use shorter conversations"
        )
    rng.shuffle(sessions)
    taken = 0
    schedules = []
    for _ in range(rounds):
        offsets = arrival_offsets(arrivals, sessions_per_round, burstiness, rng)
        rotated = [sessions[(taken + i) % len(sessions)] for i in range(len(sessions))]
        taken += len(offsets)
        laid = session_requests(rotated, offsets, think_time_s, rng, vocab, prefix_tokens)
        schedules.append(
            Schedule(laid.requests, laid.due_offsets_s, arrivals.concurrency, *measured_stretch(arrivals), laid.follows)
        )
    first_turn = Session(sessions[0].turns[:1])
    warmup_request = session_requests([first_turn], [0.0], 0.0, rng, vocab, prefix_tokens).requests[0]
    warmup = Schedule((warmup_request,) * warmup_requests, (0.0,) * warmup_requests, None)
    in_file = len(file.sessions) + file.empty
    entry = _session_entry(spec, in_file, sessions, schedules, dropped, think_time_s, prefix_tokens)
    return warmup, tuple(schedules), {**entry, "unreadable_entries": file.skipped.count}


def _session_entry(
    spec: DatasetSpec,
    in_file: int,
    sessions: Sequence[Session],
    schedules: Sequence[Schedule],
    dropped: dict[str, int],
    think_time_s: float,
    prefix_tokens: int,
) -> dict[str, Any]:
    requests = [request for schedule in schedules for request in schedule.requests]
    prompts = [len(prompt) for prompt, _ in requests]
    turns = [len(session.turns) for session in sessions]
    return {
        "source": f"sessions:{spec.path}",
        "requests_drawn": len(requests),
        "skipped_by_length": 0,
        "too_long_for_model": dropped.get(SESSIONS_TOO_LONG, 0),
        "mean_prompt_tokens": sum(prompts) / len(prompts) if prompts else None,
        "mean_output_tokens": sum(n for _, n in requests) / len(requests) if requests else None,
        "sessions_in_file": in_file,
        "sessions_kept": len(sessions),
        "mean_turns_per_session": sum(turns) / len(turns),
        "dropped": dropped,
        "think_time_s": think_time_s,
        "session_prefix_tokens": prefix_tokens,
        "history_reuse": _history_reuse(schedules),
    }


def _history_reuse(schedules: Sequence[Schedule]) -> float | None:
    """The share of prompt tokens that repeat the session's previous prompt (the history a cache could skip)."""
    reused = total = 0
    for schedule in schedules:
        for index, (prompt, _) in enumerate(schedule.requests):
            previous = schedule.follows[index] if schedule.follows else None
            if previous is not None:
                reused += len(schedule.requests[previous][0])
            total += len(prompt)
    return reused / total if total else None


def _reasons(dropped: dict[str, int]) -> str:
    return ", ".join(f"{count} {reason.replace('_', ' ')}" for reason, count in dropped.items()) or "none fit"

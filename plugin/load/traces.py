"""Request traces recorded in real deployments, replayed at their own timestamps.

- ``mooncake:PATH``: Mooncake's JSONL (FAST'25 traces), one ``{"timestamp": MS, "input_length": N,
  "output_length": N, "hash_ids": [ID, ...]}`` a line. Each hash id names a block of 512 prompt tokens (the last
  block may be partial); equal ids become equal token blocks, so the prefix cache sees the reuse the trace recorded.
- ``azure:PATH``: the Azure LLM inference trace CSV (2023 and 2024 releases): ``TIMESTAMP`` (a date and time),
  ``ContextTokens``, ``GeneratedTokens``. It records no prefix reuse: every prompt is random tokens.

Arrivals are the trace's timestamps, relative to the first request of the slice (``--trace-slice START:END``,
seconds of trace time) and multiplied by ``--trace-time-scale`` (0.5 replays twice as fast), as vLLM's timed trace
(``--timed-trace-sec-multiplier``) and SGLang's Mooncake slowdown factor do. A file is read and checked in full
before any server starts: a line that cannot be read (a missing field, a broken value) is skipped and counted, as
vLLM's loaders skip it, and a file with none left, or whose timestamps go back, is an error naming the line;
requests that cannot be sent (no output, longer than ``--max-model-len``) are dropped and counted by reason, never
changed.

Each round draws its own tokens for every hash id (the run's seeded ``rng`` moves on), so a round's prefill is not
served from the cache the round before warmed, while inside a round the trace's reuse stands.
"""

from __future__ import annotations

import csv
import math
import random
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from plugin.errors import BenchError
from plugin.load.datasets import Skipped, json_line, read_text
from plugin.option_values import TraceSlice

MOONCAKE_BLOCK_TOKENS = 512
"""Prompt tokens per hash id in Mooncake's traces (and AIPerf's and SGLang's readers of them)."""
TRACE_KINDS = ("mooncake", "azure")
AZURE_COLUMNS = ("TIMESTAMP", "ContextTokens", "GeneratedTokens")
NO_OUTPUT = "no_output_tokens"
NO_PROMPT = "no_prompt_tokens"
TOO_LONG = "too_long_for_model"


@dataclass(frozen=True, slots=True)
class TraceRequest:
    """One request of a trace: its arrival in seconds of trace time, its lengths and (Mooncake) its blocks."""

    line: int
    arrival_s: float
    input_len: int
    output_len: int
    hash_ids: tuple[int, ...] = ()


@dataclass(frozen=True, slots=True)
class Replay:
    """The requests of a slice that will be sent, each due at its scaled offset, and those dropped by reason."""

    source: str
    requests: tuple[TraceRequest, ...]
    due_offsets_s: tuple[float, ...]
    in_slice: int
    dropped: dict[str, int]
    skipped: Skipped = Skipped()


def read_trace(kind: str, path: Path) -> tuple[list[TraceRequest], Skipped]:
    """Every readable request of the file, checked, and the lines skipped (``BenchError`` naming the line of the
    first problem when none is left, or when timestamps go back)."""
    if kind == "mooncake":
        requests, skipped = _read_mooncake(path)
    elif kind == "azure":
        requests, skipped = _read_azure(path)
    else:
        raise BenchError(f"unknown trace kind {kind!r}: {' or '.join(TRACE_KINDS)}")
    if not requests:
        raise skipped.none_left(path, f"{path} holds no request")
    previous = requests[0]
    for request in requests[1:]:
        if request.arrival_s < previous.arrival_s:
            raise BenchError(
                f"{path}, line {request.line}: its timestamp is {previous.arrival_s - request.arrival_s:g} s before "
                f"line {previous.line}'s; a trace is replayed in time order: sort the file by its timestamps"
            )
        previous = request
    return requests, skipped


def replay(
    kind: str, path: Path, time_scale: float, window: TraceSlice, max_model_len: int, source: str | None = None
) -> Replay:
    """The requests of ``window`` that fit ``max_model_len``, due at their arrival (trace time) from the slice's
    first request, times ``time_scale``."""
    if not (time_scale > 0 and math.isfinite(time_scale)):
        raise ValueError(f"time_scale must be a positive number, not {time_scale}")
    requests, skipped = read_trace(kind, path)
    in_slice = [request for request in requests if window.holds(request.arrival_s)]
    if not in_slice:
        raise BenchError(f"{path}: no request arrives inside --trace-slice {window.text} (seconds of trace time)")
    dropped: Counter[str] = Counter()
    kept: list[TraceRequest] = []
    for request in in_slice:
        reason = _unsendable(request, max_model_len)
        if reason is None:
            kept.append(request)
        else:
            dropped[reason] += 1
    if not kept:
        raise BenchError(
            f"{path}: none of the {len(in_slice)} requests in the slice can be sent ({_reasons(dropped)}, with the "
            f"model's max_model_len {max_model_len} for prompt + output); raise --max-model-len or take another "
            "--trace-slice"
        )
    origin_s = in_slice[0].arrival_s
    offsets = tuple((request.arrival_s - origin_s) * time_scale for request in kept)
    return Replay(source or f"{kind}:{path}", tuple(kept), offsets, len(in_slice), dict(dropped), skipped)


def trace_prompts(
    requests: Iterable[TraceRequest], rng: random.Random, vocab: tuple[int, int]
) -> list[tuple[list[int], int]]:
    """(prompt token ids, max_tokens) per request: a hash id's block is drawn once per call, so equal ids give equal
    blocks within the call and fresh ones in the next; a request without hash ids gets random tokens of its own."""
    low, high = vocab
    blocks: dict[int, list[int]] = {}

    def block(hash_id: int) -> list[int]:
        if hash_id not in blocks:
            blocks[hash_id] = [rng.randrange(low, high) for _ in range(MOONCAKE_BLOCK_TOKENS)]
        return blocks[hash_id]

    result: list[tuple[list[int], int]] = []
    for request in requests:
        if request.hash_ids:
            prompt = [token for hash_id in request.hash_ids for token in block(hash_id)][: request.input_len]
        else:
            prompt = [rng.randrange(low, high) for _ in range(request.input_len)]
        result.append((prompt, request.output_len))
    return result


def _unsendable(request: TraceRequest, max_model_len: int) -> str | None:
    if request.input_len <= 0:
        return NO_PROMPT
    if request.output_len <= 0:
        return NO_OUTPUT
    if request.input_len + request.output_len > max_model_len:
        return TOO_LONG
    return None


def _reasons(dropped: Counter[str]) -> str:
    return ", ".join(f"{count} {reason.replace('_', ' ')}" for reason, count in dropped.items())


def _whole(value: object) -> int | None:
    """A JSON whole number zero or more (``1.0`` too, as pandas writes integers), else ``None``."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    if not math.isfinite(value) or value < 0 or value != int(value):
        return None
    return int(value)


def _read_mooncake(path: Path) -> tuple[list[TraceRequest], Skipped]:
    requests: list[TraceRequest] = []
    skipped = Skipped()
    for number, line in enumerate(read_text(path, "trace file").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            requests.append(_mooncake_request(path, number, line))
        except BenchError as error:
            skipped = skipped.add(str(error))
    return requests, skipped


def _mooncake_request(path: Path, number: int, line: str) -> TraceRequest:
    shape = (
        'each line is {"timestamp": MILLISECONDS, "input_length": N, "output_length": N, "hash_ids": [ID, ...]} '
        f"with one hash id per {MOONCAKE_BLOCK_TOKENS} prompt tokens"
    )
    item = json_line(line, f"{path}, line {number}", shape)
    if not isinstance(item, dict):
        raise BenchError(f"{path}, line {number}: not a JSON object; {shape}")
    missing = [key for key in ("timestamp", "input_length", "output_length", "hash_ids") if key not in item]
    if missing:
        raise BenchError(f"{path}, line {number}: no {', '.join(missing)}; {shape}")
    timestamp = item["timestamp"]
    if isinstance(timestamp, bool) or not isinstance(timestamp, (int, float)) or not math.isfinite(timestamp):
        raise BenchError(f"{path}, line {number}: timestamp {timestamp!r} is not a number of milliseconds")
    input_len, output_len = _whole(item["input_length"]), _whole(item["output_length"])
    if input_len is None or output_len is None:
        raise BenchError(f"{path}, line {number}: input_length and output_length are whole numbers; {shape}")
    hash_ids = item["hash_ids"]
    if not isinstance(hash_ids, list) or not all(_whole(h) is not None for h in hash_ids):
        raise BenchError(f"{path}, line {number}: hash_ids is a list of whole numbers; {shape}")
    blocks = math.ceil(input_len / MOONCAKE_BLOCK_TOKENS)
    if len(hash_ids) != blocks:
        raise BenchError(
            f"{path}, line {number}: {len(hash_ids)} hash ids for {input_len} prompt tokens, which make {blocks} "
            f"blocks of {MOONCAKE_BLOCK_TOKENS}; the file is not a Mooncake trace of {MOONCAKE_BLOCK_TOKENS}-token "
            "blocks"
        )
    ids = tuple(int(h) for h in hash_ids)
    return TraceRequest(number, float(timestamp) / 1000.0, input_len, output_len, ids)


def _read_azure(path: Path) -> tuple[list[TraceRequest], Skipped]:
    lines = read_text(path, "trace file").splitlines()
    reader = csv.DictReader(lines)
    missing = [column for column in AZURE_COLUMNS if column not in (reader.fieldnames or [])]
    if missing:
        raise BenchError(
            f"{path}: no column {', '.join(missing)}; an Azure LLM inference trace is a CSV with the columns "
            f"{', '.join(AZURE_COLUMNS)}"
        )
    requests: list[TraceRequest] = []
    skipped = Skipped()
    origin: datetime | None = None
    for row in reader:
        try:
            when, input_len, output_len = _azure_row(path, reader.line_num, row)
        except BenchError as error:
            skipped = skipped.add(str(error))
            continue
        if origin is None:
            origin = when
        requests.append(TraceRequest(reader.line_num, (when - origin).total_seconds(), input_len, output_len))
    return requests, skipped


def _azure_row(path: Path, number: int, row: dict[str, str | None]) -> tuple[datetime, int, int]:
    values = [row.get(column) for column in AZURE_COLUMNS]
    if any(value is None or not value.strip() for value in values):
        raise BenchError(f"{path}, line {number}: a value of {', '.join(AZURE_COLUMNS)} is missing")
    stamp, context, generated = (str(value).strip() for value in values)
    try:
        when = datetime.fromisoformat(stamp)
    except ValueError:
        raise BenchError(
            f"{path}, line {number}: TIMESTAMP {stamp!r} is not a date and time such as 2023-11-16 18:15:46.68"
        ) from None
    try:
        input_len, output_len = int(context), int(generated)
    except ValueError:
        raise BenchError(f"{path}, line {number}: ContextTokens and GeneratedTokens are whole numbers") from None
    if input_len < 0 or output_len < 0:
        raise BenchError(f"{path}, line {number}: ContextTokens and GeneratedTokens are zero or more")
    return when, input_len, output_len

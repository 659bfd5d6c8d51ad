"""The measuring client: streams ``/v1/completions`` and turns each request into a frozen record.

No statistics here (``stats.py`` does them). Timestamps come from ``plugin.clock.now_s``, the clock the power
sampler shares. The first token is the first SSE chunk that carries a choice (vLLM sends no role-only chunk
on ``/v1/completions``); each chunk counts as many tokens as its ``token_ids`` lists (asked for with
``return_token_ids``). A server the suite did not start (``--vllm-url``, a router in front) may send neither ids
nor one token per chunk: there the usage's ``completion_tokens`` (asked for with ``stream_options``) is the count,
spread over the chunks without ids (``token_times``), and one token a chunk only where it reports no usage either.

Sending follows a schedule of due times (``plugin.load.arrivals``): a request leaves when it is due, whether or
not earlier ones have answered (an open loop), unless a concurrency cap makes it wait for a slot. TTFT is timed
from the send (``send_s``), and the wait before it is kept apart: queue = ``ready_s - due_s`` (waiting for a slot,
PEERS trap 2), send lag = ``send_s - ready_s`` (the client's own lateness, trap 3).

A request may follow another (a session's next turn, ``plugin.load.sessions``): it is due its own offset (the think
time) after the one it follows ended, and its record names its session (the index of the session's first request)
and turn (0 for the first). The server's cached prompt tokens (``usage.prompt_tokens_details.cached_tokens``,
which vLLM sends with ``--enable-prompt-tokens-details``) are kept per request.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import math
import random
import secrets
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import aiohttp

from plugin.clock import now_s
from plugin.load.arrivals import closed_loop
from plugin.records.requests import RequestRecord

STOPPED = "stopped: the probe was already decided (over-saturated), so the load stopped before this answer"
CANCELLED = "cancelled: the client disconnected on purpose (--request-cancellation-rate)"
"""The error of a request the client left mid-answer by design, as a user closing the page does (AIPerf's request
cancellation): failed, never good, and no reason to fail its benchmark."""


@dataclasses.dataclass(frozen=True, slots=True)
class Cancellation:
    """``--request-cancellation-rate`` and ``--request-cancellation-delay-s`` (AIPerf's request cancellation): each
    request of a serving round is left by its client with probability ``rate_pct`` / 100, ``delay_s`` after its
    send, a draw seeded by ``seed`` and the round, so every topology of a run loses the same requests."""

    rate_pct: float
    delay_s: float
    seed: int

    def after_s(self, count: int, round_index: int) -> tuple[float | None, ...]:
        """Per request of a round of ``count``: seconds after its send at which its client leaves, or ``None``."""
        rng = random.Random(f"{self.seed}:{round_index}")
        return tuple(self.delay_s if rng.random() * 100 < self.rate_pct else None for _ in range(count))


def completion_body(model: str, prompt: list[int], max_tokens: int, cache_salt: str | None = None) -> dict[str, Any]:
    """vLLM's completion request; a ``cache_salt`` (vLLM's per-request salt of the prefix cache's block hashes)
    keeps the request from reusing any prefix another request left in the cache."""
    salt = {} if cache_salt is None else {"cache_salt": cache_salt}
    return salt | {
        "model": model,
        "prompt": prompt,
        "max_tokens": max_tokens,
        "temperature": 0.0,
        "ignore_eos": True,
        "stream": True,
        "stream_options": {"include_usage": True},
        "return_token_ids": True,
    }


async def stream_completion(
    session: aiohttp.ClientSession,
    url: str,
    body: dict[str, Any],
    index: int,
    due_s: float,
    timeout_s: float,
    ready_s: float | None = None,
    cancel_after_s: float | None = None,
) -> RequestRecord:
    """One streamed request. With ``cancel_after_s`` the client closes the connection that long after the send if
    the answer has not ended (the server sees its client leave and aborts the request): error ``CANCELLED``, the
    tokens that came before kept."""
    answer = _Answer()
    error: str | None = None
    proxy_timing: dict[str, float | None] = {}
    kv_blocks: int | None = None
    send_s = now_s()
    cancel = asyncio.timeout(cancel_after_s)
    try:
        async with asyncio.timeout(timeout_s), cancel:
            async with session.post(f"{url}/v1/completions", json=body) as response:
                if response.status != 200:
                    text = await response.text()
                    raise _HttpError(f"HTTP {response.status}: {text[:300]}")
                proxy_timing = _proxy_timing(response.headers)
                kv_blocks = _kv_blocks(response.headers)
                await answer.read(response.content)
    except _HttpError as failure:
        error = str(failure)
    except TimeoutError:
        error = CANCELLED if cancel.expired() else f"timed out after {timeout_s:g} s (--request-timeout-s)"
    except (aiohttp.ClientError, ValueError) as failure:
        error = f"{type(failure).__name__}: {failure}"
    chunks, usage = answer.chunks, answer.usage
    reported_tokens = usage.get("completion_tokens")
    token_times_s = token_times(chunks, reported_tokens if isinstance(reported_tokens, int) else None)
    return RequestRecord(
        index=index,
        prompt_len=len(body["prompt"]),
        max_tokens=int(body["max_tokens"]),
        due_s=due_s,
        send_s=send_s,
        first_token_s=chunks[0][0] if chunks else None,
        token_times_s=token_times_s,
        end_s=now_s(),
        prompt_tokens=usage.get("prompt_tokens"),
        completion_tokens=usage.get("completion_tokens"),
        cached_tokens=_cached_tokens(usage),
        error=error,
        ready_s=ready_s,
        proxy_prefill_ms=proxy_timing.get("proxy_prefill_ms"),
        kv_handoff_ms=proxy_timing.get("kv_handoff_ms"),
        kv_blocks=kv_blocks,
    )


class _HttpError(Exception):
    pass


@dataclasses.dataclass
class _Answer:
    """A streamed answer as it arrives: each chunk's (arrival, token ids it lists) and the server's usage. Filled in
    place, so a request cut off (a timeout, a cancel) keeps what came before."""

    chunks: list[tuple[float, int | None]] = dataclasses.field(default_factory=list)
    usage: dict[str, Any] = dataclasses.field(default_factory=dict)

    async def read(self, stream: aiohttp.StreamReader) -> None:
        """Every SSE ``data:`` line up to ``[DONE]``; a stream that ends before it is an error."""
        async for raw_line in stream:
            arrived_s = now_s()
            line = raw_line.strip()
            if not line.startswith(b"data:"):
                continue
            payload = line[5:].strip()
            if payload == b"[DONE]":
                return
            chunk = _parse_chunk(payload)
            self.chunks.extend((arrived_s, _token_ids_in(choice)) for choice in chunk.get("choices") or [])
            self.usage = chunk.get("usage") or self.usage
        raise _HttpError("the stream ended without [DONE]: the server closed it early")


def _proxy_timing(headers: Mapping[str, str]) -> dict[str, float | None]:
    """The proxy's ``x-pd-*`` timing headers (``proxy/app.py``); none from a plain vLLM server."""
    timing: dict[str, float | None] = {}
    for field, header in (("proxy_prefill_ms", "x-pd-prefill-ms"), ("kv_handoff_ms", "x-pd-kv-handoff-ms")):
        try:
            timing[field] = float(headers[header]) if header in headers else None
        except ValueError:
            timing[field] = None  # a malformed header is no timing, not a failed request
    return timing


def _kv_blocks(headers: Mapping[str, str]) -> int | None:
    """The KV blocks the proxy saw prefill hand off (``x-pd-kv-blocks``); ``None`` where it names none."""
    value = headers.get("x-pd-kv-blocks", "")
    return int(value) if value.isdigit() else None


def _cached_tokens(usage: Mapping[str, Any]) -> int | None:
    details = usage.get("prompt_tokens_details")
    cached = details.get("cached_tokens") if isinstance(details, dict) else None
    return cached if isinstance(cached, int) and not isinstance(cached, bool) else None


def _parse_chunk(payload: bytes) -> dict[str, Any]:
    """One SSE ``data:`` payload as a completion chunk; anything else is a recorded error, not a crash."""
    chunk = json.loads(payload)
    if not isinstance(chunk, dict):
        raise _HttpError(f"malformed chunk: {payload[:200]!r}")
    if "error" in chunk:
        raise _HttpError(f"error in stream: {chunk['error']}")
    choices = chunk.get("choices") or []
    if not isinstance(choices, list) or not all(isinstance(choice, dict) for choice in choices):
        raise _HttpError(f"malformed chunk: {payload[:200]!r}")
    return chunk


def _token_ids_in(choice: dict[str, Any]) -> int | None:
    """How many tokens the chunk's ``token_ids`` lists; ``None`` where it lists none (not vLLM, or not asked)."""
    token_ids = choice.get("token_ids")
    return len(token_ids) if isinstance(token_ids, list) else None


def token_times(chunks: Sequence[tuple[float, int | None]], reported_tokens: int | None) -> tuple[float, ...]:
    """One arrival time per output token, from each chunk's (arrival, token ids it lists). The tokens of chunks that
    list none are what the server's ``reported_tokens`` (its usage) leaves after the listed ones, spread evenly over
    those chunks in order (earlier ones take the remainder, so a first such chunk has a token); one a chunk where
    the server reports no usage."""
    unlisted = [index for index, (_, count) in enumerate(chunks) if count is None]
    counts = [count or 0 for _, count in chunks]
    if unlisted:
        listed = sum(counts)
        total = len(unlisted) if reported_tokens is None else max(reported_tokens - listed, 0)
        each, remainder = divmod(total, len(unlisted))
        for order, index in enumerate(unlisted):
            counts[index] = each + (order < remainder)
    return tuple(arrived_s for (arrived_s, _), count in zip(chunks, counts, strict=True) for _ in range(count))


class _Slots:
    """A FIFO concurrency cap that hands a freed slot to the next waiter with the time it was freed: that time is
    the waiter's ``ready_s``, so the event loop's delay in waking it counts as send lag, not as queue."""

    def __init__(self, count: int) -> None:
        self._free = count
        self._waiters: deque[asyncio.Future[float]] = deque()

    async def acquire(self, due_s: float) -> float:
        """Take a slot; returns ``ready_s``: ``due_s`` when one was free at once, else when one was freed."""
        if self._free > 0 and not self._waiters:
            self._free -= 1
            return due_s
        waiter: asyncio.Future[float] = asyncio.get_running_loop().create_future()
        self._waiters.append(waiter)
        try:
            return await waiter
        except asyncio.CancelledError:
            if waiter.done() and not waiter.cancelled():
                self.release()  # handed a slot, then cancelled before using it: pass it on
            raise

    def release(self) -> None:
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_result(now_s())
                return
        self._free += 1


_TIMER_SLACK_S = 0.0015
"""How much earlier than due the schedule's timer is set: asyncio's timers wake up to 1 ms late, because epoll
counts its timeout in whole milliseconds, rounded up."""


async def _sleep_until(deadline_s: float) -> None:
    """Sleep to just before ``deadline_s``, then yield to the loop (streams keep being read) until it is reached,
    so that a send is late by one turn of the loop, not by the timer's rounding."""
    wait_s = deadline_s - now_s() - _TIMER_SLACK_S
    if wait_s > 0:
        await asyncio.sleep(wait_s)
    while now_s() < deadline_s:
        await asyncio.sleep(0)


async def run_schedule(
    url: str,
    model: str,
    requests: Sequence[tuple[list[int], int]],
    due_offsets_s: Sequence[float],
    max_concurrency: int | None,
    timeout_s: float,
    on_done: Callable[[int, int], None] | None = None,
    *,
    start_s: float | None = None,
    stop_when: Callable[[RequestRecord], bool] | None = None,
    follows: Sequence[int | None] | None = None,
    salt_cache: bool = False,
    cancel_after_s: Sequence[float | None] | None = None,
) -> list[RequestRecord]:
    """Send ``requests`` (prompt token ids, max_tokens) each at its due offset (seconds from ``start_s``, a
    ``plugin.clock.now_s`` time; default: once the HTTP session is open), without waiting for earlier answers;
    with ``max_concurrency``, a request due while every slot is taken waits for one (FIFO). ``follows[i]``, where
    not ``None``, is an earlier request that request ``i`` waits for: it is due its offset after that one ended.
    With ``salt_cache`` every request gets a random ``cache_salt`` of its own (caching defeated, for a control).
    Records come back in request order. ``on_done(done, total)`` follows progress (it must be quick: it runs on
    the event loop). ``stop_when(record)``, called with each answer, stops the load when it says so (a capacity
    probe already decided): nothing more is sent, requests in flight are cancelled, and each unanswered one gets a
    failed record (``STOPPED``). ``cancel_after_s[i]``, where not ``None``, makes the client leave request ``i``
    that long after its send (``CANCELLED``)."""
    if len(requests) != len(due_offsets_s):
        raise ValueError(f"{len(requests)} requests but {len(due_offsets_s)} due offsets")
    if cancel_after_s is not None and len(cancel_after_s) != len(requests):
        raise ValueError(f"{len(requests)} requests but {len(cancel_after_s)} cancellation delays")
    next_of = _followers(follows, len(requests))
    if any(not (offset >= 0 and math.isfinite(offset)) for offset in due_offsets_s):
        raise ValueError("due offsets are finite seconds from the start, zero or more")
    if max_concurrency is not None and max_concurrency < 1:
        raise ValueError(f"max_concurrency must be at least 1 (or None: no cap), not {max_concurrency}")
    slots = _Slots(max_concurrency) if max_concurrency is not None else None
    records: list[RequestRecord | None] = [None] * len(requests)
    done = 0

    # aiohttp's default pool of 100 connections would cap concurrency above 100 without saying so.
    connector = aiohttp.TCPConnector(limit=0, force_close=False)
    async with aiohttp.ClientSession(connector=connector, timeout=aiohttp.ClientTimeout(total=None)) as session:

        async def one(index: int, due_s: float) -> RequestRecord:
            nonlocal done
            prompt, max_tokens = requests[index]
            body = completion_body(model, prompt, max_tokens, secrets.token_hex(16) if salt_cache else None)
            leave_s = None if cancel_after_s is None else cancel_after_s[index]
            if slots is None:
                record = await stream_completion(session, url, body, index, due_s, timeout_s, due_s, leave_s)
            else:
                ready_s = await slots.acquire(due_s)
                try:
                    record = await stream_completion(session, url, body, index, due_s, timeout_s, ready_s, leave_s)
                finally:
                    slots.release()
            done += 1
            if on_done is not None:
                on_done(done, len(requests))
            return record

        async def chain(first: int, due_s: float) -> None:
            """A request and those that follow it, each sent its offset after the previous one ended (sent even
            where that one failed: its prompt does not depend on the answer)."""
            index: int | None = first
            turn = 0
            while index is not None:
                record = await one(index, due_s)
                labelled = follows is not None  # a multi-turn schedule: every record names its session and turn
                record = dataclasses.replace(record, session=first, turn=turn) if labelled else record
                records[index] = record
                if stop_when is not None and stop_when(record):
                    stopped.set()
                    return
                index = next_of.get(index)
                if index is not None:
                    due_s = record.end_s + due_offsets_s[index]
                    await _sleep_until(due_s)
                    turn += 1

        async def send_all() -> None:
            # One timer at a time, each to an absolute deadline: a late wake-up delays one send, never the rest.
            heads = [i for i in range(len(requests)) if follows is None or follows[i] is None]
            for index in sorted(heads, key=lambda i: due_offsets_s[i]):
                due_s = origin_s + due_offsets_s[index]
                await _sleep_until(due_s)
                tasks.append(asyncio.create_task(chain(index, due_s)))
            await asyncio.gather(*tasks)

        tasks: list[asyncio.Task[None]] = []
        stopped = asyncio.Event()
        origin_s = now_s() if start_s is None else start_s
        sender = asyncio.create_task(send_all())
        waiter = asyncio.create_task(stopped.wait())
        try:
            await asyncio.wait((sender, waiter), return_when=asyncio.FIRST_COMPLETED)
            if sender.done():
                sender.result()  # its exception, if any
        finally:
            for task in (sender, waiter, *tasks):
                task.cancel()  # a no-op once all have finished; on a failure, no request outlives the session
            await asyncio.gather(sender, waiter, *tasks, return_exceptions=True)
    if stopped.is_set():
        stopped_s = now_s()
        for index, record in enumerate(records):
            if record is None:
                prompt, max_tokens = requests[index]
                due_s = origin_s + due_offsets_s[index]
                records[index] = RequestRecord(index, len(prompt), max_tokens, due_s, min(due_s, stopped_s), None, (),
                                               stopped_s, None, None, STOPPED)  # fmt: skip
    return [record for record in records if record is not None]


def _followers(follows: Sequence[int | None] | None, count: int) -> dict[int, int]:
    """Which request follows each one: at most one each, always a later one (so every chain starts at a head)."""
    if follows is None:
        return {}
    if len(follows) != count:
        raise ValueError(f"{count} requests but {len(follows)} entries in follows")
    next_of: dict[int, int] = {}
    for index, previous in enumerate(follows):
        if previous is None:
            continue
        if not 0 <= previous < index or previous in next_of:
            raise ValueError(f"request {index} follows {previous}: each follows an earlier one, at most one each")
        next_of[previous] = index
    return next_of


async def run_load(
    url: str,
    model: str,
    prompts: list[list[int]],
    max_tokens: int,
    concurrency: int,
    timeout_s: float,
    on_done: Callable[[int, int], None] | None = None,
) -> list[RequestRecord]:
    """Send every prompt with at most ``concurrency`` in flight; all are due at the start (a closed loop).
    ``on_done(done, total)`` follows progress (it must be quick: it runs on the event loop)."""
    requests = [(prompt, max_tokens) for prompt in prompts]
    return await run_schedule(url, model, requests, closed_loop(len(prompts)), concurrency, timeout_s, on_done)

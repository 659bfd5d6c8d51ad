"""The measuring client: streams ``/v1/completions`` and turns each request into a frozen record.

No statistics here (``stats.py`` does them). Timestamps come from ``plugin.clock.now_s``, the clock the power
sampler shares. The first token is the first SSE chunk that carries a choice (vLLM sends no role-only chunk
on ``/v1/completions``); each chunk counts as many tokens as its ``token_ids`` lists (asked for with
``return_token_ids``), or one where the server does not send them.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import aiohttp

from plugin.clock import now_s


@dataclass(frozen=True, slots=True)
class RequestRecord:
    """One request as the client saw it. ``due_s`` is when it was ready to go: ``send_s - due_s`` is queueing."""

    index: int
    prompt_len: int
    max_tokens: int
    due_s: float
    send_s: float
    first_token_s: float | None
    token_times_s: tuple[float, ...]
    end_s: float
    prompt_tokens: int | None
    completion_tokens: int | None
    error: str | None
    proxy_prefill_ms: float | None = None
    """Disaggregated only, from the proxy's headers: its prefill request, sent to answered."""
    kv_handoff_ms: float | None = None
    """Disaggregated only: prefill answered to decode's first bytes at the proxy (KV transfer, first step)."""

    @property
    def ok(self) -> bool:
        return self.error is None


def completion_body(model: str, prompt: list[int], max_tokens: int) -> dict[str, Any]:
    return {
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
) -> RequestRecord:
    token_times: list[float] = []
    usage: dict[str, Any] = {}
    error: str | None = None
    proxy_timing: dict[str, float | None] = {}
    send_s = now_s()
    try:
        async with asyncio.timeout(timeout_s):
            async with session.post(f"{url}/v1/completions", json=body) as response:
                if response.status != 200:
                    text = await response.text()
                    raise _HttpError(f"HTTP {response.status}: {text[:300]}")
                proxy_timing = _proxy_timing(response.headers)
                finished = False
                async for raw_line in response.content:
                    arrived_s = now_s()
                    line = raw_line.strip()
                    if not line.startswith(b"data:"):
                        continue
                    payload = line[5:].strip()
                    if payload == b"[DONE]":
                        finished = True
                        break
                    chunk = _parse_chunk(payload)
                    for choice in chunk.get("choices") or []:
                        token_times.extend([arrived_s] * _tokens_in(choice))
                    usage = chunk.get("usage") or usage
                if not finished:
                    raise _HttpError("the stream ended without [DONE]: the server closed it early")
    except _HttpError as failure:
        error = str(failure)
    except TimeoutError:
        error = f"timed out after {timeout_s:g} s (--request-timeout-s)"
    except (aiohttp.ClientError, ValueError) as failure:
        error = f"{type(failure).__name__}: {failure}"
    return RequestRecord(
        index=index,
        prompt_len=len(body["prompt"]),
        max_tokens=int(body["max_tokens"]),
        due_s=due_s,
        send_s=send_s,
        first_token_s=token_times[0] if token_times else None,
        token_times_s=tuple(token_times),
        end_s=now_s(),
        prompt_tokens=usage.get("prompt_tokens"),
        completion_tokens=usage.get("completion_tokens"),
        error=error,
        **proxy_timing,
    )


class _HttpError(Exception):
    pass


def _proxy_timing(headers: Mapping[str, str]) -> dict[str, float | None]:
    """The proxy's ``x-pd-*`` timing headers (``proxy/app.py``); none from a plain vLLM server."""
    timing: dict[str, float | None] = {}
    for field, header in (("proxy_prefill_ms", "x-pd-prefill-ms"), ("kv_handoff_ms", "x-pd-kv-handoff-ms")):
        try:
            timing[field] = float(headers[header]) if header in headers else None
        except ValueError:
            timing[field] = None  # a malformed header is no timing, not a failed request
    return timing


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


def _tokens_in(choice: dict[str, Any]) -> int:
    token_ids = choice.get("token_ids")
    return len(token_ids) if isinstance(token_ids, list) else 1


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
    slots = asyncio.Semaphore(concurrency)
    done = 0
    # aiohttp's default pool of 100 connections would cap concurrency above 100 without saying so.
    connector = aiohttp.TCPConnector(limit=0, force_close=False)
    async with aiohttp.ClientSession(connector=connector, timeout=aiohttp.ClientTimeout(total=None)) as session:
        due_s = now_s()

        async def one(index: int, prompt: list[int]) -> RequestRecord:
            nonlocal done
            async with slots:
                body = completion_body(model, prompt, max_tokens)
                record = await stream_completion(session, url, body, index, due_s, timeout_s)
            done += 1
            if on_done is not None:
                on_done(done, len(prompts))
            return record

        return list(await asyncio.gather(*(one(i, p) for i, p in enumerate(prompts))))

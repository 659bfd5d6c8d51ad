"""Prefix reuse as the server reported it, per request (``usage.prompt_tokens_details.cached_tokens``): the share
of prompt tokens it served from its prefix cache, for a benchmark, a round and each turn of multi-turn sessions.

Counted over the counted requests (``plugin.analysis.accounting.counted``) that succeeded and carry the figure; a
server that does not send it (no ``--enable-prompt-tokens-details``, or a proxy that drops it) gives ``None``, never
0. vLLM's ``/metrics`` counters (``summary["prefix_cache"]``, over every round and queries by the scheduler, so
also a request's retries) are the cross-check."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any, Protocol

from plugin.analysis.stats import summarize
from plugin.load.client import RequestRecord


class ReuseRecord(Protocol):
    """What the figures need of ``plugin.load.client.RequestRecord``."""

    @property
    def ok(self) -> bool: ...
    @property
    def prompt_len(self) -> int: ...
    @property
    def prompt_tokens(self) -> int | None: ...
    @property
    def cached_tokens(self) -> int | None: ...


def reuse_figures(records: Iterable[ReuseRecord]) -> dict[str, float | int | None]:
    """``cached_prompt_tokens`` and ``prefix_hit_rate`` (cached over prompt tokens) of the requests that report it."""
    reported = [r for r in records if r.ok and r.cached_tokens is not None]
    if not reported:
        return {"cached_prompt_tokens": None, "prefix_hit_rate": None}
    cached = sum(r.cached_tokens or 0 for r in reported)
    prompt = sum(_prompt_tokens(r) for r in reported)
    return {"cached_prompt_tokens": cached, "prefix_hit_rate": cached / prompt if prompt else None}


def per_turn(records: Sequence[RequestRecord]) -> list[dict[str, Any]]:
    """For multi-turn sessions, each turn (0 the first) with its requests, mean prompt tokens, mean and median TTFT
    (``plugin.analysis.stats``) and hit rate; empty for requests that are no session's."""
    turns = sorted({r.turn for r in records if r.turn is not None})
    result = []
    for turn in turns:
        of_turn = [r for r in records if r.turn == turn]
        latency = summarize(of_turn)
        result.append(
            {
                "turn": turn,
                "requests": len(of_turn),
                "mean_prompt_tokens": sum(_prompt_tokens(r) for r in of_turn) / len(of_turn),
                "mean_ttft_ms": latency.get("mean_ttft_ms"),
                "median_ttft_ms": latency.get("median_ttft_ms"),
                **reuse_figures(of_turn),
            }
        )
    return result


def _prompt_tokens(record: ReuseRecord) -> int:
    return record.prompt_tokens if record.prompt_tokens is not None else record.prompt_len

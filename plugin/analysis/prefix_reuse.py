"""Prefix reuse as the server reported it, per request (``usage.prompt_tokens_details.cached_tokens``): the share
of prompt tokens it served from its prefix cache, for a benchmark, a round and each turn of multi-turn sessions.

Counted over the counted requests (``plugin.analysis.accounting.counted``) that succeeded and carry the figure; a
server that does not send it (no ``--enable-prompt-tokens-details``, or a proxy that drops it) gives ``None``, never
0. vLLM's ``/metrics`` counters (``summary["prefix_cache"]``, over every round and queries by the scheduler, so
also a request's retries) are the cross-check."""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from typing import Any, Protocol

from plugin.analysis.stats import summarize
from plugin.analysis.turn_energy import RequestEnergy, mean_j
from plugin.analysis.uncertainty import mean_share_pm
from plugin.records.requests import RequestRecord
from plugin.records.results import BenchmarkPower


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


def per_turn(
    rounds: Sequence[tuple[Sequence[RequestRecord], Sequence[RequestEnergy | None]]], power: BenchmarkPower
) -> list[dict[str, Any]]:
    """For multi-turn sessions, each turn (0 the first) with its requests, mean prompt tokens, mean and median TTFT
    (``plugin.analysis.stats``), hit rate and mean J per request of the turn (its requests' shares of their
    rounds' energy, ``plugin.analysis.turn_energy``; ``None`` without power) with its ± and the parts that holds
    (``plugin.analysis.uncertainty.mean_share_pm``); empty for no session's requests. ``rounds`` holds each round's
    counted records and their energy shares, parallel."""
    records = [record for round_records, _ in rounds for record in round_records]
    energies = [share for _, shares in rounds for share in shares]
    turns = sorted({r.turn for r in records if r.turn is not None})
    result = []
    for turn in turns:
        of_turn = [i for i, r in enumerate(records) if r.turn == turn]
        latency = summarize([records[i] for i in of_turn])
        energy_j = mean_j([energies[i] for i in of_turn])
        per_round_j = [
            mean_j([e for r, e in zip(round_records, shares, strict=True) if r.turn == turn])
            for round_records, shares in rounds
        ]
        pm_j, sources = mean_share_pm(energy_j, per_round_j, power)
        result.append(
            {
                "turn": turn,
                "requests": len(of_turn),
                "mean_prompt_tokens": sum(_prompt_tokens(records[i]) for i in of_turn) / len(of_turn),
                "mean_ttft_ms": latency.get("mean_ttft_ms"),
                "median_ttft_ms": latency.get("median_ttft_ms"),
                **reuse_figures(records[i] for i in of_turn),
                "energy_per_request_j": energy_j,
                "energy_per_request_pm_j": pm_j,
                "energy_per_request_pm_sources": sources,
            }
        )
    return result


def prefill_by_cache_hit(
    records: Sequence[RequestRecord], energies: Sequence[RequestEnergy | None]
) -> dict[str, float | None]:
    """Prefill J per prompt token of the requests the server served a cached prefix (``cache_hit``) and of those it
    did not (``no_cache_hit``): their prefill shares over their prompt tokens; ``None`` without such requests or
    power."""
    figures: dict[str, float | None] = {}
    for key, hit in (("cache_hit", True), ("no_cache_hit", False)):
        chosen = [
            (r, e) for r, e in zip(records, energies, strict=True)
            if e is not None and r.cached_tokens is not None and (r.cached_tokens > 0) == hit
        ]  # fmt: skip
        tokens = sum(_prompt_tokens(r) for r, _ in chosen)
        figures[f"prefill_j_per_prompt_token_{key}"] = (
            math.fsum(e.prefill_j for _, e in chosen) / tokens if tokens else None
        )
    return figures


def _prompt_tokens(record: ReuseRecord) -> int:
    return record.prompt_tokens if record.prompt_tokens is not None else record.prompt_len

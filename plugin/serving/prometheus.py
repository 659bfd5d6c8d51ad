"""Reads vLLM's Prometheus ``/metrics``: the prefix-cache counters around each benchmark, and the server-side TTFT."""

from __future__ import annotations

import urllib.request

PREFIX_CACHE_QUERIES = "vllm:prefix_cache_queries_total"
PREFIX_CACHE_HITS = "vllm:prefix_cache_hits_total"
TTFT_SUM = "vllm:time_to_first_token_seconds_sum"
TTFT_COUNT = "vllm:time_to_first_token_seconds_count"


def parse(text: str) -> dict[str, float]:
    """Sum every series of each metric name over its labels."""
    totals: dict[str, float] = {}
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        name_and_labels, _, value = line.rpartition(" ")
        name = name_and_labels.split("{", 1)[0]
        try:
            totals[name] = totals.get(name, 0.0) + float(value)
        except ValueError:
            continue
    return totals


def scrape(url: str, timeout_s: float = 10.0) -> dict[str, float]:
    """The server's metrics, or an empty dict when it has no ``/metrics`` (then cache figures are unknown)."""
    try:
        with urllib.request.urlopen(f"{url}/metrics", timeout=timeout_s) as response:
            return parse(response.read().decode())
    except OSError:
        return {}


def prefix_cache_delta(before: dict[str, float], after: dict[str, float]) -> dict[str, float | None]:
    """Prefix-cache queries and hits (tokens) during a benchmark; the hit rate must be about zero."""
    if PREFIX_CACHE_QUERIES not in after or PREFIX_CACHE_QUERIES not in before:
        return {"queries": None, "hits": None, "hit_rate": None}
    queries = after[PREFIX_CACHE_QUERIES] - before[PREFIX_CACHE_QUERIES]
    hits = after.get(PREFIX_CACHE_HITS, 0.0) - before.get(PREFIX_CACHE_HITS, 0.0)
    return {"queries": queries, "hits": hits, "hit_rate": hits / queries if queries > 0 else None}

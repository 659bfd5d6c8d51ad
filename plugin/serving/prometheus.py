"""Scrapes vLLM's Prometheus ``/metrics``: the prefix-cache counters around each benchmark, the server-side TTFT
and the phase histograms (``plugin.analysis.server_phases``). The text is parsed by ``plugin.prometheus_text``,
which the DCGM exporter's power source shares."""

from __future__ import annotations

import http.client
import urllib.request

from plugin.prometheus_text import parse

PREFIX_CACHE_QUERIES = "vllm:prefix_cache_queries_total"
PREFIX_CACHE_HITS = "vllm:prefix_cache_hits_total"
TTFT_SUM = "vllm:time_to_first_token_seconds_sum"
TTFT_COUNT = "vllm:time_to_first_token_seconds_count"


def fetch(url: str, timeout_s: float = 10.0) -> str | None:
    """The text of ``{url}/metrics``, or ``None`` when the server does not answer it."""
    try:
        with urllib.request.urlopen(f"{url}/metrics", timeout=timeout_s) as response:
            body: bytes = response.read()
            return body.decode()
    except (OSError, http.client.HTTPException, UnicodeDecodeError):
        return None


def scrape(url: str, timeout_s: float = 10.0) -> dict[str, float]:
    """The server's metrics summed over labels (``parse``), or an empty dict when it has no readable ``/metrics``
    (then cache and phase figures are unknown)."""
    text = fetch(url, timeout_s)
    return {} if text is None else parse(text)


def prefix_cache_delta(before: dict[str, float], after: dict[str, float]) -> dict[str, float | None]:
    """Prefix-cache queries and hits (tokens) during a benchmark; the hit rate must be about zero."""
    if PREFIX_CACHE_QUERIES not in after or PREFIX_CACHE_QUERIES not in before:
        return {"queries": None, "hits": None, "hit_rate": None}
    queries = after[PREFIX_CACHE_QUERIES] - before[PREFIX_CACHE_QUERIES]
    hits = after.get(PREFIX_CACHE_HITS, 0.0) - before.get(PREFIX_CACHE_HITS, 0.0)
    return {"queries": queries, "hits": hits, "hit_rate": hits / queries if queries > 0 else None}

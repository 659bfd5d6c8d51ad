"""Summary metrics from request records, named as vLLM's ``bench serve`` names them so numbers compare directly.

Definitions (all per request, from the client's clock):
- TTFT = first token - send; queue = ready - due (waiting for a concurrency slot, kept out of TTFT); send lag =
  send - ready (the client's own lateness: it should be near zero, ``client_kept_up`` says whether its p99 is
  within ``LAG_LIMIT_MS``). Records without ``ready_s`` (stored before it was kept) give queue = send - due and no
  send lag.
- TBT (ITL) = gap between consecutive chunks of output, as vLLM's ``bench serve`` times it: a request streamed in
  n chunks gives n - 1 gaps, however many tokens each chunk carries (the tokens of a chunk share its arrival).
- TPOT = (E2E - TTFT) / (output tokens - 1), for requests with more than one output token.
- Output length ignored = completed requests whose output tokens differ from their ``max_tokens``: the suite asks
  for exactly that many (``ignore_eos``), and a server it did not start may not honour it.
- E2E = last byte - send.
- KV hand-off (disaggregated) = prefill answered -> decode's first bytes, timed by the proxy (its headers).
- prefill tokens/s = prompt tokens / (first send -> last first token); decode tokens/s = output tokens after
  the first / (first first token -> last end).

These are figures of the requests given (a round's counted requests: ``plugin.analysis.accounting``); throughput
and energy, which divide by the work inside the power window, are the accounting's.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from itertools import pairwise
from typing import Any

import numpy as np

from plugin.records.requests import RequestRecord

PERCENTILES = (50, 90, 99)
LAG_LIMIT_MS = 10.0
"""A client whose p99 send lag is above this was too slow for the schedule: its arrivals were not the ones asked
for, and the run measured the client as much as the server."""


def distribution(name: str, values_s: Sequence[float]) -> dict[str, float | None]:
    """mean/median/p90/p99 of ``values_s`` in milliseconds under vLLM's keys (``mean_ttft_ms`` ...)."""
    if not values_s:
        return {f"{kind}_{name}_ms": None for kind in ("mean", "median", "p90", "p99")}
    values_ms = np.asarray(values_s, dtype=float) * 1000.0
    p50, p90, p99 = np.percentile(values_ms, PERCENTILES)
    return {
        f"mean_{name}_ms": float(values_ms.mean()),
        f"median_{name}_ms": float(p50),
        f"p90_{name}_ms": float(p90),
        f"p99_{name}_ms": float(p99),
    }


def ttft_s(record: RequestRecord) -> float | None:
    """Send to first token; ``None`` for a failed request or one without a token."""
    return None if not record.ok or record.first_token_s is None else record.first_token_s - record.send_s


def e2e_s(record: RequestRecord) -> float | None:
    return None if not record.ok or record.first_token_s is None else record.end_s - record.send_s


def tpot_s(record: RequestRecord) -> float | None:
    """(E2E - TTFT) / (output tokens - 1); ``None`` with fewer than two tokens."""
    if not record.ok or record.first_token_s is None or len(record.token_times_s) < 2:
        return None
    return (record.end_s - record.first_token_s) / (len(record.token_times_s) - 1)


def tbt_gaps_s(record: RequestRecord) -> list[float]:
    """Gaps between chunk arrivals: a chunk's tokens share one time, so the zero gaps inside a chunk are none."""
    return [later - earlier for earlier, later in pairwise(record.token_times_s) if later > earlier]


def ignored_length(record: RequestRecord) -> bool:
    """A completed request that returned another number of tokens than its ``max_tokens`` asked for."""
    return record.ok and len(record.token_times_s) != record.max_tokens


def _present(values: Iterable[float | None]) -> list[float]:
    return [value for value in values if value is not None]


def _rate(count: float, start: Iterable[float], end: Iterable[float]) -> float | None:
    starts, ends = list(start), list(end)
    if not starts or not ends:
        return None
    span = max(ends) - min(starts)
    return count / span if span > 0 else None


def summarize(records: Sequence[RequestRecord]) -> dict[str, Any]:
    done = [r for r in records if r.ok and r.first_token_s is not None]
    ttft = _present(ttft_s(r) for r in done)
    e2e = _present(e2e_s(r) for r in done)
    tpot = _present(tpot_s(r) for r in done)
    prompt_tokens = sum(r.prompt_tokens or 0 for r in done)
    output_tokens = sum(len(r.token_times_s) for r in done)
    summary: dict[str, Any] = {
        "requests": len(records),
        "completed": len(done),
        "failed": len(records) - len(done),
        "errors": sorted({r.error for r in records if r.error})[:5],
        "output_length_ignored": sum(1 for r in records if ignored_length(r)),
        "total_input_tokens": prompt_tokens,
        "total_output_tokens": output_tokens,
        "prefill_tokens_per_s": _rate(
            prompt_tokens, (r.send_s for r in done), (r.first_token_s for r in done if r.first_token_s is not None)
        ),
        "decode_tokens_per_s": _rate(
            sum(max(len(r.token_times_s) - 1, 0) for r in done),
            (r.first_token_s for r in done if r.first_token_s is not None),
            (r.end_s for r in done),
        ),
    }
    summary.update(distribution("ttft", ttft))
    summary.update(distribution("tbt", [gap for r in done for gap in tbt_gaps_s(r)]))
    summary.update(distribution("tpot", tpot))
    summary.update(distribution("e2el", e2e))
    summary.update(distribution("queue", [(r.send_s if r.ready_s is None else r.ready_s) - r.due_s for r in done]))
    # Every sent request, failed ones too: lateness is the client's, whatever the server answered.
    lags_s = [r.send_s - r.ready_s for r in records if r.ready_s is not None]
    if lags_s:  # absent for records stored before ready_s was kept, as the KV hand-off is for aggregated runs
        lag = distribution("send_lag", lags_s)
        summary.update(lag)
        summary["client_kept_up"] = bool(lag["p99_send_lag_ms"] is not None and lag["p99_send_lag_ms"] <= LAG_LIMIT_MS)
    handoffs_s = [r.kv_handoff_ms / 1000.0 for r in done if r.kv_handoff_ms is not None]
    if handoffs_s:  # disaggregated runs: the proxy's own timing (PEERS trap 7)
        summary.update(distribution("kv_handoff", handoffs_s))
        summary.update(
            distribution("proxy_prefill", [r.proxy_prefill_ms / 1000.0 for r in done if r.proxy_prefill_ms is not None])
        )
    return summary

"""The server's own view of a benchmark: how much vLLM's phase histograms grew between the ``/metrics`` scrapes
around its rounds, to stand beside the client's timings (``stats``), which include the network and the proxy.

vLLM observes the queue, prefill, decode, inference and e2e histograms when a request finishes, TTFT at its first
token: requests still running at the second scrape (a steady-state round's tail) are not counted, and the scrapes
span every round, so steady-state counts cover more requests than the power windows do."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

PHASE_HISTOGRAMS: dict[str, tuple[str, ...]] = {
    "queue": ("vllm:request_queue_time_seconds",),
    "prefill": ("vllm:request_prefill_time_seconds",),
    "decode": ("vllm:request_decode_time_seconds",),
    "inference": ("vllm:request_inference_time_seconds",),
    "e2e": ("vllm:e2e_request_latency_seconds",),
    "ttft": ("vllm:time_to_first_token_seconds",),
    "itl": ("vllm:inter_token_latency_seconds", "vllm:time_per_output_token_seconds"),
}
"""Phase -> the histogram's names, newest first (vLLM renamed time_per_output_token to inter_token_latency)."""
ITERATION_TOKENS: tuple[str, ...] = ("vllm:iteration_tokens_total",)
"""Tokens per engine step (prompt tokens computed + output tokens): how full the batches were."""


Scrape = dict[str, float]
"""``prometheus.scrape``'s result: each sample name summed over its labels."""


def _delta(before: Scrape, after: Scrape, names: tuple[str, ...]) -> tuple[str, float, float] | None:
    """The first of ``names`` whose count and sum are in both scrapes: (name, count delta, sum delta)."""
    for name in names:
        keys = (f"{name}_count", f"{name}_sum")
        if all(key in before and key in after for key in keys):
            return name, after[keys[0]] - before[keys[0]], after[keys[1]] - before[keys[1]]
    return None


def server_phase_times(before: Scrape, after: Scrape, source: str | None = None) -> dict[str, Any]:
    """Per phase: ``metric`` (the name used), ``count`` (observations between the scrapes), ``sum_s`` and
    ``mean_ms``; ``iteration_tokens``: ``steps``, ``tokens``, ``mean_tokens_per_step``. A figure the server did
    not expose, or that went backwards (the server restarted), is ``None`` and ``note`` says which. ``before`` and
    ``after`` are ``prometheus.scrape`` results; ``source`` says whose ``/metrics`` they are."""
    result: dict[str, Any] = {"source": source}
    missing: list[str] = []
    went_back: list[str] = []
    for phase, names in PHASE_HISTOGRAMS.items():
        found = _delta(before, after, names)
        figure: dict[str, Any] = {"metric": None, "count": None, "sum_s": None, "mean_ms": None}
        if found is None:
            missing.append(" or ".join(names))
        elif found[1] < 0 or found[2] < 0:
            went_back.append(found[0])
        else:
            name, count, sum_s = found
            figure = {"metric": name, "count": round(count), "sum_s": sum_s,
                      "mean_ms": sum_s / count * 1000.0 if count > 0 else None}  # fmt: skip
        result[phase] = figure
    found = _delta(before, after, ITERATION_TOKENS)
    tokens: dict[str, Any] = {"metric": None, "steps": None, "tokens": None, "mean_tokens_per_step": None}
    if found is None:
        missing.append(" or ".join(ITERATION_TOKENS))
    elif found[1] < 0 or found[2] < 0:
        went_back.append(found[0])
    else:
        name, steps, total = found
        tokens = {"metric": name, "steps": round(steps), "tokens": round(total),
                  "mean_tokens_per_step": total / steps if steps > 0 else None}  # fmt: skip
    result["iteration_tokens"] = tokens
    notes = []
    if missing and len(missing) == len(PHASE_HISTOGRAMS) + 1:
        notes.append("the server's /metrics was not read or has no vLLM histograms")
    elif missing:
        notes.append(f"the server did not expose {', '.join(missing)}")
    if went_back:
        notes.append(f"{', '.join(went_back)} went backwards between the scrapes (a server restart?)")
    result["note"] = "; ".join(notes) or None
    return result


def server_prefill_s(server_phases: Mapping[str, Any]) -> float | None:
    """The server's mean prefill time (scheduled to first token), the part of a TTFT spent computing."""
    mean_ms = (server_phases.get("prefill") or {}).get("mean_ms")
    return None if mean_ms is None else mean_ms / 1000.0

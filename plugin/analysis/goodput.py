"""Goodput and energy per good request, with vLLM's ``--goodput`` semantics so the numbers compare directly.

A request is good when it succeeded (an answer with at least one token) and meets every given target, each
inclusive (``metric <= target``, as vLLM's ``s >= r``). The metrics are ``plugin.analysis.stats``'s: TTFT, TPOT
and E2E. A request with a single output token has no TPOT in ``stats``; vLLM counts its TPOT as 0 when judging
goodput, and so does this module: such a request always meets a TPOT target. With no target given, every
successful request is good (it meets all of none).

SLO attainment counts against every request sent, failed ones included; goodput is good requests per second of
the benchmark's duration; energy per good request (and per output token of the good requests) charges all the
energy spent, wasted work included, to the work that was useful.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from plugin.analysis.stats import e2e_s, tpot_s, ttft_s
from plugin.load.client import RequestRecord
from plugin.option_values import GoodputTargets


Z95 = 1.959964
"""The normal quantile of a two-sided 95 % interval."""


def attainment_interval_pct(good: int, total: int, z: float = Z95) -> tuple[float, float] | None:
    """The Wilson score interval (95 %) of an SLO attainment of ``good`` out of ``total``, in %; ``None`` with no
    request. Wilson's rather than the normal approximation's because attainment sits near 0 or 100 % where it
    matters, and there the normal interval leaves [0, 100] or collapses to a point (all met: ± 0)."""
    if total <= 0:
        return None
    share = good / total
    z2_n = z * z / total
    centre = (share + z2_n / 2) / (1 + z2_n)
    half = z / (1 + z2_n) * math.sqrt(share * (1 - share) / total + z2_n / (4 * total))
    low = 0.0 if good == 0 else 100.0 * max(0.0, centre - half)
    return low, 100.0 if good == total else 100.0 * min(1.0, centre + half)


def targets_ms(targets: GoodputTargets) -> dict[str, float]:
    """The given targets under vLLM's keys (``ttft``, ``tpot``, ``e2el``), in ms."""
    given = {"ttft": targets.ttft_ms, "tpot": targets.tpot_ms, "e2el": targets.e2el_ms}
    return {key: value for key, value in given.items() if value is not None}


def is_good(record: RequestRecord, targets: GoodputTargets) -> bool:
    """Succeeded and meets every given target (inclusive); one output token counts as TPOT 0 (vLLM)."""
    ttft = ttft_s(record)
    if ttft is None:  # failed, or answered without a token
        return False
    e2e = e2e_s(record)
    tpot = tpot_s(record)
    measured_s = {"ttft": ttft, "tpot": 0.0 if tpot is None else tpot, "e2el": e2e}
    return all(
        (value := measured_s[key]) is not None and value * 1000.0 <= target_ms
        for key, target_ms in targets_ms(targets).items()
    )


def goodput_summary(
    records: Sequence[RequestRecord], targets: GoodputTargets, duration_s: float | None, energy_j: float | None
) -> dict[str, Any]:
    """Goodput figures of one benchmark; a figure that cannot be computed is ``None``, never 0."""
    good = [record for record in records if is_good(record, targets)]
    good_output_tokens = sum(record.completion_tokens or 0 for record in good)
    note = None
    if not records:
        note = "no request was sent: no SLO attainment or goodput"
    elif not good:
        note = "no request met the goodput targets: energy per good request is undefined"
    return {
        "goodput_targets_ms": targets_ms(targets),
        "good_requests": len(good),
        "slo_attainment_pct": 100.0 * len(good) / len(records) if records else None,
        "goodput_rps": len(good) / duration_s if duration_s is not None and duration_s > 0 else None,
        "energy_per_good_request_j": energy_j / len(good) if energy_j is not None and good else None,
        "energy_per_good_output_token_j": (
            energy_j / good_output_tokens if energy_j is not None and good_output_tokens else None
        ),
        "goodput_note": note,
    }

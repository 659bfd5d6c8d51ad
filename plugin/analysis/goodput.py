"""Goodput and energy per good request, with vLLM's ``--goodput`` semantics so the numbers compare directly.

A request is good when it succeeded (an answer with at least one token) and meets every given target, each
inclusive (``metric <= target``, as vLLM's ``s >= r``). The metrics are ``plugin.analysis.stats``'s: TTFT, TPOT
and E2E. A request with a single output token has no TPOT in ``stats``; vLLM counts its TPOT as 0 when judging
goodput, and so does this module: such a request always meets a TPOT target. With no target given, every
successful request is good (it meets all of none).

SLO attainment counts against every request counted (``plugin.analysis.accounting``: in steady state those due
in the measured stretch), failed ones included, with its Wilson interval. Goodput and energy per good request
count the good requests that completed inside the power window (``accounting.work_inside``), over the window's
time and energy: all the energy spent, wasted work included, charged to the work that was useful.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from plugin.analysis.stats import e2e_s, tpot_s, ttft_s
from plugin.option_values import GoodputTargets
from plugin.records.requests import RequestRecord

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


def attainment_summary(records: Sequence[RequestRecord], targets: GoodputTargets) -> dict[str, Any]:
    """SLO attainment of the counted requests with its 95 % interval; a figure that cannot be computed is
    ``None``, never 0."""
    good = sum(1 for record in records if is_good(record, targets))
    interval = attainment_interval_pct(good, len(records))
    return {
        "goodput_targets_ms": targets_ms(targets),
        "good_requests": good,
        "slo_attainment_pct": 100.0 * good / len(records) if records else None,
        "slo_attainment_low_pct": None if interval is None else interval[0],
        "slo_attainment_high_pct": None if interval is None else interval[1],
    }

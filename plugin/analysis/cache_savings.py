"""What the prefix cache saved: a trace or sessions benchmark against its control (``--prefix-cache-control``: the
same requests at the same offsets, each with a ``cache_salt`` of its own so none reuses a cached prefix).

Both are ordinary benchmarks, each figure divided by what its own windows measured (``plugin.analysis.accounting``),
so the saving is the control's energy per request minus the cached run's, with a ± from their two 95 % half-widths
added in quadrature (independent measurements); it is *undecided* where that interval holds 0, and *unmeasured*
where either has no energy. The phase split's prefill J per prompt token of both shows where it was saved (per
prompt token sent, cache hits included), and their mean TTFT what it saved in time. Pure."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from plugin.records.results import BenchmarkResult

CONTROL_SUFFIX = "-nocache"
SAVED, COST, UNDECIDED, UNMEASURED = "saved", "cost", "undecided", "unmeasured"


@dataclass(frozen=True, slots=True)
class CacheSaving:
    """A benchmark and its control: the saving in J per request (and share of the control's) with its ± and verdict,
    and of each: J per request, hit rate, prefill J per prompt token and mean TTFT."""

    name: str
    verdict: str
    saved_j_per_request: float | None
    saved_half_width_j: float | None
    saved_share: float | None
    cached_j_per_request: float | None
    control_j_per_request: float | None
    cached_hit_rate: float | None
    control_hit_rate: float | None
    cached_prefill_j_per_prompt_token: float | None
    control_prefill_j_per_prompt_token: float | None
    cached_mean_ttft_ms: float | None
    control_mean_ttft_ms: float | None


def cache_savings(benchmarks: Sequence[BenchmarkResult]) -> list[CacheSaving]:
    """Every benchmark that has its control among ``benchmarks`` (the same name with ``-nocache``)."""
    by_name = {benchmark.name: benchmark for benchmark in benchmarks}
    return [
        saving(by_name[control.name.replace(CONTROL_SUFFIX, "")], control)
        for control in benchmarks
        if CONTROL_SUFFIX in control.name and control.name.replace(CONTROL_SUFFIX, "") in by_name
    ]


def saving(cached: BenchmarkResult, control: BenchmarkResult) -> CacheSaving:
    with_cache, without = cached.power.energy_per_request_j, control.power.energy_per_request_j
    saved_j = half_width = share = None
    verdict = UNMEASURED
    if with_cache is not None and without is not None and without > 0:
        saved_j, share = without - with_cache, (without - with_cache) / without
        spreads = [b.power.uncertainty.get("energy_per_request_j") for b in (cached, control)]
        half_width = None if any(s is None for s in spreads) else math.hypot(*(s or 0.0 for s in spreads))
        if half_width is None or abs(saved_j) <= half_width:
            verdict = UNDECIDED
        else:
            verdict = SAVED if saved_j > 0 else COST
    return CacheSaving(
        name=cached.name,
        verdict=verdict,
        saved_j_per_request=saved_j,
        saved_half_width_j=half_width,
        saved_share=share,
        cached_j_per_request=with_cache,
        control_j_per_request=without,
        cached_hit_rate=cached.summary.get("prefix_hit_rate"),
        control_hit_rate=control.summary.get("prefix_hit_rate"),
        cached_prefill_j_per_prompt_token=_prefill_j(cached),
        control_prefill_j_per_prompt_token=_prefill_j(control),
        cached_mean_ttft_ms=cached.summary.get("mean_ttft_ms"),
        control_mean_ttft_ms=control.summary.get("mean_ttft_ms"),
    )


def _prefill_j(benchmark: BenchmarkResult) -> float | None:
    phases = benchmark.power.phases
    return None if phases is None else phases.j_per_prompt_token


def saving_line(saving: CacheSaving) -> str:
    """The terminal's line for one benchmark against its control."""

    def pct(share: float | None) -> str:
        return "-" if share is None else f"{share * 100:.0f} %"

    def number(value: float | None) -> str:
        return "-" if value is None else f"{value:.3g}"

    if saving.saved_j_per_request is None:
        energy = "energy not measured"
    else:
        spread = "" if saving.saved_half_width_j is None else f"±{saving.saved_half_width_j:.2g}"
        energy = (
            f"{saving.verdict}: {saving.saved_j_per_request:.3g}{spread} J per request ({pct(saving.saved_share)} of "
            f"{number(saving.control_j_per_request)} J without the cache); prefill "
            f"{number(saving.cached_prefill_j_per_prompt_token)} J/prompt token against "
            f"{number(saving.control_prefill_j_per_prompt_token)}"
        )
    return (
        f"prefix cache {saving.name}: {energy}; {pct(saving.cached_hit_rate)} of prompt tokens cached against "
        f"{pct(saving.control_hit_rate)} in its control; mean TTFT {number(saving.cached_mean_ttft_ms)} ms against "
        f"{number(saving.control_mean_ttft_ms)} ms"
    )

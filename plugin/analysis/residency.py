"""Clock and throttle residency per phase: the share of each phase's time (prefill, decode, both, idle, as the
client saw them) at each SM clock and under each clocks-event reason, from the sampler's readings, so a reader sees,
say, prefill power-capped while decode runs at full clock."""

from __future__ import annotations

import math
from bisect import bisect_right
from collections import defaultdict
from collections.abc import Hashable, Sequence
from typing import TypeVar

from plugin.analysis.energy import PhaseSlice
from plugin.power.backend import reason_names
from plugin.power.window import ClockSeries

RESIDENCY_PHASES = ("prefill", "decode", "both", "idle")
NO_REASON = "none"
_V = TypeVar("_V", bound=Hashable)


def residency(clocks: ClockSeries, slices: Sequence[PhaseSlice]) -> dict[str, dict[str, dict[str, float]]]:
    """Per phase (``prefill``, ``decode``, ``both``, ``idle``; those with time read only), the share of its time at
    each SM clock (``sm_clock_mhz``, MHz as text, fastest first) and under each clocks-event reason (``throttle``,
    ``none`` for no reason; reasons overlap, so their shares may add up to more than 1). Each reading holds until
    the next; time before a GPU's first reading is left out of the shares."""
    clock_s = _held_seconds(clocks.clock_times_s, clocks.sm_clocks_mhz, slices)
    mask_s = _held_seconds(clocks.reason_times_s, clocks.reason_masks, slices)
    result: dict[str, dict[str, dict[str, float]]] = {}
    for phase in RESIDENCY_PHASES:
        by_clock, by_mask = clock_s.get(phase, {}), mask_s.get(phase, {})
        if not by_clock and not by_mask:
            continue
        clock_total_s = math.fsum(by_clock.values())
        reason_total_s = math.fsum(by_mask.values())
        by_reason: dict[str, float] = defaultdict(float)
        for mask, seconds in by_mask.items():
            for name in reason_names(mask) or (NO_REASON,):
                by_reason[name] += seconds
        result[phase] = {
            "sm_clock_mhz": {str(mhz): by_clock[mhz] / clock_total_s for mhz in sorted(by_clock, reverse=True)},
            "throttle": {name: by_reason[name] / reason_total_s for name in sorted(by_reason)},
        }
    return result


def _held_seconds(
    times: Sequence[float], values: Sequence[_V], slices: Sequence[PhaseSlice]
) -> dict[str, dict[_V, float]]:
    """Seconds of each value (held from its reading to the next) in each phase's slices; one pass, as both the
    readings and the slices are in time order."""
    held: dict[str, dict[_V, float]] = defaultdict(lambda: defaultdict(float))
    for piece in slices:
        k = max(bisect_right(times, piece.start_s) - 1, 0)
        while k < len(times) and times[k] < piece.end_s:
            lo = max(piece.start_s, times[k])
            hi = min(piece.end_s, times[k + 1]) if k + 1 < len(times) else piece.end_s
            if hi > lo:
                held[piece.phase][values[k]] += hi - lo
            k += 1
    return {phase: dict(seconds) for phase, seconds in held.items() if seconds}

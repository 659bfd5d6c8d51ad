"""Each request's share of its round's measured energy, for figures per turn of a session and per prompt token
with and without cache hits (``plugin.analysis.prefix_reuse``).

The window is cut where any request changes phase (``plugin.analysis.energy.phase_times``: prefill for the
server's mean prefill time before the first token, decode to the end). A slice's energy on each GPU, scaled so the
GPU's slices add up to its counter as the phase split does, goes in equal shares to the requests the GPU works on
in it: on a GPU that does both phases every active request, on a prefill (decode) GPU those in prefill (decode), on
an unused one none. A share is charged to the request's prefill or its decode as it was then. Slices with no such
request are idle and charged to no request, so the shares add up to the phase split's prefill + decode energy:
the time rule, per request. Pure."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from itertools import pairwise

from plugin.analysis.accounting import counted_records
from plugin.analysis.energy import PhaseRecord, phase_times
from plugin.measurement import Round
from plugin.power.window import WindowMeasurement
from plugin.records.requests import RequestRecord


@dataclass(frozen=True, slots=True)
class RequestEnergy:
    """One request's energy in its round's window, in J."""

    prefill_j: float
    decode_j: float

    @property
    def energy_j(self) -> float:
        return self.prefill_j + self.decode_j


def request_energies(
    window: WindowMeasurement,
    records: Sequence[PhaseRecord],
    gpu_roles: Mapping[int, str],
    prefill_s: float | None = None,
) -> list[RequestEnergy | None]:
    """Per record (in order), its energy inside the window; ``None`` for one that failed or had no first token,
    and all ``None`` when the window measured no power."""
    if not window.measured or not window.curves:
        return [None] * len(records)
    used = [i for i, r in enumerate(records) if r.ok and r.first_token_s is not None]
    phases = {i: phase_times(records[i], prefill_s) for i in used}
    bounds = sorted({window.start_s, window.end_s, *(t for p in phases.values() for t in p)})
    bounds = [t for t in bounds if window.start_s <= t <= window.end_s]
    prefill = dict.fromkeys(used, 0.0)
    decode = dict.fromkeys(used, 0.0)
    for gpu in window.gpus:
        curve = window.curves.get(gpu.gpu)
        if not curve:
            continue
        role = gpu_roles.get(gpu.gpu, "unknown")
        integral_j = curve.energy_j(window.start_s, window.end_s) or 0.0
        scale = gpu.energy_counter_j / integral_j if gpu.energy_counter_j is not None and integral_j else 1.0
        for a_s, b_s in pairwise(bounds):
            in_prefill = [i for i in used if phases[i][0] <= a_s and b_s <= phases[i][1]]
            in_decode = [i for i in used if phases[i][1] <= a_s and b_s <= phases[i][2]]
            if role == "prefill":
                in_decode = []
            elif role == "decode":
                in_prefill = []
            elif role == "unused":
                continue
            active = len(in_prefill) + len(in_decode)
            if not active:
                continue
            share_j = scale * (curve.energy_j(a_s, b_s) or 0.0) / active
            for i in in_prefill:
                prefill[i] += share_j
            for i in in_decode:
                decode[i] += share_j
    result: list[RequestEnergy | None] = [None] * len(records)
    for i in used:
        result[i] = RequestEnergy(prefill[i], decode[i])
    return result


def mean_j(energies: Sequence[RequestEnergy | None]) -> float | None:
    """Mean energy per request of those that have one."""
    known = [e.energy_j for e in energies if e is not None]
    return math.fsum(known) / len(known) if known else None


def counted_energies(
    rounds: Sequence[Round], gpu_roles: Mapping[int, str], prefill_s: float | None
) -> list[tuple[list[RequestRecord], list[RequestEnergy | None]]]:
    """Per round, its counted requests and each one's share of the round's energy (``turn_energy``)."""
    result = []
    for one_round in rounds:
        kept = {id(record) for record in counted_records(one_round)}
        shares = request_energies(one_round.window, one_round.records, gpu_roles, prefill_s)
        pairs = [(r, e) for r, e in zip(one_round.records, shares, strict=True) if id(r) in kept]
        result.append(([r for r, _ in pairs], [e for _, e in pairs]))
    return result

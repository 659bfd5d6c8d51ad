"""Attribution of GPU energy to prefill and decode, from power samples and the client's request records.

A request is in prefill up to its first token and in decode from it to its end (the client's view), with two
corrections that keep waiting out of prefill and give decode its own work:

- **Waiting is not prefill.** Given the server's mean prefill time (vLLM's ``request_prefill_time_seconds``:
  scheduled to first token, from ``/metrics``), a request is in prefill only over that long before its first token
  (never before its send); before that it waits in the queue and is in no phase, so a slice where requests only
  wait is charged to the requests running meanwhile, or is idle. Without it (no histogram), prefill starts at the
  send, queueing included, and the benchmark's notes say so.
- **The KV hand-off is decode's.** A disaggregated request's hand-off (``kv_handoff_ms``: prefill answered to
  decode's first bytes: the KV transfer, decode's KV load and its first step) ends its prefill and starts its
  decode, so the decode GPU's work on it is decode's, and the prefill GPU, done with it, is idle unless other
  prefills run.

Time is cut
into slices at every phase boundary of every request; within a slice the set of active requests does not change.
Each slice's energy (power samples integrated over it, see ``plugin.power.window``) is charged by the GPU's role:

- A GPU that does one phase only (role ``prefill`` or ``decode``, disaggregated): a slice with at least one request
  in its own phase goes to that phase whole; every other slice (no request, or only the other phase's) is its
  idle, waiting energy. A prefill GPU's energy while decode runs elsewhere is not decode's.
- A GPU of the budget that the topology leaves ``unused`` (``plugin.serving.topology``): all of it idle, charged
  to the benchmark (it is part of what the topology costs) but to neither phase.
- A GPU that does both (``prefill+decode``: every traditional GPU), or one whose role is unknown, keeps the time
  rule: a slice's energy goes to prefill and decode in proportion to the number of requests in each phase during
  the slice (2 in prefill and 1 in decode: 2/3 to prefill); a slice with no active request is idle.

Idle energy is reported apart and charged to neither phase. Given an idle power, each charged slice's idle share
(idle power x slice length) is also taken off, for the ``*_above_idle_j`` figures. The KV hand-off of a
disaggregated request (``kv_handoff_ms``: the proxy's time from prefill answered to decode's first bytes, which it
relays at once, so it ends at the client's first token) is a figure apart, not a third phase: the time covered by
at least one hand-off and the energy the GPU used meanwhile, already counted in the phases above.

Counter-anchored: the samples give the split its shape, the energy counter its size. Where a counter total is
given (``anchor_j``), every slice's energy is scaled by counter / integral, so prefill + decode + idle equals the
counter exactly; the integral and the scale stay on record, as the measure of how far the two disagree.

Per token: prefill energy over prompt tokens, decode energy over output tokens; per request: prefill plus
decode energy over the requests completed; every count is the work done inside the window
(``plugin.analysis.accounting.work_inside``), the same the benchmark's other figures divide by. A request without a
first token (it failed before one) has no phase boundary to split on: it is skipped and counted in
``skipped_requests``. Curves of several GPUs are summed.

Clock and throttle residency: the same slices, named ``prefill``, ``decode``, ``both`` or ``idle`` by the requests
active in them, against the SM clock and the clocks-event reasons each held from one sample to the next
(``residency``). Pure functions: no I/O.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from itertools import pairwise
from typing import Protocol

from plugin.analysis.accounting import Work, WorkRecord, per_unit, work_inside
from plugin.power.backend import Sample
from plugin.power.window import PowerCurve

ROLE_METHOD = "role"
SHARED_METHOD = "time rule (shared GPU)"
UNKNOWN_ROLE_METHOD = "time rule (role unknown)"
DEDICATED_ROLES = ("prefill", "decode", "unused")
"""Roles charged by role: one phase's GPU, or a budget GPU its topology leaves ``unused`` (all of it idle)."""


class PhaseRecord(WorkRecord, Protocol):
    """What attribution needs of ``plugin.records.requests.RequestRecord``: the accounting's fields (it counts the work
    inside the window) and the proxy's KV hand-off time (``None`` from a traditional server)."""

    @property
    def kv_handoff_ms(self) -> float | None: ...


def method_of(role: str) -> str:
    """How a GPU of this role is attributed: by its role when it does one phase, else by the time rule."""
    if role in DEDICATED_ROLES:
        return ROLE_METHOD
    return SHARED_METHOD if role == "prefill+decode" else UNKNOWN_ROLE_METHOD


@dataclass(frozen=True, slots=True)
class PhaseSlice:
    """A stretch of time over which the number of requests in each phase does not change."""

    start_s: float
    end_s: float
    in_prefill: int
    in_decode: int

    @property
    def duration_s(self) -> float:
        return self.end_s - self.start_s

    @property
    def phase(self) -> str:
        """``prefill``, ``decode``, ``both`` or ``idle``: the residency's name for the slice."""
        if self.in_prefill and self.in_decode:
            return "both"
        return "prefill" if self.in_prefill else "decode" if self.in_decode else "idle"


def phase_slices(
    records: Sequence[PhaseRecord], start_s: float, end_s: float, prefill_s: float | None = None
) -> list[PhaseSlice]:
    """``[start_s, end_s]`` cut at every phase boundary (``phase_times``) of the requests that have a first token."""
    changes: dict[float, list[int]] = defaultdict(lambda: [0, 0])
    for prefill_from, decode_from, end in (phase_times(r, prefill_s) for r in records if r.first_token_s is not None):
        changes[prefill_from][0] += 1
        changes[decode_from][0] -= 1
        changes[decode_from][1] += 1
        changes[end][1] -= 1
    bounds = sorted({start_s, end_s, *(t for t in changes if start_s < t < end_s)})
    change_times = sorted(changes)
    slices = []
    in_prefill = in_decode = next_change = 0
    for a_s, b_s in pairwise(bounds):
        while next_change < len(change_times) and change_times[next_change] <= a_s:
            delta = changes[change_times[next_change]]
            in_prefill += delta[0]
            in_decode += delta[1]
            next_change += 1
        slices.append(PhaseSlice(a_s, b_s, in_prefill, in_decode))
    return slices


def phase_times(record: PhaseRecord, prefill_s: float | None = None) -> tuple[float, float, float]:
    """``(prefill from, decode from, end)`` of a request with a first token, monotonic so that no phase has a
    negative length: decode from the start of its KV hand-off (disaggregated) or its first token; prefill from
    ``prefill_s`` before that (the server's mean prefill time: the wait before it is no phase) or from its send."""
    assert record.first_token_s is not None
    send_s = record.send_s
    first_s = max(record.first_token_s, send_s)
    handoff_s = (record.kv_handoff_ms or 0.0) / 1000.0
    decode_from_s = max(send_s, first_s - handoff_s)
    prefill_from_s = send_s if prefill_s is None else max(send_s, decode_from_s - prefill_s)
    return prefill_from_s, decode_from_s, max(record.end_s, first_s)


def kv_handoff_intervals(records: Iterable[PhaseRecord]) -> list[tuple[float, float]] | None:
    """Each request's KV hand-off on the client's clock: the ``kv_handoff_ms`` before its first token (never
    before its send); ``None`` when no record carries one (a traditional server)."""
    intervals = []
    for record in records:
        if record.kv_handoff_ms is None or record.first_token_s is None:
            continue
        first_s = max(record.first_token_s, record.send_s)
        intervals.append((max(record.send_s, first_s - record.kv_handoff_ms / 1000.0), first_s))
    return intervals if intervals else None


@dataclass(frozen=True, slots=True)
class PhaseEnergy:
    """Energy split between prefill, decode and idle over ``[start_s, end_s]``; ``None`` without power samples."""

    start_s: float
    end_s: float
    prefill_j: float | None
    decode_j: float | None
    idle_j: float | None
    """Slices charged to no phase: no request at all, and on a GPU of one phase also those of the other phase only."""
    idle_power_w: float | None
    prefill_above_idle_j: float | None
    decode_above_idle_j: float | None
    prefill_s: float
    """Time with at least one request in prefill (slices shared with decode included); the same on every GPU."""
    decode_s: float
    overlap_s: float
    """Time with requests in both phases, whose energy was split."""
    idle_s: float
    """Time with no request in either phase (some may wait in the queue); the client's view, like the other times."""
    requests: int
    """Requests completed inside the window; with the two token counts, the work inside it (``work_inside``)."""
    skipped_requests: int
    prompt_tokens: int
    output_tokens: int
    integral_j: float | None = None
    """The power samples' energy over the window, before anchoring."""
    scale: float = 1.0
    """Counter / integral, applied to every slice (1.0 without a counter)."""
    method: str = SHARED_METHOD
    """``role`` (a GPU of one phase) or the time rule (``method_of``)."""
    kv_handoff_s: float | None = None
    """Time with at least one KV hand-off under way; ``None`` without hand-off times (traditional)."""
    kv_handoff_j: float | None = None
    """The energy used over ``kv_handoff_s`` (anchored like the phases, and already inside them)."""

    @property
    def total_j(self) -> float | None:
        if self.prefill_j is None or self.decode_j is None or self.idle_j is None:
            return None
        return self.prefill_j + self.decode_j + self.idle_j

    @property
    def j_per_prompt_token(self) -> float | None:
        return per_unit(self.prefill_j, self.prompt_tokens)

    @property
    def j_per_output_token(self) -> float | None:
        return per_unit(self.decode_j, self.output_tokens)

    @property
    def j_per_request(self) -> float | None:
        active_j = None if self.prefill_j is None or self.decode_j is None else self.prefill_j + self.decode_j
        return per_unit(active_j, self.requests)


def attribute_energy(
    curves: Sequence[PowerCurve],
    records: Sequence[PhaseRecord],
    start_s: float | None = None,
    end_s: float | None = None,
    idle_power_w: float | None = None,
    anchor_j: float | None = None,
    role: str = "prefill+decode",
    kv_handoffs: Sequence[tuple[float, float]] | None = None,
    prefill_s: float | None = None,
) -> PhaseEnergy:
    """Split the curves' energy over ``[start_s, end_s]`` (default: first send to last end) by the rule of the GPUs'
    ``role`` (above), scaled so that the parts add up to ``anchor_j`` (the counter's energy of the same GPUs) when
    it is given.

    ``idle_power_w`` is the sum over the GPUs of ``curves``. The counts are the work done inside the window.
    ``kv_handoffs`` (``kv_handoff_intervals``) are clipped to the window and merged; ``prefill_s`` is the
    server's mean prefill time (``phase_times``).
    """
    used = [r for r in records if r.first_token_s is not None]
    if start_s is None:
        start_s = min((r.send_s for r in used), default=0.0)
    if end_s is None:
        end_s = max((phase_times(r)[2] for r in used), default=start_s)
    curves = [curve for curve in curves if curve]
    integral_j = math.fsum(curve.energy_j(start_s, end_s) or 0.0 for curve in curves) if curves else None
    scale = anchor_j / integral_j if anchor_j is not None and integral_j else 1.0
    method = method_of(role)

    def energy(a_s: float, b_s: float) -> float:
        return scale * math.fsum(curve.energy_j(a_s, b_s) or 0.0 for curve in curves)

    sums = _split_slices(phase_slices(used, start_s, end_s, prefill_s), energy, role, method, idle_power_w)
    handoff = None if kv_handoffs is None else _union(kv_handoffs, start_s, end_s)  # merged: no time counts twice
    measured = bool(curves)
    above_idle = measured and idle_power_w is not None
    return PhaseEnergy(
        start_s=start_s,
        end_s=end_s,
        prefill_j=sums.prefill_j if measured else None,
        decode_j=sums.decode_j if measured else None,
        idle_j=sums.idle_j if measured else None,
        idle_power_w=idle_power_w,
        prefill_above_idle_j=sums.prefill_above_j if above_idle else None,
        decode_above_idle_j=sums.decode_above_j if above_idle else None,
        prefill_s=sums.prefill_s,
        decode_s=sums.decode_s,
        overlap_s=sums.overlap_s,
        idle_s=sums.idle_s,
        skipped_requests=len(records) - len(used),
        **_counts(work_inside(used, start_s, end_s)),
        integral_j=integral_j,
        scale=scale,
        method=method,
        kv_handoff_s=None if handoff is None else kv_handoff_seconds(handoff, start_s, end_s),
        kv_handoff_j=None if handoff is None or not measured else math.fsum(energy(a, b) for a, b in handoff),
    )


@dataclass(slots=True)
class _Sums:
    prefill_j: float = 0.0
    decode_j: float = 0.0
    idle_j: float = 0.0
    prefill_above_j: float = 0.0
    decode_above_j: float = 0.0
    prefill_s: float = 0.0
    decode_s: float = 0.0
    overlap_s: float = 0.0
    idle_s: float = 0.0


def _split_slices(
    slices: Iterable[PhaseSlice],
    energy: Callable[[float, float], float],
    role: str,
    method: str,
    idle_power_w: float | None,
) -> _Sums:
    """Each slice's energy to its phases: by role on a dedicated GPU (its own phase, else its idle), by the share
    of requests in each phase on a shared one; the slice's idle share (idle power x length) taken off for the
    above-idle figures."""
    sums = _Sums()
    for piece in slices:
        span_s = piece.duration_s
        energy_j = energy(piece.start_s, piece.end_s)
        active = piece.in_prefill + piece.in_decode
        sums.prefill_s += span_s if piece.in_prefill else 0.0
        sums.decode_s += span_s if piece.in_decode else 0.0
        sums.overlap_s += span_s if piece.in_prefill and piece.in_decode else 0.0
        sums.idle_s += span_s if active == 0 else 0.0
        if method == ROLE_METHOD:
            to_prefill = float(role == "prefill" and piece.in_prefill > 0)
            to_decode = float(role == "decode" and piece.in_decode > 0)
        else:
            to_prefill = piece.in_prefill / active if active else 0.0
            to_decode = piece.in_decode / active if active else 0.0
        if to_prefill + to_decode == 0.0:
            sums.idle_j += energy_j
            continue
        above_j = energy_j - (idle_power_w or 0.0) * span_s
        sums.prefill_j += energy_j * to_prefill
        sums.decode_j += energy_j * to_decode
        sums.prefill_above_j += above_j * to_prefill
        sums.decode_above_j += above_j * to_decode
    return sums


def kv_handoff_seconds(intervals: Iterable[tuple[float, float]], start_s: float, end_s: float) -> float:
    """Time inside ``[start_s, end_s]`` with at least one hand-off under way: the requests', the same on every GPU."""
    return math.fsum(b_s - a_s for a_s, b_s in _union(intervals, start_s, end_s))


def _union(intervals: Iterable[tuple[float, float]], start_s: float, end_s: float) -> list[tuple[float, float]]:
    """The intervals clipped to ``[start_s, end_s]`` and merged where they overlap, so no time counts twice."""
    merged: list[tuple[float, float]] = []
    for a_s, b_s in sorted((max(a, start_s), min(b, end_s)) for a, b in intervals):
        if b_s <= a_s:
            continue
        if merged and a_s <= merged[-1][1]:
            merged[-1] = (merged[-1][0], max(merged[-1][1], b_s))
        else:
            merged.append((a_s, b_s))
    return merged


def _counts(work: Work) -> dict[str, int]:
    return {"requests": work.completed, "prompt_tokens": work.prompt_tokens, "output_tokens": work.output_tokens}


def curves_of(samples: Iterable[Sample]) -> list[PowerCurve]:
    """One curve per GPU from a list of samples (a CSV read back, or a test's)."""
    by_gpu: dict[int, list[Sample]] = defaultdict(list)
    for sample in samples:
        by_gpu[sample.gpu].append(sample)
    return [PowerCurve(gpu_samples) for _, gpu_samples in sorted(by_gpu.items())]

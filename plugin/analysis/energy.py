"""Attribution of GPU energy to prefill and decode, from power samples and the client's request records.

A request is in prefill over ``[send_s, first_token_s]`` and in decode over ``[first_token_s, end_s]`` (the
client's view: prefill includes queueing and, disaggregated, the KV transfer up to the first token).

The rule: time is cut into slices at every phase boundary of every request. Within a slice the set of active
requests does not change; the slice's energy (power samples integrated over it, see ``plugin.power.window``)
goes to prefill and decode in proportion to the number of requests in each phase during the slice. A slice
with 2 requests in prefill and 1 in decode gives 2/3 of its energy to prefill. A slice with no active request
is idle: its energy is reported apart and charged to neither phase. Given an idle power, each slice's idle
share (idle power x slice length) is also taken off before splitting, for the ``*_above_idle_j`` figures.

Counter-anchored: the samples give the split its shape, the energy counter its size. Where a counter total is
given (``anchor_j``), every slice's energy is scaled by counter / integral, so prefill + decode + idle equals the
counter exactly; the integral and the scale stay on record, as the measure of how far the two disagree.

Per token: prefill energy over prompt tokens, decode energy over output tokens; per request: prefill plus
decode energy over the requests counted. A request without a first token (it failed before one) has no phase
boundary to split on: it is skipped and counted in ``skipped_requests``. Curves of several GPUs are summed.
Pure functions: no I/O.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from itertools import pairwise
from typing import Protocol

from plugin.power.backend import Sample
from plugin.power.window import PowerCurve


class PhaseRecord(Protocol):
    """What attribution needs of ``plugin.load.client.RequestRecord``."""

    @property
    def send_s(self) -> float: ...
    @property
    def first_token_s(self) -> float | None: ...
    @property
    def end_s(self) -> float: ...
    @property
    def prompt_len(self) -> int: ...
    @property
    def prompt_tokens(self) -> int | None: ...
    @property
    def completion_tokens(self) -> int | None: ...
    @property
    def token_times_s(self) -> tuple[float, ...]: ...


@dataclass(frozen=True, slots=True)
class PhaseEnergy:
    """Energy split between prefill, decode and idle over ``[start_s, end_s]``; ``None`` without power samples."""

    start_s: float
    end_s: float
    prefill_j: float | None
    decode_j: float | None
    idle_j: float | None
    idle_power_w: float | None
    prefill_above_idle_j: float | None
    decode_above_idle_j: float | None
    prefill_s: float
    """Time with at least one request in prefill (slices shared with decode included)."""
    decode_s: float
    overlap_s: float
    """Time with requests in both phases, whose energy was split."""
    idle_s: float
    requests: int
    skipped_requests: int
    prompt_tokens: int
    output_tokens: int
    integral_j: float | None = None
    """The power samples' energy over the window, before anchoring."""
    scale: float = 1.0
    """Counter / integral, applied to every slice (1.0 without a counter)."""

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
    count_within_window: bool = False,
) -> PhaseEnergy:
    """Split the curves' energy over ``[start_s, end_s]`` (default: first send to last end) by the rule above,
    scaled so that the parts add up to ``anchor_j`` (the counter's energy of the same GPUs) when it is given.

    ``idle_power_w`` is the sum over the GPUs of ``curves``. Tokens are counted for every request used, so
    the window should cover the requests whole; a steady-state window, which cuts through requests, counts
    instead (``count_within_window``) the output tokens that arrived inside it and the prompts and requests whose
    first token did.
    """
    used = [r for r in records if r.first_token_s is not None]
    phases = [_phases(r) for r in used]
    if start_s is None:
        start_s = min((send for send, _, _ in phases), default=0.0)
    if end_s is None:
        end_s = max((end for _, _, end in phases), default=start_s)
    curves = [curve for curve in curves if curve]
    integral_j = math.fsum(curve.energy_j(start_s, end_s) or 0.0 for curve in curves) if curves else None
    scale = anchor_j / integral_j if anchor_j is not None and integral_j else 1.0

    # Changes of the number of requests in prefill and in decode, by time.
    changes: dict[float, list[int]] = defaultdict(lambda: [0, 0])
    for send, first, end in phases:
        changes[send][0] += 1
        changes[first][0] -= 1
        changes[first][1] += 1
        changes[end][1] -= 1
    bounds = sorted({start_s, end_s, *(t for t in changes if start_s < t < end_s)})
    change_times = sorted(changes)

    prefill_j = decode_j = idle_j = prefill_above_j = decode_above_j = 0.0
    prefill_s = decode_s = overlap_s = idle_s = 0.0
    in_prefill = in_decode = next_change = 0
    for a_s, b_s in pairwise(bounds):
        while next_change < len(change_times) and change_times[next_change] <= a_s:
            delta = changes[change_times[next_change]]
            in_prefill += delta[0]
            in_decode += delta[1]
            next_change += 1
        span_s = b_s - a_s
        energy_j = scale * math.fsum(curve.energy_j(a_s, b_s) or 0.0 for curve in curves)
        active = in_prefill + in_decode
        if active == 0:
            idle_j += energy_j
            idle_s += span_s
            continue
        above_j = energy_j - (idle_power_w or 0.0) * span_s
        prefill_j += energy_j * in_prefill / active
        decode_j += energy_j * in_decode / active
        prefill_above_j += above_j * in_prefill / active
        decode_above_j += above_j * in_decode / active
        prefill_s += span_s if in_prefill else 0.0
        decode_s += span_s if in_decode else 0.0
        overlap_s += span_s if in_prefill and in_decode else 0.0

    measured = bool(curves)
    above_idle = measured and idle_power_w is not None
    return PhaseEnergy(
        start_s=start_s,
        end_s=end_s,
        prefill_j=prefill_j if measured else None,
        decode_j=decode_j if measured else None,
        idle_j=idle_j if measured else None,
        idle_power_w=idle_power_w,
        prefill_above_idle_j=prefill_above_j if above_idle else None,
        decode_above_idle_j=decode_above_j if above_idle else None,
        prefill_s=prefill_s,
        decode_s=decode_s,
        overlap_s=overlap_s,
        idle_s=idle_s,
        skipped_requests=len(records) - len(used),
        **(_counts_within(used, start_s, end_s) if count_within_window else _counts(used)),
        integral_j=integral_j,
        scale=scale,
    )


def _counts(used: Sequence[PhaseRecord]) -> dict[str, int]:
    return {
        "requests": len(used),
        "prompt_tokens": sum(r.prompt_tokens if r.prompt_tokens is not None else r.prompt_len for r in used),
        "output_tokens": sum(
            r.completion_tokens if r.completion_tokens is not None else len(r.token_times_s) for r in used
        ),
    }


def _counts_within(used: Sequence[PhaseRecord], start_s: float, end_s: float) -> dict[str, int]:
    prefilled = [r for r in used if r.first_token_s is not None and start_s <= r.first_token_s <= end_s]
    return {
        "requests": len(prefilled),
        "prompt_tokens": sum(r.prompt_tokens if r.prompt_tokens is not None else r.prompt_len for r in prefilled),
        "output_tokens": sum(1 for r in used for t in r.token_times_s if start_s <= t <= end_s),
    }


def _phases(record: PhaseRecord) -> tuple[float, float, float]:
    """``(send, first token, end)``, made monotonic so that no phase has a negative length."""
    assert record.first_token_s is not None
    first_s = max(record.first_token_s, record.send_s)
    return record.send_s, first_s, max(record.end_s, first_s)


def curves_of(samples: Iterable[Sample]) -> list[PowerCurve]:
    """One curve per GPU from a list of samples (a CSV read back, or a test's)."""
    by_gpu: dict[int, list[Sample]] = defaultdict(list)
    for sample in samples:
        by_gpu[sample.gpu].append(sample)
    return [PowerCurve(gpu_samples) for _, gpu_samples in sorted(by_gpu.items())]


def per_unit(energy_j: float | None, count: int) -> float | None:
    return None if energy_j is None or count <= 0 else energy_j / count

"""Arrival schedules: when each request is due, in seconds from the start of a run.

Pure and seeded: the random source is passed in, so the same seed gives the same schedule and a run can be
repeated. The client (``plugin.load.client.run_schedule``) sends each request at its offset; nothing here sleeps.

The open loop follows vLLM's ``vllm bench serve``: the gaps between arrivals are gamma-distributed with shape
``burstiness`` (B) and mean ``1 / rate`` (scale ``1 / (rate * B)``), so B = 1 is a Poisson process, B < 1 is
burstier and B > 1 more even; the coefficient of variation of the gaps is ``1 / sqrt(B)``.

``--arrival-scaling`` says what the drawn gaps become. ``drawn`` (the default) keeps them: the first arrival is
due at 0 and the schedule is a renewal process with the stated gap distribution, so the load a round actually
offers is that of its draw (80 Poisson arrivals at 4 req/s once spanned 16.1 s, not 20). ``nominal`` is vLLM's
rule (``get_request`` in ``vllm/benchmarks/serve.py``, no ramp-up): one gap is drawn per request, the first
included, their running sums are the due times, and every due time is multiplied by ``(N / rate) / t_N``, so the
first request is due at its scaled gap and the last of N at exactly ``N / rate``: every draw offers the nominal
rate, at the price of tying every gap to all the others. In steady state (``duration_s``) ``nominal`` sends the
``floor(rate * duration_s)`` requests the nominal rate brings, the last due at ``N / rate``, at most the duration.
"""

from __future__ import annotations

import itertools
import math
import random

from plugin.option_values import DRAWN, NOMINAL, RAMP_UP_STRATEGIES, arrival_scaling


def closed_loop(count: int) -> tuple[float, ...]:
    """All ``count`` requests due at once: a closed loop, whose pace the client's concurrency cap sets."""
    if count < 0:
        raise ValueError(f"count must be zero or more, not {count}")
    return (0.0,) * count


def open_loop(
    rate: float,
    burstiness: float,
    rng: random.Random,
    count: int | None = None,
    duration_s: float | None = None,
    scaling: str = DRAWN,
) -> tuple[float, ...]:
    """Arrivals at ``rate`` requests/s with gamma gaps of shape ``burstiness``; with ``scaling`` ``drawn`` the
    first is due at 0, with ``nominal`` the last of N at N / rate (vLLM's rule, see the module's docstring).

    Give exactly one of ``count`` (that many arrivals) or ``duration_s`` (every arrival due before it; ``nominal``:
    the last may be due at it). ``rate == math.inf`` puts every arrival at 0, which needs a ``count``.
    """
    if not rate > 0:  # also refuses NaN
        raise ValueError(f"the request rate must be positive (requests/s), not {rate}")
    if not (burstiness > 0 and math.isfinite(burstiness)):
        raise ValueError(f"burstiness must be a positive number (1 is Poisson), not {burstiness}")
    if (count is None) == (duration_s is None):
        raise ValueError("give exactly one of count or duration_s")
    if count is not None and count < 0:
        raise ValueError(f"count must be zero or more, not {count}")
    if duration_s is not None and not (duration_s >= 0 and math.isfinite(duration_s)):
        raise ValueError(f"duration_s must be a finite number of seconds, zero or more, not {duration_s}")
    if math.isinf(rate):
        if count is None:
            raise ValueError("an infinite rate puts endless arrivals at 0 in any duration: give a count")
        return closed_loop(count)
    scale_s = 1.0 / (rate * burstiness)
    if arrival_scaling(scaling) == NOMINAL:
        nominal_count = count if count is not None else math.floor(round(rate * (duration_s or 0.0), 9))
        return _nominal_span(rate, nominal_count, burstiness, scale_s, rng)
    offsets: list[float] = []
    offset_s = 0.0
    while count is None or len(offsets) < count:
        if duration_s is not None and offset_s >= duration_s:
            break
        offsets.append(offset_s)
        offset_s += rng.gammavariate(burstiness, scale_s)
    return tuple(offsets)


def _nominal_span(rate: float, count: int, burstiness: float, scale_s: float, rng: random.Random) -> tuple[float, ...]:
    """vLLM's due times: the running sums of ``count`` gaps, scaled so that the last is ``count / rate``."""
    due_s = list(itertools.accumulate(rng.gammavariate(burstiness, scale_s) for _ in range(count)))
    if not due_s or due_s[-1] == 0.0:  # vLLM leaves an all-zero draw as it is
        return tuple(due_s)
    factor = count / rate / due_s[-1]
    return tuple(offset_s * factor for offset_s in due_s)


def ramp_up_rate(strategy: str, start_rps: float, end_rps: float, index: int, count: int) -> float:
    """vLLM's ``--ramp-up-strategy`` rate for request ``index`` of ``count``: from ``start_rps`` at the first to
    ``end_rps`` at the last, in equal steps (``linear``) or equal ratios (``exponential``)."""
    progress = index / max(count - 1, 1)
    if strategy == "linear":
        return start_rps + (end_rps - start_rps) * progress
    if strategy == "exponential":
        return float(start_rps * (end_rps / start_rps) ** progress)
    raise ValueError(f"unknown ramp-up strategy {strategy!r}: {' or '.join(RAMP_UP_STRATEGIES)}")


def ramp_up(
    strategy: str, start_rps: float, end_rps: float, count: int, burstiness: float, rng: random.Random
) -> tuple[float, ...]:
    """``count`` arrivals whose rate ramps from ``start_rps`` to ``end_rps`` (vLLM's rule): the gap before request
    i is drawn at request i's rate (gamma of shape ``burstiness``); the first is due at 0, and no rescaling."""
    if not (start_rps > 0 and end_rps > 0 and math.isfinite(start_rps) and math.isfinite(end_rps)):
        raise ValueError(f"ramp-up rates must be positive and finite, not {start_rps} and {end_rps}")
    offsets: list[float] = []
    offset_s = 0.0
    for index in range(count):
        if index:
            rate = ramp_up_rate(strategy, start_rps, end_rps, index, count)
            offset_s += rng.gammavariate(burstiness, 1.0 / (rate * burstiness))
        offsets.append(offset_s)
    return tuple(offsets)

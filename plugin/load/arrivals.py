"""Arrival schedules: when each request is due, in seconds from the start of a run.

Pure and seeded: the random source is passed in, so the same seed gives the same schedule and a run can be
repeated. The client (``plugin.load.client.run_schedule``) sends each request at its offset; nothing here sleeps.

The open loop follows vLLM's ``vllm bench serve``: the gaps between arrivals are gamma-distributed with shape
``burstiness`` (B) and mean ``1 / rate`` (scale ``1 / (rate * B)``), so B = 1 is a Poisson process, B < 1 is
burstier and B > 1 more even; the coefficient of variation of the gaps is ``1 / sqrt(B)``. Unlike vLLM we do
not rescale the drawn gaps so that the last arrival lands at ``count / rate``: that would tie every gap to all
the others, and the schedule would no longer be a renewal process with the stated gap distribution.
"""

from __future__ import annotations

import math
import random


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
) -> tuple[float, ...]:
    """Arrivals at ``rate`` requests/s with gamma gaps of shape ``burstiness``; the first is due at 0.

    Give exactly one of ``count`` (that many arrivals) or ``duration_s`` (every arrival due before it).
    ``rate == math.inf`` puts every arrival at 0, which needs a ``count``.
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
    offsets: list[float] = []
    offset_s = 0.0
    while count is None or len(offsets) < count:
        if duration_s is not None and offset_s >= duration_s:
            break
        offsets.append(offset_s)
        offset_s += rng.gammavariate(burstiness, scale_s)
    return tuple(offsets)

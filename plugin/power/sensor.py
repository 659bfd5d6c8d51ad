"""The power sensor's real update interval, measured as the time between changes of the reading (as Zeus does).

Sampling faster than the sensor updates only repeats values; the interval is measured, never assumed.
"""

from __future__ import annotations

import statistics
from collections import deque


class UpdateIntervalDetector:
    """Feed it one GPU's readings; ``interval_s`` is the lower quartile of the times between changes of the value.

    A steady reading (an idle GPU's, in steps of 0.3-0.4 W) repeats values on a sensor that did update, which only
    lengthens the gaps: on an idle H200 polled every 100 ms, 46 % of them were 100 ms and the median read 200 ms.
    A sensor slower than the polling never shows gaps shorter than its period, so a low quantile is its period."""

    def __init__(self, min_changes: int = 5, keep: int = 64) -> None:
        self._min_changes = min_changes
        self._intervals_s: deque[float] = deque(maxlen=keep)
        self._value: float | None = None
        self._changed_s: float | None = None

    def feed(self, t_s: float, value: float | None) -> None:
        if value is None or value == self._value:
            return
        if self._value is not None:
            if self._changed_s is not None:
                self._intervals_s.append(t_s - self._changed_s)
            self._changed_s = t_s
        self._value = value

    def interval_s(self) -> float | None:
        """``None`` until ``min_changes`` intervals have been seen (a flat reading tells nothing)."""
        if len(self._intervals_s) < self._min_changes:
            return None
        return statistics.quantiles(self._intervals_s, n=4)[0]

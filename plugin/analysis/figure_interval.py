"""The 95 % half-width of a benchmark's figure, for comparing runs and for the report's sentences: where the
benchmark ran two rounds or more, the spread between rounds (``uncertainty.round_spread``: Student's t on the
per-round values); with one round, for a latency median, the median's standard error over the requests
(sqrt(pi / 2) sigma / sqrt(n), asymptotically, times 1.96); an energy figure carries its own (``power.uncertainty``).
``None`` where none is known: a comparison then says *undecided*, never a change. Pure."""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence

from plugin.analysis.uncertainty import round_spread

MEDIAN_SE_FACTOR = math.sqrt(math.pi / 2)
"""Standard error of a median over that of a mean (1.2533) for a smooth distribution."""
Z95 = 1.959964
MIN_REQUESTS = 3


def median_half_width(values: Sequence[float]) -> float | None:
    """95 % half-width of the median of ``values`` (same unit); ``None`` under ``MIN_REQUESTS`` values."""
    if len(values) < MIN_REQUESTS:
        return None
    return Z95 * MEDIAN_SE_FACTOR * statistics.stdev(values) / math.sqrt(len(values))


def figure_half_width(per_round: Sequence[float | None], per_request: Sequence[float] | None) -> float | None:
    """The rounds' spread where two rounds or more have the figure, else the median's over ``per_request`` (for a
    median only: pass ``None`` for any other figure)."""
    spread = round_spread(per_round) if len(per_round) >= 2 else None
    if spread is not None or per_request is None:
        return spread
    return median_half_width(per_request)


def difference_half_width(first: float | None, second: float | None) -> float | None:
    """95 % half-width of the difference of two independent figures: their half-widths in quadrature."""
    return None if first is None or second is None else math.hypot(first, second)

"""Arrival schedules: the gap distribution vLLM's ``bench serve`` defines (gamma, shape B, mean 1/rate),
repeatable from a seed, and the edges (an infinite rate, a duration instead of a count, bad input)."""

from __future__ import annotations

import math
import random
import statistics

import pytest

from plugin.load.arrivals import closed_loop, open_loop

DRAWS = 2000
SEED = 20261126


def gaps(offsets: tuple[float, ...]) -> list[float]:
    return [later - earlier for earlier, later in zip(offsets, offsets[1:], strict=False)]


@pytest.mark.parametrize("burstiness", [0.5, 1.0, 4.0])
@pytest.mark.parametrize("rate", [3.0, 200.0])
def test_gaps_have_mean_one_over_rate_and_cv_one_over_sqrt_burstiness(rate: float, burstiness: float) -> None:
    offsets = open_loop(rate, burstiness, random.Random(SEED), count=DRAWS + 1)
    drawn = gaps(offsets)
    assert len(drawn) == DRAWS
    mean = statistics.fmean(drawn)
    assert mean == pytest.approx(1.0 / rate, rel=0.05)
    assert statistics.pstdev(drawn) / mean == pytest.approx(1.0 / math.sqrt(burstiness), rel=0.10)


def test_first_arrival_is_at_zero_and_offsets_never_go_back() -> None:
    offsets = open_loop(50.0, 0.5, random.Random(1), count=500)
    assert offsets[0] == 0.0
    assert all(gap >= 0 for gap in gaps(offsets))


def test_same_seed_same_schedule_other_seed_another() -> None:
    first = open_loop(10.0, 1.0, random.Random(7), count=100)
    assert open_loop(10.0, 1.0, random.Random(7), count=100) == first
    assert open_loop(10.0, 1.0, random.Random(8), count=100) != first


def test_infinite_rate_puts_every_arrival_at_zero() -> None:
    assert open_loop(math.inf, 1.0, random.Random(0), count=5) == (0.0,) * 5
    with pytest.raises(ValueError, match="give a count"):
        open_loop(math.inf, 1.0, random.Random(0), duration_s=1.0)


def test_closed_loop_is_all_due_at_the_start() -> None:
    assert closed_loop(3) == (0.0, 0.0, 0.0)
    assert closed_loop(0) == ()


def test_duration_keeps_every_arrival_before_it_and_no_more() -> None:
    """The duration schedule is the same draws cut at the duration: the count schedule's next arrival is past it."""
    rate, duration_s = 40.0, 5.0
    within = open_loop(rate, 1.0, random.Random(SEED), duration_s=duration_s)
    longer = open_loop(rate, 1.0, random.Random(SEED), count=len(within) + 1)
    assert longer[: len(within)] == within
    assert within[-1] < duration_s <= longer[-1]
    assert len(within) == pytest.approx(rate * duration_s, rel=0.15)


def test_zero_duration_or_count_gives_no_arrival() -> None:
    assert open_loop(5.0, 1.0, random.Random(0), duration_s=0.0) == ()
    assert open_loop(5.0, 1.0, random.Random(0), count=0) == ()


@pytest.mark.parametrize(
    ("rate", "burstiness", "count", "duration_s", "message"),
    [
        (0.0, 1.0, 10, None, "rate must be positive"),
        (-2.0, 1.0, 10, None, "rate must be positive"),
        (math.nan, 1.0, 10, None, "rate must be positive"),
        (5.0, 0.0, 10, None, "burstiness"),
        (5.0, -1.0, 10, None, "burstiness"),
        (5.0, math.inf, 10, None, "burstiness"),
        (5.0, 1.0, None, None, "exactly one"),
        (5.0, 1.0, 10, 1.0, "exactly one"),
        (5.0, 1.0, -1, None, "count"),
        (5.0, 1.0, None, -1.0, "duration_s"),
        (5.0, 1.0, None, math.inf, "duration_s"),
    ],
)
def test_bad_input_is_refused(
    rate: float, burstiness: float, count: int | None, duration_s: float | None, message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        open_loop(rate, burstiness, random.Random(0), count=count, duration_s=duration_s)


def test_closed_loop_refuses_a_negative_count() -> None:
    with pytest.raises(ValueError, match="count"):
        closed_loop(-1)

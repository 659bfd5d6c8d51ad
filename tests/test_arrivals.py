"""Arrival schedules: the gap distribution vLLM's ``bench serve`` defines (gamma, shape B, mean 1/rate),
repeatable from a seed, the edges (an infinite rate, a duration instead of a count, bad input), and
``--arrival-scaling``: the drawn gaps kept, or rescaled as vLLM does so the last of N is due at N / rate."""

from __future__ import annotations

import math
import random
import statistics

import pytest

from plugin.load.arrivals import closed_loop, open_loop
from plugin.option_values import DRAWN, NOMINAL, arrival_scaling

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


def test_drawn_keeps_the_suites_schedule_as_it_was() -> None:
    """The default and ``drawn`` give what the suite drew before the option existed (values pinned from then): a
    seeded draw of 80 Poisson arrivals at 4 req/s spans 17.9 s, not 20."""
    for offsets in (open_loop(4.0, 1.0, random.Random(SEED), count=80),
                    open_loop(4.0, 1.0, random.Random(SEED), count=80, scaling=DRAWN)):  # fmt: skip
        assert offsets[:3] == (0.0, 0.16093714052883054, 0.16898586340255378)
        assert offsets[-1] == pytest.approx(17.940592942944384, abs=1e-12)
    within = open_loop(4.0, 1.0, random.Random(SEED), duration_s=30.0, scaling=DRAWN)
    assert len(within) == 131 and within[-1] == pytest.approx(29.805493193941082, abs=1e-12)


@pytest.mark.parametrize("seed", range(5))
@pytest.mark.parametrize(("rate", "count", "burstiness"), [(4.0, 80, 1.0), (0.7, 13, 0.5), (50.0, 1, 2.0)])
def test_nominal_puts_the_last_of_n_arrivals_at_n_over_the_rate(
    seed: int, rate: float, count: int, burstiness: float
) -> None:
    """vLLM's rule: one gap per request, the first included, then every due time scaled so the last is N / rate:
    the first request is due after its own (scaled) gap, not at 0, and the order of the draw is kept."""
    offsets = open_loop(rate, burstiness, random.Random(seed), count=count, scaling=NOMINAL)
    assert len(offsets) == count
    assert offsets[-1] == pytest.approx(count / rate, rel=1e-12)
    assert offsets[0] > 0.0 and all(gap >= 0 for gap in gaps(offsets))


def test_nominal_rescales_the_same_draws_that_drawn_lays_out() -> None:
    """With one seed, ``drawn`` lays gaps g1.. gN after an arrival at 0; ``nominal`` sends request i at
    g1 + .. + gi, all times one factor: the same shape, stretched or shrunk to the nominal span."""
    drawn = open_loop(4.0, 1.0, random.Random(SEED), count=81)
    nominal = open_loop(4.0, 1.0, random.Random(SEED), count=80, scaling=NOMINAL)
    factors = [scaled / kept for scaled, kept in zip(nominal, drawn[1:], strict=True)]
    assert max(factors) == pytest.approx(min(factors), rel=1e-12)
    assert factors[0] == pytest.approx(20.0 / drawn[-1])


@pytest.mark.parametrize(("rate", "duration_s", "count"), [(4.0, 30.0, 120), (0.29, 100.0, 29), (3.0, 0.2, 0)])
def test_nominal_in_steady_state_sends_what_the_rate_brings_in_the_duration(
    rate: float, duration_s: float, count: int
) -> None:
    """floor(rate x duration) requests (0.29 x 100 is 28.999999999999996 in floating point: still 29), the last
    due at N / rate, never past the duration."""
    offsets = open_loop(rate, 1.0, random.Random(SEED), duration_s=duration_s, scaling=NOMINAL)
    assert len(offsets) == count
    if offsets:
        assert offsets[-1] == pytest.approx(count / rate, rel=1e-12)
        assert offsets[-1] <= duration_s * (1 + 1e-12)


def test_an_unknown_scaling_is_refused() -> None:
    assert arrival_scaling("nominal") == NOMINAL
    with pytest.raises(ValueError, match="expected one of drawn, nominal"):
        arrival_scaling("vllm")
    with pytest.raises(ValueError, match="expected one of drawn, nominal"):
        open_loop(4.0, 1.0, random.Random(0), count=3, scaling="vllm")

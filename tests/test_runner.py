"""The runner against a real local stub server (``tests/stub_upstream.py``): rounds repeat their load until the
power window is ``--min-window-s`` long; a steady-state schedule's window opens at the warm-up's end and closes
before the cool-down while requests keep arriving, and only the requests due in the schedule's measured stretch
count; and the pure parts of a serving benchmark's plan (sweep rates, arrivals, schedules)."""

from __future__ import annotations

import math
import random
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

import pytest

from plugin.analysis.accounting import counted_records
from plugin.benchmark_load import serving_plan_for
from plugin.errors import BenchError
from plugin.load.client import STOPPED
from plugin.load.plan import serving_plan
from plugin.load.schedule import Arrivals, SweepEnds, arrivals_of, schedules, sweep_rate, with_measured_end
from plugin.load.workload import SWEEP_MAX, SWEEP_SYNC
from plugin.measurement import Round
from plugin.option_values import DRAWN, NOMINAL, RequestRates
from plugin.power import NoneBackend, Sampler
from plugin.power.devices import Inventory
from plugin.records.requests import RequestRecord
from plugin.records.workload import Workload
from plugin.runner import Runner
from plugin.serving.endpoint import Endpoint
from plugin.session import RunSession
from tests.conftest import StartStub
from tests.settings import make_settings
from tests.test_power_entry import _window, request_record

SERVING = Workload("serving", 8, 2, 0, 4, "random", 4.0, 1.0, None, None)


def prompts(count: int) -> list[list[int]]:
    return [[1, 2, 3]] * count


def test_a_short_round_repeats_its_load_until_the_window_is_long_enough(
    stub_upstream: StartStub, tmp_path: Path
) -> None:
    url = stub_upstream(5.0)  # 2 tokens x 5 ms: a load of 2 requests takes about 10 ms
    with Sampler(NoneBackend("no GPU in this test"), tmp_path) as sampler:
        runner = Runner(Endpoint(url, "m", (1, 100)), sampler, timeout_s=10.0)
        measurement = runner.measure("b", 2, prompts, 2, 2, concurrency=2, min_window_s=0.3)
    for one_round in measurement.rounds:
        assert one_round.window.duration_s >= 0.3
        assert one_round.repeats > 1 and len(one_round.records) == 2 * one_round.repeats
    assert len(measurement.warmup) == 1 and all(record.ok for record in measurement.records)


def test_without_a_minimum_a_round_runs_its_load_once(stub_upstream: StartStub, tmp_path: Path) -> None:
    url = stub_upstream(0.0)
    with Sampler(NoneBackend("no GPU in this test"), tmp_path) as sampler:
        measurement = Runner(Endpoint(url, "m", (1, 100)), sampler, timeout_s=10.0).measure("b", 3, prompts, 2, 2, 1)
    assert [(r.index, r.repeats, len(r.records)) for r in measurement.rounds] == [(0, 1, 2), (1, 1, 2), (2, 1, 2)]


def test_a_steady_state_window_covers_the_measured_stretch_only(stub_upstream: StartStub, tmp_path: Path) -> None:
    """Arrivals every 0.1 s for 1.2 s; the window is [0.3, 1.0]: it opens and closes while requests arrive."""
    url = stub_upstream(5.0)
    arrivals = Arrivals(rate=10.0, concurrency=None, duration_s=1.2, warmup_s=0.3, cooldown_s=0.2)
    rounds = schedules(arrivals, 1, 0, 1.0, random.Random(0), lambda n: [([1, 2, 3], 2)] * n)
    with Sampler(NoneBackend("no GPU in this test"), tmp_path) as sampler:
        runner = Runner(Endpoint(url, "m", (1, 100)), sampler, timeout_s=10.0)
        measurement = runner.measure_schedules("b", rounds, rounds[0])
    (one_round,) = measurement.rounds
    origin_s = min(record.due_s for record in one_round.records)
    assert one_round.steady_state and len(one_round.records) == len(rounds[0].requests)
    assert one_round.window.start_s - origin_s == pytest.approx(0.3, abs=0.05)
    assert one_round.window.duration_s == pytest.approx(0.7, abs=0.05)
    assert one_round.counted_s is not None
    start_s, end_s = one_round.counted_s
    assert start_s - origin_s == pytest.approx(0.3, abs=1e-6) and end_s - start_s == pytest.approx(0.7, abs=1e-6)
    counted = counted_records(one_round)
    assert 0 < len(counted) < len(one_round.records)
    assert [record.due_s for record in counted] == [r.due_s for r in one_round.records if start_s <= r.due_s < end_s]


def test_a_decided_round_stops_its_window_and_counts_only_what_was_due_before(
    stub_upstream: StartStub, tmp_path: Path
) -> None:
    """The capacity probe's over-saturation stop in steady state: told after two counted answers that the round is
    decided, the runner closes the window at once (not at 1.0 s) and counts only the requests due until then."""
    url = stub_upstream(5.0)
    arrivals = Arrivals(rate=10.0, concurrency=None, duration_s=1.2, warmup_s=0.3, cooldown_s=0.2)
    rounds = schedules(arrivals, 1, 0, 1.0, random.Random(0), lambda n: [([1, 2, 3], 2)] * n)
    calls: list[tuple[int, int]] = []

    def decided(answered: Sequence[RequestRecord], counted: int) -> bool:
        calls.append((len(answered), counted))
        return len(answered) >= 2

    with Sampler(NoneBackend("no GPU in this test"), tmp_path) as sampler:
        runner = Runner(Endpoint(url, "m", (1, 100)), sampler, timeout_s=10.0)
        (one_round,) = runner.measure_schedules("b", rounds, None, stop_when=decided).rounds
    counted_offsets = [o for o in rounds[0].due_offsets_s if 0.3 <= o <= 1.0]
    assert calls[0][1] == len(counted_offsets) and calls[-1][0] == 2
    assert one_round.window.duration_s < 0.5
    assert one_round.counted_s is not None and one_round.counted_s[1] == one_round.window.end_s
    assert any(record.error == STOPPED for record in one_round.records)
    assert all(record.ok for record in counted_records(one_round)[:2])


def test_the_schedule_not_the_windows_late_edge_says_which_requests_count() -> None:
    """On 4 H200s the window of one topology opened 6.8 ms late and left out a request due 6.6 ms after the
    stretch began, which every other topology counted (382 against 383 of the same schedule)."""
    records = tuple(request_record(due_s, due_s + 0.1, due_s + 0.5) for due_s in (10.9, 11.0066, 12.0, 18.99, 19.0))
    late_window = _window(11.0068, 19.0068, {0: 100.0}, {0: None})
    one_round = Round(0, records, late_window, 8.0, counted_s=(11.0, 19.0))
    assert [record.due_s for record in counted_records(one_round)] == [11.0066, 12.0, 18.99]
    assert counted_records(Round(0, records, late_window, 8.0)) == list(records)  # a closed loop counts all


def test_sweep_points_sit_evenly_between_the_measured_ends() -> None:
    assert [sweep_rate(str(k), 3, SweepEnds("dp:1", 2.0, 10.0)) for k in (1, 2, 3)] == [4.0, 6.0, 8.0]
    assert sweep_rate("1", 1, SweepEnds("dp:1", 10.0, 2.0)) == 6.0  # ends in either order
    for missing in (None, SweepEnds("dp:1", None, 10.0)):
        with pytest.raises(BenchError, match="needs the synchronous and the saturated throughput"):
            sweep_rate("1", 3, missing)


def test_the_first_topology_to_measure_both_ends_sets_every_topologys_sweep_rates() -> None:
    """Topologies run one after another; once one has measured sync and max, later topologies (and later DVFS
    settings) meet the same rates, whatever their own ends."""
    ends = None
    for topology, point, throughput_rps in [
        ("2p2d", SWEEP_SYNC, 2.0), ("2p2d", SWEEP_SYNC, 2.5), ("2p2d", SWEEP_MAX, 10.0),
        ("1p3d", SWEEP_SYNC, 3.0), ("1p3d", SWEEP_MAX, 20.0),
    ]:  # fmt: skip
        ends = with_measured_end(ends, topology, point, throughput_rps)
    assert ends == SweepEnds("2p2d", 2.0, 10.0)
    assert sweep_rate("2", 3, ends) == 6.0  # for 1p3d too, not (3 + 20) / 2


def test_a_topology_that_left_its_ends_incomplete_gives_way_to_the_next() -> None:
    """Its max point failed (no throughput): the next topology measures both ends afresh."""
    ends = with_measured_end(None, "2p2d", SWEEP_SYNC, 2.0)
    ends = with_measured_end(ends, "2p2d", SWEEP_MAX, None)
    assert not ends.complete
    ends = with_measured_end(ends, "1p3d", SWEEP_SYNC, 3.0)
    assert ends == SweepEnds("1p3d", 3.0, None)
    assert with_measured_end(ends, "1p3d", SWEEP_MAX, 20.0) == SweepEnds("1p3d", 3.0, 20.0)


def test_a_sweep_points_plan_takes_its_datasets_shared_ends_and_names_whose_they_are() -> None:
    """The plan no longer asks which topology runs it: 1p3d's point 2 is planned at 2p2d's rate, and its entry
    says so."""
    settings = make_settings(request_rates=RequestRates(sweep_points=3))
    session = RunSession(settings, Inventory((), None, None), [])
    session.sweep_ends["random"] = SweepEnds("2p2d", 2.0, 10.0)
    point = Workload("serving", 8, 2, 0, 4, "random", None, 1.0, "2", None)
    plan, extra = serving_plan_for(session, point, Endpoint("http://127.0.0.1:1", "m", (1, 100)), random.Random(1))
    assert extra["offered_rate_rps"] == 6.0 and len(plan.rounds[0].due_offsets_s) == 4
    assert extra["sweep_ends"] == {"topology": "2p2d", "sync_rps": 2.0, "max_rps": 10.0}
    assert extra["arrival_scaling"] == DRAWN and plan.rounds[0].due_offsets_s[0] == 0.0
    with pytest.raises(BenchError, match="needs the synchronous and the saturated throughput"):
        serving_plan_for(session, replace(point, dataset="other"), Endpoint("http://127.0.0.1:1", "m", (1, 100)),
                      random.Random(1))  # fmt: skip


def test_nominal_arrival_scaling_reaches_the_schedules_and_the_entry() -> None:
    """--arrival-scaling nominal: every round's 4 requests at 4 req/s end at exactly 1 s (vLLM's span), and the
    entry records the rule it was sent under."""
    settings = make_settings(request_rates=RequestRates((4.0,)), serving_rounds=3, arrival_scaling=NOMINAL)
    session = RunSession(settings, Inventory((), None, None), [])
    plan, extra = serving_plan_for(session, SERVING, Endpoint("http://127.0.0.1:1", "m", (1, 100)), random.Random(1))
    assert extra["arrival_scaling"] == NOMINAL and extra["offered_rate_rps"] == 4.0
    assert [schedule.due_offsets_s[-1] for schedule in plan.rounds] == pytest.approx([1.0, 1.0, 1.0], rel=1e-12)


def test_arrivals_of_a_sweeps_ends_and_of_a_rate() -> None:
    sync = Workload("serving", 8, 2, 0, 4, "random", None, 1.0, "sync", 30.0)
    top = Workload("serving", 8, 2, 8, 4, "random", None, 1.0, "max", 30.0)
    assert arrivals_of(sync, None, 5.0, 5.0) == Arrivals(None, 1, None, 0.0, 0.0)  # closed loop, counted
    assert arrivals_of(top, None, 5.0, 5.0) == Arrivals(math.inf, 8, None, 0.0, 0.0)  # all at once, capped
    assert arrivals_of(SERVING, 4.0, 0.0, 0.0) == Arrivals(4.0, None, None, 0.0, 0.0)


def test_schedules_draw_fresh_requests_for_every_round() -> None:
    drawn: list[int] = []

    def requests_for(count: int) -> list[tuple[list[int], int]]:
        drawn.append(count)
        return [([len(drawn)], 2)] * count

    made = schedules(Arrivals(4.0, None, None, 0.0, 0.0), 3, 5, 1.0, random.Random(1), requests_for)
    assert drawn == [5, 5, 5] and [s.requests[0][0] for s in made] == [[1], [2], [3]]
    assert all(len(s.due_offsets_s) == 5 and s.due_offsets_s[0] == 0.0 and not s.steady_state for s in made)
    closed = schedules(Arrivals(None, 1, None, 0.0, 0.0), 1, 4, 1.0, random.Random(1), requests_for)
    assert closed[0].due_offsets_s == (0.0, 0.0, 0.0, 0.0) and closed[0].max_concurrency == 1


def test_the_warm_up_sends_one_prompt_to_every_server_at_once(stub_upstream: StartStub, tmp_path: Path) -> None:
    url = stub_upstream(20.0)  # 2 tokens x 20 ms: one after another, three would be 40 ms apart
    asked: list[int] = []

    def counted_prompts(count: int) -> list[list[int]]:
        asked.append(count)
        return prompts(count)

    with Sampler(NoneBackend("no GPU in this test"), tmp_path) as sampler:
        runner = Runner(Endpoint(url, "m", (1, 100), warmup_requests=3), sampler, timeout_s=10.0)
        measurement = runner.measure("b", 1, counted_prompts, 2, 2, concurrency=1)
    assert len(measurement.warmup) == 3 and all(record.ok for record in measurement.warmup)
    assert asked == [1, 2]  # one warm-up prompt: the measured prompts do not depend on the topology
    sends = sorted(record.send_s for record in measurement.warmup)
    assert sends[-1] - sends[0] < 0.03


def test_a_serving_plan_draws_the_same_requests_whatever_its_warm_up() -> None:
    arrivals = Arrivals(rate=10.0, concurrency=None, duration_s=1.0, warmup_s=0.0, cooldown_s=0.0)
    settings = make_settings(random_range_ratio=0.5)
    one, three = (
        serving_plan(SERVING, arrivals, settings, random.Random(7), None, (1, 100), 4096, warm) for warm in (1, 3)
    )
    assert one.rounds == three.rounds
    assert three.warmup.requests == one.warmup.requests * 3 and three.warmup.due_offsets_s == (0.0, 0.0, 0.0)

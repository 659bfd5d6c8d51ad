"""The capacity search and the answer, on synthetic attainment curves (pure: no server)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace

import pytest

from plugin.analysis.answer import NOTHING, RUN, UNDECIDED, answer, answer_json, run_answers
from plugin.analysis.capacity import (
    CONVERGED,
    NEVER_MEETS,
    OUT_OF_PROBES,
    Probe,
    Resolution,
    Search,
    candidate_of,
    clearly_misses,
    fewest_requests_to_meet,
    grid_rates,
)
from plugin.analysis.cost import COST_FIGURE
from plugin.analysis.goodput import attainment_interval_pct
from plugin.analysis.verdict import ENERGY_FIGURE, UNEQUAL, Attainment, Point, serving_points, verdicts
from plugin.capacity_run import sized
from plugin.option_values import RequestRates
from plugin.reanalyse import run_end
from plugin.records.results import BenchmarkPower, BenchmarkResult
from plugin.records.workload import Workload
from tests.settings import make_settings

REQUESTS = 400


def measured(good: int, total: int = REQUESTS) -> Attainment:
    interval = attainment_interval_pct(good, total)
    assert interval is not None
    return Attainment(100.0 * good / total, *interval)


def cliff(capacity_rps: float) -> Callable[[float], Attainment]:
    """Every request good up to ``capacity_rps``, a quarter of them above it."""
    return lambda rate: measured(REQUESTS if rate <= capacity_rps else REQUESTS // 4)


def run_search(curve: Callable[[float], Attainment], saturated_rps: float, resolution: Resolution,
               max_probes: int = 12) -> Search:  # fmt: skip
    search = Search("dp:2", "random", 90.0, resolution, max_probes).with_saturated(saturated_rps, 2.0)
    while (rate := search.next_rate_rps()) is not None:
        search = search.with_probe(Probe(rate, curve(rate), wall_s=3.0))
    return search


@pytest.mark.parametrize("true_rps", [0.7, 3.3, 5.0, 9.7, 14.0])
def test_the_search_converges_on_the_capacity_to_its_resolution(true_rps: float) -> None:
    search = run_search(cliff(true_rps), saturated_rps=5.0, resolution=Resolution(rps=0.25))
    capacity = search.capacity(gpus=2)
    assert capacity.state == CONVERGED
    assert capacity.capacity_rps is not None and capacity.capacity_high_rps is not None
    assert capacity.capacity_rps <= true_rps < capacity.capacity_high_rps
    assert capacity.capacity_high_rps - capacity.capacity_rps <= 0.25
    assert capacity.per_gpu_rps == pytest.approx(capacity.capacity_rps / 2)
    assert capacity.device_time_s == pytest.approx(2.0 + 3.0 * (capacity.probes - 1))


def test_a_relative_resolution_is_honoured_and_a_finer_one_costs_more_probes() -> None:
    coarse = run_search(cliff(3.3), 5.0, Resolution(pct=20)).capacity(1)
    fine = run_search(cliff(3.3), 5.0, Resolution(pct=2)).capacity(1)
    for capacity, pct in ((coarse, 20), (fine, 2)):
        assert capacity.capacity_rps is not None and capacity.capacity_high_rps is not None
        assert capacity.capacity_high_rps - capacity.capacity_rps <= capacity.capacity_high_rps * pct / 100
    assert fine.probes > coarse.probes


def test_a_topology_that_never_meets_the_targets_is_named_so() -> None:
    capacity = run_search(lambda rate: measured(0), 5.0, Resolution(pct=10)).capacity(2)
    assert capacity.state == NEVER_MEETS and capacity.never_meets and capacity.capacity_rps is None
    assert capacity.lowest_probe_rps is not None and capacity.lowest_probe_rps < 5.0 * 0.2
    assert "dp:2 never meets the targets down to" in capacity.text()


def test_undecided_probes_do_not_count_as_met_and_leave_the_interval_open_above() -> None:
    # 362 of 400 (90.5 %) straddles 90 %: not met, yet not clearly missed either.
    search = run_search(lambda rate: measured(REQUESTS if rate <= 2 else 362), 4.0, Resolution(rps=0.5))
    capacity = search.capacity(1)
    assert capacity.capacity_rps is not None and capacity.capacity_rps <= 2
    assert capacity.capacity_high_rps is None and "interval" in capacity.text() and "-?" in capacity.text()


def test_the_search_stops_when_its_probes_are_spent() -> None:
    search = run_search(cliff(3.3), 5.0, Resolution(rps=0.001), max_probes=4)
    assert len(search.probes) == 3 and search.state == OUT_OF_PROBES and search.next_rate_rps() is None


def test_a_probe_is_clearly_missed_only_when_its_pending_requests_cannot_save_it() -> None:
    assert not clearly_misses(good=0, done=5, total=100, target_pct=90)  # 95 could still be good
    assert clearly_misses(good=0, done=30, total=100, target_pct=90)
    assert not clearly_misses(good=0, done=100, total=100, target_pct=90)  # done: the probe decides, not the stop


def capacity_of(name: str, low: float | None, high: float | None, gpus: int = 2) -> object:
    search = Search(name, "random", 90.0, Resolution(pct=10), 8).with_saturated(10.0, 1.0)
    if low is not None:
        search = search.with_probe(Probe(low, measured(REQUESTS), 5.0))
    if high is not None:
        search = search.with_probe(Probe(high, measured(0), 5.0))
    return search.capacity(gpus)


def point(topology: str, rate: float, good: int, energy_j: float, pm_j: float = 0.01) -> Point:
    return Point(topology, "random", rate, 3, measured(good), energy_j, pm_j, ("rounds",), rate * good / REQUESTS / 2)


def test_the_answer_names_bands_crossovers_and_the_cost() -> None:
    capacities = [capacity_of("dp:2", 4.0, 4.4), capacity_of("1p1d", 2.0, 2.2)]
    assert grid_rates(capacities, 4) == (1.0, 2.0, 3.0, 4.0)  # type: ignore[arg-type]
    grid = [
        point("dp:2", 1.0, REQUESTS, 1.0), point("1p1d", 1.0, REQUESTS, 2.0),
        point("dp:2", 2.0, REQUESTS, 3.0), point("1p1d", 2.0, REQUESTS, 1.5),
        point("dp:2", 3.0, REQUESTS, 3.0), point("1p1d", 3.0, 0, 9.0),
        point("dp:2", 4.0, REQUESTS, 3.0), point("1p1d", 4.0, 0, 9.0),
    ]  # fmt: skip
    found = answer("random", capacities, grid, {"ttft": 200.0, "tpot": 20.0}, 90.0)  # type: ignore[arg-type]
    assert [(band.kind, band.topology, band.rates_rps) for band in found.bands] == [
        (RUN, "dp:2", (1.0,)), (RUN, "1p1d", (2.0,)), (RUN, "dp:2", (3.0, 4.0)),
    ]  # fmt: skip
    assert [(c.before, c.after, c.from_rps, c.to_rps) for c in found.crossovers] == [
        ("dp:2", "1p1d", 1.0, 2.0), ("1p1d", "dp:2", 2.0, 3.0),
    ]  # fmt: skip
    text = "\n".join(found.lines())
    assert "ttft <= 200 ms and tpot <= 20 ms" in text and "above 4 req/s" in text
    assert "dp:2 has the larger capacity" in text
    assert "at 3-4 req/s run dp:2 (3 ± 0.01 J per good request, 5400-7200 good requests per GPU-hour)" in text
    assert found.device_time_s == pytest.approx(2 * (1.0 + 5.0 + 5.0)) and "6 probes and 22 s" in text


def test_equal_intervals_give_undecided_never_a_winner() -> None:
    capacities = [capacity_of("dp:2", 2.0, 2.2), capacity_of("1p1d", 2.0, 2.2)]
    grid = [point("dp:2", 1.0, REQUESTS, 1.0, 0.2), point("1p1d", 1.0, REQUESTS, 1.0, 0.2)]
    found = answer("random", capacities, grid, {"ttft": 200.0}, 90.0)  # type: ignore[arg-type]
    assert [band.kind for band in found.bands] == [UNDECIDED]
    assert "larger capacity undecided" in found.larger_capacity


def test_straddling_attainment_is_undecided_and_nothing_met_is_said() -> None:
    capacities = [capacity_of("dp:2", None, 1.0), capacity_of("1p1d", None, 1.0)]
    grid = [point("dp:2", 1.0, 362, 1.0), point("1p1d", 1.0, 0, 1.0), point("dp:2", 2.0, 0, 1.0),
            point("1p1d", 2.0, 0, 1.0)]  # fmt: skip
    found = answer("random", capacities, grid, {"ttft": 200.0}, 90.0)  # type: ignore[arg-type]
    assert [band.kind for band in found.bands] == [UNDECIDED, NOTHING]
    assert "dp:2 90 % met" in found.bands[0].why
    assert "no topology meets the targets at any rate probed" in "\n".join(found.lines())


def entry(plan: str, sweep: str, rate: float | None, good: int, energy_j: float = 1.0) -> BenchmarkResult:
    """A stored serving benchmark of 1p1d under a per-role DVFS plan: ``good`` of ``REQUESTS`` met the targets."""
    low, high = attainment_interval_pct(good, REQUESTS) or (0.0, 0.0)
    summary = {
        "offered_rate_rps": rate, "request_throughput": 8.0, "requests": REQUESTS, "good_requests": good,
        "slo_attainment_pct": 100.0 * good / REQUESTS, "slo_attainment_low_pct": low, "slo_attainment_high_pct": high,
        "goodput_targets_ms": {"tpot": 20.0}, "energy_per_good_request_j": energy_j, "probe_wall_s": 10.0,
    }  # fmt: skip
    workload = Workload("serving", 1024, 128, 0, REQUESTS, "random", rate, 1.0, sweep)
    figure = "energy_per_good_request_j"
    power = BenchmarkPower(True, "nvml", None, {}, None, None, None, None, None, (), (), {figure: 0.01}, {},
                           {figure: ["rounds"]})  # fmt: skip
    name = f"test_serving[1p1d-{plan}-random-{sweep}]"
    return BenchmarkResult(name, name, "disaggregated", "serving", workload, summary, ({},) * 3, power,
                           {"setting": plan}, "", "1p1d", 2)  # fmt: skip


def test_per_role_dvfs_plans_are_searched_apart_and_the_answer_names_the_best_plan() -> None:
    slow, fast = "p-sm1500-d-sm900", "sm1980"
    entries = [
        entry(slow, "probe1", None, REQUESTS), entry(fast, "probe1", None, REQUESTS),
        entry(slow, "probe2", 8.0, REQUESTS), entry(fast, "probe2", 8.0, REQUESTS),
        entry(slow, "probe3", 16.0, 0), entry(fast, "probe3", 16.0, 0),
        entry(slow, "grid1", 4.0, REQUESTS, energy_j=1.0), entry(fast, "grid1", 4.0, REQUESTS, energy_j=2.0),
        entry(slow, "grid2", 8.0, REQUESTS, energy_j=1.5), entry(fast, "grid2", 8.0, REQUESTS, energy_j=3.0),
    ]  # fmt: skip
    (found,) = run_answers(entries, 90.0, Resolution(rps=100.0), 3)
    assert {c.topology for c in found.capacities} == {f"1p1d at {slow}", f"1p1d at {fast}"}
    assert all(c.capacity_rps == 8.0 and c.capacity_high_rps == 16.0 and c.gpus == 2 for c in found.capacities)
    assert [(band.topology, band.rates_rps) for band in found.bands] == [(f"1p1d at {slow}", (4.0, 8.0))]
    assert found.device_time_s == pytest.approx(60.0)
    assert "larger capacity undecided" in found.lines()[-2]


def test_a_priced_grid_gets_a_second_answer_ranked_by_dollars_per_good_request() -> None:
    """The slow plan spends less energy but (priced by the GPU-hour too) costs more per good request: each answer
    ranks by its own figure, the cost's lines only its bands."""
    slow, fast = "p-sm1500-d-sm900", "sm1980"

    def priced(result: BenchmarkResult, usd: float) -> BenchmarkResult:
        cost = {"usd": usd, "usd_per_good_request": usd, "uncertainty": {"usd_per_good_request": 0.001}}
        return replace(result, summary={**result.summary, "cost": cost})

    entries = [
        entry(slow, "probe1", None, REQUESTS), entry(fast, "probe1", None, REQUESTS),
        entry(slow, "probe2", 8.0, REQUESTS), entry(fast, "probe2", 8.0, REQUESTS),
        entry(slow, "probe3", 16.0, 0), entry(fast, "probe3", 16.0, 0),
        priced(entry(slow, "grid1", 4.0, REQUESTS, energy_j=1.0), 0.03),
        priced(entry(fast, "grid1", 4.0, REQUESTS, energy_j=2.0), 0.02),
    ]  # fmt: skip
    by_energy, by_cost = run_answers(entries, 90.0, Resolution(rps=100.0), 3)
    assert (by_energy.figure, by_cost.figure) == (ENERGY_FIGURE, COST_FIGURE)
    assert [band.topology for band in by_energy.bands] == [f"1p1d at {slow}"]
    assert [band.topology for band in by_cost.bands] == [f"1p1d at {fast}"]
    head, bands = by_cost.lines()
    assert head.startswith("answer by $ per good request (random;")
    assert f"at 4 req/s run 1p1d at {fast} (0.02 ± 0.001 $ per good request" in bands
    assert answer_json(by_cost)["ranked_by"] == "$ per good request"
    (stored,) = answer_json(by_cost)["bands"]  # dollars under a dollar key, never under the energy's
    assert stored["usd_per_good_request"] == [0.02] and "energy_per_good_request_j" not in stored
    assert answer_json(by_energy)["bands"][0]["energy_per_good_request_j"] == [1.0]
    (unpriced,) = run_answers(entries[:6] + [entry(slow, "grid1", 4.0, REQUESTS)], 90.0, Resolution(rps=100.0), 3)
    assert unpriced.figure == ENERGY_FIGURE


def test_reanalysis_rebuilds_the_answer_under_the_runs_own_stopping_rule() -> None:
    entries = [entry("sm900", "probe1", None, REQUESTS), entry("sm900", "probe2", 8.0, REQUESTS)]
    settings = {"slo_attainment_pct": 90.0, "capacity_resolution_rps": 100.0, "max_probes": 3}
    fields = run_end(entries, {"capacity": [], "settings": settings})
    (expected,) = run_answers(entries, 90.0, Resolution(rps=100.0), 3)
    assert fields["capacity"][0]["lines"] == expected.lines()
    assert "1p1d at sm900 8 req/s" in fields["capacity"][0]["lines"][-2]


def test_a_probe_sends_at_least_the_requests_that_can_show_the_target() -> None:
    assert fewest_requests_to_meet(90.0) == 35
    assert attainment_interval_pct(34, 34)[0] < 90.0 <= attainment_interval_pct(35, 35)[0]  # type: ignore[index]
    settings = make_settings(request_rates=RequestRates(capacity_points=2), serving_rounds=3, slo_attainment_pct=90.0)
    probe = Workload("serving", 32, 8, 0, 8, "random", None, 1.0, "probe2")
    grid = replace(probe, sweep="grid1")
    assert (sized(probe, 4.0, settings).num_requests, sized(probe, 4.0, settings).request_rate) == (35, 4.0)
    assert sized(grid, 4.0, settings).num_requests == 12  # over three rounds
    assert sized(replace(probe, num_requests=50), 4.0, settings).num_requests == 50


def test_topologies_charged_for_different_gpu_counts_are_not_compared_and_the_answer_says_why() -> None:
    """A Ray run charges the GPUs each deployment was given: 1p1d on 2 GPUs against one whose windows charged 3
    would hand the smaller one a saving it did not earn. No winner, each named with its count."""
    small, large = "sm900", "sm1980"
    entries = [
        entry(small, "probe1", None, REQUESTS), entry(large, "probe1", None, REQUESTS),
        entry(small, "probe2", 8.0, REQUESTS), entry(large, "probe2", 8.0, REQUESTS),
        entry(small, "grid1", 4.0, REQUESTS, energy_j=1.0), entry(large, "grid1", 4.0, REQUESTS, energy_j=2.0),
    ]  # fmt: skip
    entries = [replace(e, gpu_budget=3) if large in e.name else e for e in entries]
    (found,) = run_answers(entries, 90.0, Resolution(rps=100.0), 3)
    (band,) = found.bands
    assert band.kind == UNDECIDED and band.topology is None
    assert band.why == (
        f"not compared: their windows charged different numbers of GPUs (1p1d at {small} 2 GPUs, 1p1d at {large} 3 "
        "GPUs); compare topologies of one budget (the same --gpus, --gpu-role GPUs, or Ray GPUs per topology)"
    )
    grid = [replace(p, topology=candidate_of(e)) for e in entries if "grid" in e.name for p in serving_points([e])]
    (verdict,) = verdicts(grid)
    assert verdict.kind == UNEQUAL and verdict.winner is None
    assert verdict.text().startswith("at 4 req/s no comparison: their windows charged different numbers of GPUs (")

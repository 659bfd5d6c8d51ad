"""A capacity search at run time (``--request-rate capacity:N``): which rate each probe slot and grid point takes,
which slots are skipped (and why), the over-saturation stop handed to the runner, and what ``--resume`` reuses.

The state is the run's stored benchmarks (``RunSession.results``): the searches are rebuilt from them
(``plugin.analysis.capacity.searches``), so a resumed run goes on where the earlier one stopped. Every decision is
made before a benchmark asks for its servers, so a skipped slot starts nothing.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from typing import Any

import pytest

from plugin.analysis.capacity import (
    CONVERGED,
    NEVER_MEETS,
    Capacity,
    Resolution,
    Search,
    clearly_misses,
    fewest_requests_to_meet,
    grid_rates,
    searches,
)
from plugin.analysis.goodput import is_good
from plugin.load.client import STOPPED
from plugin.load.schedule import with_measured_end
from plugin.load.workload import SWEEP_MAX, SWEEP_SYNC
from plugin.measurement import Measurement
from plugin.options import Settings
from plugin.records.requests import RequestRecord
from plugin.records.workload import GRID, PROBE, Workload
from plugin.runner import StopWhen
from plugin.session import RunSession


def resolution_of(settings: Settings) -> Resolution:
    return Resolution(settings.capacity_resolution_rps, settings.capacity_resolution_pct)


def run_searches(run: RunSession) -> dict[tuple[str, str], Search]:
    settings = run.settings
    entries = run.results.benchmarks if run.results is not None else []
    return searches(entries, settings.slo_attainment_pct, resolution_of(settings), settings.max_probes)


def skip_if_measured(run: RunSession, nodeid: str) -> None:
    """With ``--resume``: a benchmark the run folder holds already is skipped, saying so (a sweep's ends it measured
    are taken up again, so the sweep's later points get their rates)."""
    if run.settings.resume is None or run.results is None:
        return
    stored = next((entry for entry in run.results.benchmarks if entry.id == nodeid), None)
    if stored is None:
        return
    if stored.workload.sweep in (SWEEP_SYNC, SWEEP_MAX):
        dataset = str(stored.workload.dataset)
        throughput = stored.summary.get("request_throughput")
        run.sweep_ends[dataset] = with_measured_end(
            run.sweep_ends.get(dataset), stored.topology_name, str(stored.workload.sweep), throughput
        )
    pytest.skip(f"measured already in {run.folder} (--resume): not measured again")


def rate_or_skip(run: RunSession, topology: str, workload: Workload) -> float | None:
    """The offered rate of a probe slot or grid point (``None``: the saturated probe, all at once), or a skip that
    says why the slot is not needed. ``topology`` is the search's candidate (``analysis.capacity.candidate``)."""
    point = workload.sweep or ""
    dataset = str(workload.dataset)
    found = run_searches(run)
    if point == f"{PROBE}1":
        return None
    if point.startswith(PROBE):
        search = found.get((topology, dataset))
        if search is None or search.saturated_rps is None:
            pytest.skip(f"the {topology} saturated probe ({PROBE}1) was not measured, so there is no rate to probe")
        rate = search.next_rate_rps()
        if rate is None:
            pytest.skip(f"{topology}'s search has stopped ({_why_stopped(search, run)})")
        return rate
    assert point.startswith(GRID)
    rates = grid_rates(_capacities(found, dataset), run.settings.request_rates.capacity_points or 1)
    if not rates:
        pytest.skip("no topology meets the targets at any rate probed: there is no shared grid to measure")
    return rates[int(point.removeprefix(GRID)) - 1]


def _capacities(found: dict[tuple[str, str], Search], dataset: str) -> list[Capacity]:
    return [search.capacity(1) for (_, d), search in found.items() if d == dataset]


def _why_stopped(search: Search, run: RunSession) -> str:
    state = search.state
    capacity = search.capacity(run.gpu_budget)
    if state == CONVERGED:
        return f"converged to {search.resolution.text()}: capacity {capacity.text()}"
    if state == NEVER_MEETS:
        return capacity.text()
    return f"{state}: {capacity.text()}"


def stop_when(settings: Settings) -> StopWhen:
    """The over-saturation stop of an open-loop probe: its counted requests so far decide that it misses the targets
    (``clearly_misses``), so the rest are not waited for."""
    targets = settings.goodput
    assert targets is not None, "options refuse a capacity search without --goodput"

    def decided(answered: Sequence[RequestRecord], counted: int) -> bool:
        good = sum(1 for record in answered if is_good(record, targets))
        return clearly_misses(good, len(answered), counted, settings.slo_attainment_pct)

    return decided


def sized(workload: Workload, rate: float | None, settings: Settings) -> Workload:
    """A search point's workload at its rate, sending in count mode at least the requests whose attainment interval
    can clear the target (``fewest_requests_to_meet``: 35 at 90 %), over its one round (a probe) or its rounds (a
    grid point); a steady-state point's count is its rate times its duration."""
    rounds = 1 if is_probe_point(workload) else settings.serving_rounds
    fewest = -(-fewest_requests_to_meet(settings.slo_attainment_pct) // rounds)
    return replace(workload, request_rate=rate, num_requests=max(workload.num_requests, fewest))


def is_search_point(workload: Workload) -> bool:
    return (workload.sweep or "").startswith((PROBE, GRID))


def is_grid_point(workload: Workload) -> bool:
    return (workload.sweep or "").startswith(GRID)


def is_probe_point(workload: Workload) -> bool:
    return (workload.sweep or "").startswith(PROBE)


def is_open_loop_probe(workload: Workload) -> bool:
    """A probe at a rate (the saturated one sends everything at once: nothing to stop)."""
    return is_probe_point(workload) and workload.request_rate is not None


def probe_extra(measurement: Measurement, wall_s: float) -> dict[str, Any]:
    """What a search point's entry keeps beyond the summary: its device time (warm-up and drain included) and
    whether the over-saturation stop ended it."""
    stopped = any(record.error == STOPPED for record in measurement.records)
    return {"probe_wall_s": wall_s, "stopped_early": stopped}

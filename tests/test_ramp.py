"""Ramp-up arrivals (vLLM's ``--ramp-up-strategy``) and their report stage by stage."""

from __future__ import annotations

import math
import random

import pytest

from plugin.analysis.ramp import ramp_stages
from plugin.analysis.turn_energy import RequestEnergy
from plugin.load.arrivals import ramp_up, ramp_up_rate
from plugin.records.requests import RequestRecord
from plugin.records.workload import Workload
from plugin.terminal import ramp_lines
from tests.test_prefix_reuse import measured_power


@pytest.mark.parametrize(
    ("strategy", "rates"), [("linear", [1.0, 4.0, 7.0]), ("exponential", [1.0, pytest.approx(7**0.5), 7.0])]
)
def test_the_rate_goes_from_start_to_end_over_the_requests(strategy: str, rates: list[float]) -> None:
    assert [ramp_up_rate(strategy, 1.0, 7.0, i, 3) for i in range(3)] == rates


def test_gaps_shrink_as_the_rate_ramps_up() -> None:
    offsets = ramp_up("linear", 1.0, 20.0, 400, 1.0, random.Random(5))
    assert offsets[0] == 0.0 and list(offsets) == sorted(offsets)
    gaps = [b - a for a, b in zip(offsets, offsets[1:], strict=False)]
    early, late = sum(gaps[:100]) / 100, sum(gaps[-100:]) / 100
    assert early > 4 * late  # mean rate about 3.4 req/s in the first quarter, 17 in the last
    with pytest.raises(ValueError, match="positive and finite"):
        ramp_up("linear", 0.0, 2.0, 3, 1.0, random.Random(0))


def test_a_ramp_names_its_workload() -> None:
    workload = Workload("serving", 1, 1, 0, 8, "sharegpt-tiny", ramp_up=("exponential", 1.0, 8.0))
    assert workload.id == "sharegpt-tiny-ramp-exponential1-8"


def record(index: int, due_s: float, ttft_s: float) -> RequestRecord:
    return RequestRecord(index, 10, 2, due_s, due_s, due_s + ttft_s, (due_s + ttft_s,) * 2, due_s + 1, 10, 2, None)


def test_stages_cut_the_round_in_equal_counts_with_their_rates_load_and_energy() -> None:
    due = [0.0, 1.0, 1.5, 1.75, 1.875, 1.9, 1.95, 1.975]
    records = [record(i, due_s, 0.1 * (i + 1)) for i, due_s in enumerate(due)]
    energies = [RequestEnergy(1.0, float(i)) for i in range(8)]
    stages = ramp_stages(("linear", 1.0, 8.0), [(records, energies)], measured_power(100.0))
    assert [(s["stage"], s["requests"]) for s in stages] == [(0, 2), (1, 2), (2, 2), (3, 2)]
    assert [(s["from_rps"], s["to_rps"]) for s in stages] == [(1.0, 2.0), (3.0, 4.0), (5.0, 6.0), (7.0, 8.0)]
    assert stages[0]["arrival_rate_rps"] == pytest.approx(1.0) and stages[1]["arrival_rate_rps"] == pytest.approx(4.0)
    assert stages[3]["p99_ttft_ms"] > stages[0]["p99_ttft_ms"]
    assert stages[0]["energy_per_request_j"] == pytest.approx(1.5)
    # 2 % and 1 % of the energy's measurement parts, carried to the stage's 1.5 J; one round: no spread
    assert stages[0]["energy_per_request_pm_j"] == pytest.approx(1.5 * math.hypot(0.02, 0.01))
    assert stages[0]["energy_per_request_pm_sources"] == ["disagreement", "edges"]
    assert ramp_stages(("linear", 1.0, 8.0), [([], [])], measured_power(100.0)) == []


def test_a_stage_in_two_rounds_carries_their_spread() -> None:
    records = [record(i, float(i), 0.1) for i in range(4)]
    rounds = [(records, [RequestEnergy(1.0, 0.0)] * 4), (records, [RequestEnergy(3.0, 0.0)] * 4)]
    stage = ramp_stages(("linear", 1.0, 8.0), rounds, measured_power(100.0, None, None))[0]
    assert stage["energy_per_request_j"] == pytest.approx(2.0)
    assert stage["energy_per_request_pm_j"] == pytest.approx(12.7062)  # t(1) x s / sqrt(2), s = sqrt(2)
    assert stage["energy_per_request_pm_sources"] == ["rounds"]
    assert "2±13 J/request" in ramp_lines("b", {"ramp_stages": [stage]})[0]

"""Cost and carbon from measured energy and GPU time at the user's prices (``plugin.analysis.cost``): GPU time split
by the energy's rules, the figures on cases worked by hand, their ± from the energy's, absent without a price, and
the identities checker catching a tampered figure."""

from __future__ import annotations

import copy
import math
from dataclasses import replace
from pathlib import Path

import pytest

from plugin.analysis.benchmark import benchmark_result
from plugin.analysis.cost import COST_KEY, formula_lines, gpu_time, stored_prices
from plugin.measurement import Measurement, Round
from plugin.option_values import GoodputTargets, Prices
from plugin.power.window import WindowMeasurement
from plugin.records.requests import RequestRecord
from plugin.records.results import BenchmarkResult, to_json
from plugin.records.topology import DEFAULT_TOPOLOGIES
from plugin.records.workload import Workload
from plugin.report import build_report
from plugin.report.cost_section import cost_section
from plugin.report.formatting import number
from plugin.results.identities import broken
from plugin.terminal_cost import write_cost
from tests.test_power_entry import request_record
from tests.test_report import stored, table_with, write_run
from tests.test_uncertainty import _window

PRICES = Prices(energy_usd_per_kwh=0.2, gpu_usd_per_hour=2.0, grid_g_co2e_per_kwh=400.0, pue=1.5)
LOOSE = GoodputTargets(ttft_ms=10_000.0)


def _record(send_s: float, first_s: float, end_s: float) -> RequestRecord:
    return request_record(send_s, first_s, end_s)


def test_gpu_time_is_split_by_role_as_energy_is() -> None:
    """One request, prefill 1-3 s and decode 3-7 s in a 10 s window, on a budget of three GPUs: the prefill GPU's
    time is prefill's while it prefills and idle after, the decode GPU's likewise, the unused one idle throughout."""
    split = gpu_time([_record(1.0, 3.0, 7.0)], 0.0, 10.0, ["prefill", "decode", "unused"])
    assert (split.prefill_s, split.decode_s, split.idle_s) == pytest.approx((2.0, 4.0, 24.0))
    assert split.total_s == pytest.approx(30.0)  # every GPU of the budget, the whole window


def test_a_shared_gpu_splits_its_time_by_the_requests_in_each_phase() -> None:
    """A: prefill 0-2, decode 2-6; B: prefill 1-4, decode 4-8. 2-4 s has one in each phase: half each."""
    records = [_record(0.0, 2.0, 6.0), _record(1.0, 4.0, 8.0)]
    split = gpu_time(records, 0.0, 10.0, ["prefill+decode"])
    assert (split.prefill_s, split.decode_s, split.idle_s) == pytest.approx((3.0, 5.0, 2.0))


def _result(
    windows: list[WindowMeasurement], prices: Prices | None, budget: int = 1, roles: dict[int, str] | None = None
) -> BenchmarkResult:
    """One request a round (100 prompt, 10 output tokens: prefill for its first 0.2 s, decode until 0.1 s before
    the window's end), one GPU that does both phases, loose goodput targets (the request is good)."""
    rounds = tuple(
        Round(i, (_record(w.start_s, w.start_s + 0.2, w.end_s - 0.1),), w, w.duration_s) for i, w in enumerate(windows)
    )
    return benchmark_result(
        "test_serving[x]", "test_serving[x]", DEFAULT_TOPOLOGIES[0], Workload("serving", 100, 10, 1, 1),
        Measurement((), rounds, {}, {}), {0: "prefill+decode"} if roles is None else roles, None, "requests.jsonl",
        budget, LOOSE, prices=prices,
    )  # fmt: skip


def test_the_figures_of_one_round_worked_by_hand() -> None:
    # 100 W flat over 6 s, counter 600 J: prefill 0-0.2 s (20 J), decode 0.2-5.9 s (570 J), idle 10 J.
    cost = _result([_window(0.0, 6.0, 100.0, 600.0, 0.1)], PRICES).summary[COST_KEY]
    assert cost["energy_kwh"] == pytest.approx(600.0 * 1.5 / 3.6e6)  # 0.00025 kWh at the facility
    assert cost["energy_usd"] == pytest.approx(0.00005)  # x $0.2/kWh
    assert cost["gpu_hours"] == pytest.approx(6.0 / 3600) and cost["gpu_time_usd"] == pytest.approx(6.0 / 1800)
    assert cost["usd"] == pytest.approx(0.00005 + 6.0 / 1800)
    assert cost["g_co2e"] == pytest.approx(0.1)  # 0.00025 kWh x 400 g/kWh
    assert cost["gpu_s"] == pytest.approx({"prefill": 0.2, "decode": 5.7, "idle": 0.1})
    # Input pays prefill's share of each cost: 20 of 590 busy J, 0.2 of 5.9 busy GPU-s; over 100 prompt tokens.
    assert cost["energy_usd_per_million_input_tokens"] == pytest.approx(0.016949, rel=1e-4)
    assert cost["gpu_time_usd_per_million_input_tokens"] == pytest.approx(1.129944, rel=1e-5)
    assert cost["energy_usd_per_million_output_tokens"] == pytest.approx(4.830508, rel=1e-5)  # 570/590, 10 tokens
    assert cost["usd_per_million_output_tokens"] == pytest.approx(4.830508 + 322.033898, rel=1e-5)
    assert cost["usd_per_good_request"] == pytest.approx(cost["usd"])  # one good request
    assert cost["g_co2e_per_good_request"] == pytest.approx(0.1)
    assert cost["g_co2e_per_million_output_tokens"] == pytest.approx(10_000.0)  # 0.1 g over 10 tokens
    assert cost["inputs"] == {"energy_usd_per_kwh": 0.2, "pue": 1.5, "gpu_usd_per_hour": 2.0,
                              "grid_g_co2e_per_kwh": 400.0}  # fmt: skip
    assert cost["note"] is None


def test_without_a_price_there_is_no_cost() -> None:
    window = [_window(0.0, 6.0, 100.0, 600.0, 0.1)]
    assert COST_KEY not in _result(window, None).summary
    assert COST_KEY not in _result(window, Prices(pue=1.3)).summary  # a PUE prices nothing
    only_gpu = _result(window, Prices(gpu_usd_per_hour=2.0)).summary[COST_KEY]
    assert only_gpu["energy_usd"] is None and only_gpu["g_co2e"] is None
    assert only_gpu["usd"] == pytest.approx(only_gpu["gpu_time_usd"])  # the total holds only what was priced
    assert only_gpu["energy_usd_per_million_output_tokens"] is None
    assert only_gpu["usd_per_million_output_tokens"] == pytest.approx(
        only_gpu["gpu_time_usd_per_million_output_tokens"]
    )


def test_gpu_time_alone_is_exact_and_says_so() -> None:
    """One round priced by the GPU-hour only: the GPU time is read off the clock, so its figures' ± is 0 from the
    clock alone (never missing); per good request the good count's interval is still there."""
    only_gpu = _result([_window(0.0, 6.0, 100.0, 600.0, 0.1)], Prices(gpu_usd_per_hour=2.0)).summary[COST_KEY]
    for key in ("usd", "gpu_time_usd", "gpu_hours", "usd_per_million_input_tokens", "usd_per_million_output_tokens"):
        assert (only_gpu["uncertainty"][key], only_gpu["uncertainty_sources"][key]) == (0.0, ["clock"]), key
    assert only_gpu["uncertainty"]["usd_per_good_request"] > 0
    assert only_gpu["uncertainty_sources"]["usd_per_good_request"] == ["clock", "good_count"]
    lines: list[str] = []
    write_cost(lines.append, [_result([_window(0.0, 6.0, 100.0, 600.0, 0.1)], Prices(gpu_usd_per_hour=2.0))], 90.0)
    assert lines[2].split()[1:3] == ["0.00333", "exact"]  # the total: 6 GPU-s at $2/GPU-h
    assert any("a figure of GPU time alone has no measurement error ('exact')" in line for line in lines)
    # with the energy priced too, the total carries the energy's ± beside the clock's 0
    both = _result([_window(0.0, 6.0, 100.0, 600.0, 0.1)], PRICES).summary[COST_KEY]
    assert both["uncertainty_sources"]["usd"] == ["clock", "disagreement", "edges"] and both["uncertainty"]["usd"] > 0


def test_energy_not_measured_leaves_the_energy_part_out_and_says_why() -> None:
    unmeasured = WindowMeasurement("w", "none", 0.0, 6.0, (), (), "power not measured: --power-backend none", {})
    cost = _result([unmeasured], PRICES, budget=2, roles={}).summary[COST_KEY]  # as on CPU: no GPU, 2 slots
    assert cost["energy_usd"] is None and cost["g_co2e"] is None and cost["g_co2e_per_good_request"] is None
    assert cost["usd"] is None  # an energy price was given: a total without its energy would understate it
    assert cost["gpu_time_usd"] == pytest.approx(2 * 6.0 / 1800)  # both slots of the budget
    assert cost["gpu_time_usd_per_good_request"] == pytest.approx(2 * 6.0 / 1800)
    assert "power was not measured (power not measured: --power-backend none)" in cost["note"]


def test_each_figure_carries_the_energys_interval() -> None:
    # Three rounds: counters 630, 600, 660 J over 6 s windows, one good request each.
    windows = [_window(10.0 * i, 10.0 * i + 6, 100.0, c, 0.1) for i, c in enumerate([630.0, 600.0, 660.0])]
    result = _result(windows, PRICES)
    cost, power = result.summary[COST_KEY], result.power
    pm = cost["uncertainty"]
    energy_pm_j = power.uncertainty["energy_j"]
    assert energy_pm_j is not None and power.energy_j is not None
    # Totals: the energy's relative ±, the GPU time's cost adding none (it is read off the clock).
    assert pm["energy_usd"] == pytest.approx(energy_pm_j / power.energy_j * cost["energy_usd"])
    assert pm["usd"] == pytest.approx(pm["energy_usd"])
    assert pm["g_co2e"] / cost["g_co2e"] == pytest.approx(energy_pm_j / power.energy_j)
    # Per good request: E / good moves with the energy per request; its ± is that of J per good request, scaled.
    j_per_good = result.summary["energy_per_good_request_j"]
    assert pm["g_co2e_per_good_request"] / cost["g_co2e_per_good_request"] == pytest.approx(
        power.uncertainty["energy_per_good_request_j"] / j_per_good
    )
    # The GPU time is the same every round (6 s, one request): its figures have no spread and no measurement part.
    assert pm["gpu_time_usd_per_good_request"] is not None
    assert pm["gpu_time_usd_per_good_request"] < 1e-9 * cost["gpu_time_usd_per_good_request"] + 1e-12
    assert pm["usd_per_million_output_tokens"] > pm["energy_usd_per_million_output_tokens"] * 0.99


def test_reanalysis_gets_the_inputs_back_from_the_stored_figures() -> None:
    cost = _result([_window(0.0, 6.0, 100.0, 600.0, 0.1)], PRICES).summary[COST_KEY]
    assert stored_prices(cost) == PRICES and stored_prices(None) is None


def test_the_formula_names_every_input_given() -> None:
    text = "\n".join(formula_lines({"energy_usd_per_kwh": 0.2, "pue": 1.5, "gpu_usd_per_hour": None,
                                     "grid_g_co2e_per_kwh": 400.0}))  # fmt: skip
    assert "PUE 1.5" in text and "$0.2/kWh" in text and "400 gCO2e/kWh" in text and "GPU-h" not in text


def test_the_identities_catch_a_tampered_cost_figure() -> None:
    result = _result([_window(10.0 * i, 10.0 * i + 6, 100.0, c, 0.1) for i, c in enumerate([630.0, 600.0])], PRICES)
    entry = to_json(result)
    assert list(broken(entry)) == []
    for key, factor in (("usd_per_good_request", 1.01), ("usd_per_million_input_tokens", 0.9),
                        ("g_co2e_per_million_output_tokens", 1.5), ("gpu_time_usd", 1.1)):  # fmt: skip
        tampered = copy.deepcopy(entry)
        tampered["summary"][COST_KEY][key] *= factor
        problems = list(broken(tampered))
        assert problems and all(problem.startswith("cost: ") for problem in problems), (key, problems)
    assert math.isfinite(entry["summary"][COST_KEY]["usd"])


def test_the_terminal_shows_cost_only_when_priced_and_ranks_topologies_by_it() -> None:
    def serving(topology: str, scale: float, prices: Prices | None) -> BenchmarkResult:
        windows = [
            _window(10.0 * i, 10.0 * i + 6, 100.0 * scale, c * scale, 0.1) for i, c in enumerate([630, 600, 660])
        ]
        result = _result(windows, prices)
        result.summary["offered_rate_rps"] = 2.0
        return replace(result, name=f"test_serving[{topology}-r2]", topology=topology)

    lines: list[str] = []
    write_cost(lines.append, [serving("dp:2", 1.0, None), serving("1p1d", 2.0, None)], 90.0)
    assert lines == []  # not asked for: nothing shown
    energy_only = Prices(energy_usd_per_kwh=0.2)
    # 3 good requests of 3: Wilson's interval 43-100 %, so a 40 % target is met.
    write_cost(lines.append, [serving("dp:2", 1.0, energy_only), serving("1p1d", 10.0, energy_only)], 40.0)
    text = "\n".join(lines)
    assert "$/good req" in lines[1] and "test_serving[dp:2-r2]" in lines[2]
    assert "cost: energy $ = measured GPU J x PUE 1 / 3.6e6 J/kWh x $0.2/kWh" in text and "GPU-h" not in text
    # Three rounds each, the same request: 1p1d spends ten times the energy, so ten times the energy's price (the
    # good count's interval, one good request a round, makes the ± wide).
    verdict = next(line for line in lines if line.startswith("verdict by $ per good request"))
    assert "dp:2 meets the targets with 90 ± " in verdict and "% less $ per good request than 1p1d" in verdict


def test_the_reports_section_is_there_only_when_priced() -> None:
    windows = [_window(0.0, 6.0, 100.0, 600.0, 0.1)]
    assert cost_section([_result(windows, None)], 90.0) is None
    section = cost_section([_result(windows, PRICES)], 90.0)
    assert section is not None and section.verdicts == [] and section.notes == []
    row = section.rows[0]
    assert row["usd_per_good_request"] == pytest.approx(0.00005 + 6.0 / 1800) and "usd_per_good_request_pm" in row
    assert any("x $2/GPU-h" in line for line in section.formulas)


def test_the_run_page_shows_a_figure_of_gpu_time_alone_as_exact_as_the_terminal_does(tmp_path: Path) -> None:
    """Priced by the GPU-hour only, one round: $ per million tokens is the clock's GPU time alone ("exact", never
    "± 0"); $ per good request keeps the good count's ±."""
    results = stored()
    only_gpu = _result([_window(0.0, 6.0, 100.0, 600.0, 0.1)], Prices(gpu_usd_per_hour=2.0)).summary[COST_KEY]
    results["benchmarks"][4]["summary"][COST_KEY] = only_gpu
    (row,) = table_with(build_report(write_run(tmp_path, results)), "$ / good request")
    assert row["$ / M output tokens"] == f"{number(only_gpu['usd_per_million_output_tokens'])} exact"
    assert row["of it GPU time"] == f"{number(only_gpu['gpu_time_usd_per_million_output_tokens'])} exact"
    assert row["$ / good request"].startswith(f"{number(only_gpu['usd_per_good_request'])} ± ")

"""The terminal's figures to hold against others, each only when asked for: the cost and carbon section (a price
or a carbon intensity given): a line per priced benchmark (each figure ± its 95 % interval), the formulas with the
inputs they used, why a figure is missing, and where several topologies ran, the verdict ranked by $ per good
request beside the one by energy; and with ``--mlenergy-max-num-seqs``, ML.ENERGY's figures beside the suite's."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from plugin.analysis.cost import COST_FIGURE, COST_KEY, cost_points, formula_lines, is_exact
from plugin.analysis.mlenergy import MLENERGY_KEY
from plugin.analysis.verdict import verdicts
from plugin.records.results import BenchmarkResult


def name_width(entries: list[BenchmarkResult], heading: str) -> int:
    """A terminal table's first column fits every benchmark's whole name."""
    return max([len(heading), *(len(entry.name) for entry in entries)])


def write_cost(write: Callable[[str], None], entries: list[BenchmarkResult], attainment_pct: float) -> None:
    priced = [entry for entry in entries if COST_KEY in entry.summary]
    if not priced:
        return
    heading = "cost and carbon (derived: inputs below)"
    width = name_width(priced, heading)
    write("")
    write(
        f"{heading:<{width}} {'$ total':>16} {'$/M in tok':>16} {'of it energy':>12} "
        f"{'$/M out tok':>16} {'of it energy':>12} {'$/good req':>18} {'gCO2e/good':>16} {'gCO2e/M out':>16}"
    )
    for entry in priced:
        cost = entry.summary[COST_KEY]
        write(
            f"{entry.name:<{width}} {_pm(cost, 'usd'):>16} {_pm(cost, 'usd_per_million_input_tokens'):>16} "
            f"{_pm(cost, 'energy_usd_per_million_input_tokens', False):>12} "
            f"{_pm(cost, 'usd_per_million_output_tokens'):>16} "
            f"{_pm(cost, 'energy_usd_per_million_output_tokens', False):>12} "
            f"{_pm(cost, 'usd_per_good_request'):>18} {_pm(cost, 'g_co2e_per_good_request'):>16} "
            f"{_pm(cost, 'g_co2e_per_million_output_tokens'):>16}"
        )
    for inputs in _distinct(cost["inputs"] for cost in (entry.summary[COST_KEY] for entry in priced)):
        for line in formula_lines(inputs):
            write(f"cost: {line}")
    if any(
        is_exact(entry.summary[COST_KEY], key) for entry in priced for key in entry.summary[COST_KEY]["uncertainty"]
    ):
        write(
            "cost: GPU time is read off the clock, so a figure of GPU time alone has no measurement error ('exact'); "
            "its ± is otherwise the spread between rounds (--rounds 2 or more) and, per good request, the good count's"
        )
    for entry in priced:
        if entry.summary[COST_KEY].get("note"):
            write(f"cost: {entry.name}: {entry.summary[COST_KEY]['note']}")
    if len({entry.topology_name for entry in priced}) > 1:
        for verdict in verdicts(cost_points(priced), attainment_pct, COST_FIGURE):
            write(f"verdict by {COST_FIGURE} ({verdict.dataset}, target {attainment_pct:g} %): {verdict.text()}")


def write_mlenergy(write: Callable[[str], None], entries: list[BenchmarkResult]) -> None:
    """Per benchmark measured the ML.ENERGY way: their steady state's J per output token and per response, then the
    suite's own over its power window, or why their rule gave no window."""
    for entry in entries:
        view = entry.summary.get(MLENERGY_KEY)
        if view is None:
            continue
        head = f"ML.ENERGY's way ({entry.name}, batch {view['max_num_seqs']}):"
        if view["why_not"]:
            write(f"{head} no figure: {view['why_not']}")
            continue
        write(
            f"{head} {_j(view['steady_state_energy_per_token_j'])} J/output token, "
            f"{_j(view['energy_per_generation_j'])} J/response over their steady state "
            f"({view['steady_state_s']:.1f} s); the suite over its window: "
            f"{_j(view['suite_energy_per_output_token_j'])} J/output token, "
            f"{_j(view['suite_energy_per_request_j'])} J/request"
        )


def _j(value: float | None) -> str:
    return "-" if value is None else f"{value:.4g}"


def _pm(cost: Mapping[str, Any], key: str, with_pm: bool = True) -> str:
    """``value±half-width``, or ``value exact`` where the ± holds the clock alone."""
    value = cost.get(key)
    if value is None:
        return "-"
    if with_pm and is_exact(cost, key):
        return f"{value:.3g} exact"
    spread = cost["uncertainty"].get(key) if with_pm else None
    return f"{value:.3g}" + ("" if spread is None else f"±{spread:.2g}")


def _distinct(inputs: Any) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = []
    for one in inputs:
        if one not in found:
            found.append(one)
    return found

"""The report's cost and carbon section, made from the stored ``cost`` objects alone (``plugin.analysis.cost``):
present only in a run given a price or a carbon intensity. Each figure with its ±, the formulas with the inputs the
run used, why a figure is missing, and the topologies ranked by $ per good request."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from plugin.analysis.cost import COST_FIGURE, COST_KEY, cost_points, formula_lines, is_exact
from plugin.analysis.verdict import verdicts
from plugin.records.results import BenchmarkResult

COLUMNS = {
    "usd_per_million_input_tokens": "$ / M input tokens",
    "energy_usd_per_million_input_tokens": "of it energy",
    "gpu_time_usd_per_million_input_tokens": "of it GPU time",
    "usd_per_million_output_tokens": "$ / M output tokens",
    "energy_usd_per_million_output_tokens": "of it energy",
    "gpu_time_usd_per_million_output_tokens": "of it GPU time",
    "usd_per_good_request": "$ / good request",
    "g_co2e_per_good_request": "gCO2e / good request",
    "g_co2e_per_million_output_tokens": "gCO2e / M output tokens",
}
"""The table's columns: cost key -> heading."""


@dataclass(frozen=True)
class CostSection:
    rows: list[dict[str, Any]]
    """Per priced benchmark: ``name``, ``topology``, and each column's value, ``<key>_pm`` (its ± or ``None``) and
    ``<key>_exact`` (its ± is the GPU time's clock alone: shown as "exact", not "± 0")."""
    formulas: list[str]
    notes: list[str]
    verdicts: list[str]


def cost_section(benchmarks: Sequence[BenchmarkResult], attainment_pct: float) -> CostSection | None:
    """``None`` where no benchmark was priced (the report then says nothing of cost)."""
    priced = [entry for entry in benchmarks if COST_KEY in entry.summary]
    if not priced:
        return None
    rows = []
    for entry in priced:
        cost = entry.summary[COST_KEY]
        row: dict[str, Any] = {"name": entry.name, "topology": entry.topology_name}
        for key in COLUMNS:
            row[key] = cost.get(key)
            row[f"{key}_pm"] = cost["uncertainty"].get(key)
            row[f"{key}_exact"] = is_exact(cost, key)
        rows.append(row)
    formulas: list[str] = []
    for entry in priced:
        formulas += [line for line in formula_lines(entry.summary[COST_KEY]["inputs"]) if line not in formulas]
    notes = [f"{entry.name}: {entry.summary[COST_KEY]['note']}" for entry in priced if entry.summary[COST_KEY]["note"]]
    lines = []
    if len({entry.topology_name for entry in priced}) > 1:
        lines = [f"{v.dataset}: {v.text()}" for v in verdicts(cost_points(priced), attainment_pct, COST_FIGURE)]
    return CostSection(rows, formulas, notes, lines)

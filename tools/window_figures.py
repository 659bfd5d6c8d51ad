"""Output tokens per J of a stored run, counted the way the one accounting counts them, from what its results.json
kept: for records whose request files or power samples were not kept, so ``python -m plugin.reanalyse`` cannot
redo them (issue 23, item 9).

Per benchmark: the windows' energy (counters, every GPU of the budget) over the output tokens that arrived inside
the windows (each window's ``phases.output_tokens``, which counted exactly those), its reciprocal, and the stored
``summary.output_tokens_per_j``, which divided by every output token of the requests due in the measured stretch,
tokens made after the window closed included. The ± is the energy's measurement parts (sensor edges, counter gap),
relative, as ``plugin.analysis.uncertainty`` gives a figure per unit of work; with one round there is no spread
between rounds to add. Schema 1 files (one window in ``power``, its token counts per GPU) are read too.

``--verdicts`` adds the verdict the current rule gives over the stored serving entries (``plugin.analysis.verdict``,
the points built as ``plugin/terminal.py`` builds them): who meets, misses or is undecided by SLO attainment's
Wilson interval, and no winner below 3 rounds per rate. Attainment counts the requests due in the stretch, which the
one accounting did not change.

Usage: ``python tools/window_figures.py RUN [RUN ...] [--verdicts]`` (run folders with results.json).
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from plugin.analysis.accounting import Work, energy_per_work
from plugin.analysis.uncertainty import combine
from plugin.analysis.verdict import serving_points, verdicts
from plugin.option_values import DEFAULT_SLO_ATTAINMENT_PCT
from plugin.records.results import SCHEMA_VERSION
from plugin.results.store import RESULTS_FILE, load_run


@dataclass(frozen=True, slots=True)
class WindowFigures:
    """One benchmark's output tokens per J from its windows' counts, beside what its summary stored."""

    name: str
    rounds: int
    energy_j: float
    counted_output_tokens: int | None
    """``summary.total_output_tokens``: the tokens of the counted requests, wherever they were made."""
    window_output_tokens: int
    output_tokens_per_j: float | None
    energy_per_output_token_j: float | None
    relative_pm: float | None
    """The energy's measurement ± over the energy (95 %); ``None`` where the file holds no parts."""
    stored_output_tokens_per_j: float | None

    @property
    def difference_pct(self) -> float | None:
        """How far the stored figure sits from the window count's, in % of the window count's."""
        new, old = self.output_tokens_per_j, self.stored_output_tokens_per_j
        return None if new is None or old is None or new == 0 else 100.0 * (old - new) / new


def figures_of(entry: dict[str, Any]) -> WindowFigures | None:
    """The benchmark's figures from its stored windows; ``None`` when power was not measured."""
    power = entry.get("power") or {}
    windows = power.get("windows")
    if windows is None:  # schema 1: one window, the token counts on each GPU's split (the same requests on each)
        splits = [gpu["phases"] for gpu in (power.get("gpus") or {}).values() if gpu.get("phases")]
        windows = [{"energy_j": power.get("energy_j"), "phases": splits[0] if splits else None}]
    if not windows or any(w.get("energy_j") is None or not w.get("phases") for w in windows):
        return None
    energy_j = sum(w["energy_j"] for w in windows)
    tokens = sum(w["phases"]["output_tokens"] for w in windows)
    work = Work(window_s=0.0, completed=0, prompt_tokens=0, output_tokens=tokens)
    figures = energy_per_work(energy_j, work)
    parts = power.get("uncertainty_parts") or {}
    measured = combine({key: parts.get(key) for key in ("edges", "disagreement")}) if parts else None
    summary = entry.get("summary") or {}
    rounds = entry.get("rounds")
    return WindowFigures(
        name=entry["name"],
        rounds=len(rounds) if isinstance(rounds, list) else 1,
        energy_j=energy_j,
        counted_output_tokens=summary.get("total_output_tokens"),
        window_output_tokens=tokens,
        output_tokens_per_j=figures["output_tokens_per_j"],
        energy_per_output_token_j=figures["energy_per_output_token_j"],
        relative_pm=None if measured is None or energy_j <= 0 else measured / energy_j,
        stored_output_tokens_per_j=summary.get("output_tokens_per_j"),
    )


def table(folder: Path) -> str:
    """The markdown table of every benchmark of the run folder with measured power."""
    data = json.loads((folder / RESULTS_FILE).read_text())
    lines = [
        "| benchmark | rounds | energy J | output tokens counted | inside the windows | out tok/J before | "
        "out tok/J, window counts | J per output token | before vs window counts |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for entry in data["benchmarks"]:
        row = figures_of(entry)
        if row is None:
            continue
        lines.append(
            f"| {row.name} | {row.rounds} | {row.energy_j:,.1f} | {_count(row.counted_output_tokens)} | "
            f"{row.window_output_tokens:,} | {_value(row.stored_output_tokens_per_j, None)} | "
            f"{_value(row.output_tokens_per_j, row.relative_pm)} | "
            f"{_value(row.energy_per_output_token_j, row.relative_pm)} | {_pct(row.difference_pct)} |"
        )
    return "\n".join(lines)


def verdict_lines(folder: Path) -> list[str]:
    """The current verdicts over the run's serving entries, as the terminal words them; none for a schema 1 file
    (it predates topologies and goodput targets)."""
    if json.loads((folder / RESULTS_FILE).read_text()).get("schema_version") != SCHEMA_VERSION:
        return []
    run = load_run(folder)
    attainment_pct = float((run.header.get("settings") or {}).get("slo_attainment_pct") or DEFAULT_SLO_ATTAINMENT_PCT)
    points = serving_points(run.benchmarks)
    return [
        f"verdict ({v.dataset}, SLO attainment target {attainment_pct:g} %, judged on its 95 % interval): {v.text()}"
        for v in verdicts(points, attainment_pct)
    ]


def _value(value: float | None, relative_pm: float | None) -> str:
    """Four significant digits, the ± two."""
    if value is None:
        return "-"
    return f"{value:.4g}" if relative_pm is None else f"{value:.4g} ± {value * relative_pm:.2g}"


def _count(count: int | None) -> str:
    return "-" if count is None else f"{count:,}"


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{value:+.1f} %"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("runs", nargs="+", type=Path, help="run folders holding results.json")
    parser.add_argument("--verdicts", action="store_true", help="also the current verdicts over the serving entries")
    args = parser.parse_args(argv)
    for folder in args.runs:
        print(f"## {folder}\n\n{table(folder)}\n")
        lines = verdict_lines(folder) if args.verdicts else []
        if lines:
            print("\n".join(lines) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""``python -m plugin.report compare RUN_A RUN_B [RUN ...]``: two or more run folders side by side, every benchmark
they share (``plugin.report.compare.side_by_side``), each later run's difference from the first with its 95 %
interval and *undecided* where that interval holds 0; written as a page and printed as the same table."""

from __future__ import annotations

import os
from pathlib import Path

from plugin.report.build import TEMPLATES
from plugin.report.compare import METRICS, SideBySide, side_by_side
from plugin.report.data import load_run
from plugin.results.store import RESULTS_FILE


def compare_runs(folders: list[Path], page: Path) -> SideBySide:
    """Load the runs (``ValueError`` for a folder without results of this schema version), write ``page``."""
    runs = [load_run(folder) for folder in folders]
    compared = side_by_side(runs)
    links = [_relative(_page_of(run.folder), page.parent) for run in runs]
    page.write_text(
        TEMPLATES.get_template("compare.html.j2").render(compared=compared, metrics=METRICS, links=links),
        encoding="utf-8",
    )
    return compared


def table_lines(compared: SideBySide) -> list[str]:
    """The page's table as aligned text: benchmark, metric, each run's figure, each later run's difference and
    verdict."""
    header = ["benchmark", "metric", *compared.labels]
    for label in compared.difference_labels:
        header += [label, "verdict"]
    rows = [header]
    for benchmark, metric, figures, changes in compared.rows:
        row = [benchmark, METRICS[metric], *("-" if f is None else f.text() for f in figures)]
        for change in changes[1:]:
            row += ["-", "-"] if change is None else [change.difference_text(), change.verdict_text()]
        rows.append(row)
    widths = [max(len(row[column]) for row in rows) for column in range(len(header))]
    lines = ["  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip() for row in rows]
    if not compared.rows:
        lines = ["the runs share no benchmark at the same load: nothing to compare"]
    if compared.not_shared:
        lines.append(f"not in every run (or at another load): {', '.join(compared.not_shared)}")
    return lines


def _page_of(folder: Path) -> Path:
    """The run's page where it has one, else its results."""
    return folder / "index.html" if (folder / "index.html").is_file() else folder / RESULTS_FILE


def _relative(target: Path, start: Path) -> str:
    return Path(os.path.relpath(target.resolve(), start.resolve())).as_posix()

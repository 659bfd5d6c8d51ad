"""``python -m plugin.report reports/<run-id> [--baseline RUN]``: rebuild a run's report from its files alone.
``python -m plugin.report compare RUN_A RUN_B [RUN ...]``: compare runs, as a page and in the terminal."""

from __future__ import annotations

import argparse
from pathlib import Path

from plugin.report.build import build_report
from plugin.results.store import RESULTS_FILE


def main(argv: list[str] | None = None) -> None:
    if argv is None:
        import sys

        argv = sys.argv[1:]
    if argv[:1] == ["compare"]:
        compare_main(argv[1:])
        return
    parser = argparse.ArgumentParser(prog="python -m plugin.report", description=__doc__)
    parser.add_argument("run_folder", type=Path, help="a run folder holding results.json")
    parser.add_argument("--baseline", help="run id or folder to compare with (default: the previous similar run)")
    parser.add_argument("--reports-dir", type=Path, help="where the index of runs goes (default: the parent)")
    args = parser.parse_args(argv)
    _check_folder(parser, args.run_folder)
    try:
        page = build_report(args.run_folder, args.reports_dir, args.baseline)
    except ValueError as error:
        parser.error(str(error))
    print(page)


def compare_main(argv: list[str]) -> None:
    """Two or more run folders: the first is the reference each other run's differences are taken from."""
    from plugin.report.compare_runs import compare_runs, table_lines

    parser = argparse.ArgumentParser(
        prog="python -m plugin.report compare",
        description="Compare runs benchmark by benchmark: each figure with its 95 % interval, each later run's "
        "difference from the first, undecided where the interval holds 0.",
    )
    parser.add_argument("run_folders", type=Path, nargs="+", help="two or more run folders holding results.json")
    parser.add_argument(
        "--output", type=Path, help="the comparison page (default: compare-<first>-<second>.html beside the first)"
    )
    args = parser.parse_args(argv)
    folders: list[Path] = args.run_folders
    if len(folders) < 2:
        parser.error("give two run folders or more: the first is the reference the others are compared with")
    for folder in folders:
        _check_folder(parser, folder)
    page = args.output or folders[0].parent / f"compare-{folders[0].name}-{folders[1].name}.html"
    try:
        compared = compare_runs(folders, page)
    except ValueError as error:
        parser.error(str(error))
    for line in table_lines(compared):
        print(line)
    print(f"comparison page: {page}")


def _check_folder(parser: argparse.ArgumentParser, folder: Path) -> None:
    if not (folder / RESULTS_FILE).is_file():
        parser.error(f"{folder}: no {RESULTS_FILE} there; give a run folder such as reports/<run-id>")


if __name__ == "__main__":
    main()

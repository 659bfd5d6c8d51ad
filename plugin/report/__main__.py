"""``python -m plugin.report reports/<run-id> [--baseline RUN]``: rebuild a run's report from its files alone."""

from __future__ import annotations

import argparse
from pathlib import Path

from plugin.report.build import build_report


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m plugin.report", description=__doc__)
    parser.add_argument("run_folder", type=Path, help="a run folder holding results.json")
    parser.add_argument("--baseline", help="run id or folder to compare with (default: the previous similar run)")
    parser.add_argument("--reports-dir", type=Path, help="where the index of runs goes (default: the parent)")
    args = parser.parse_args(argv)
    if not (args.run_folder / "results.json").is_file():
        parser.error(f"{args.run_folder}: no results.json there; give a run folder such as reports/<run-id>")
    try:
        page = build_report(args.run_folder, args.reports_dir, args.baseline)
    except ValueError as error:
        parser.error(str(error))
    print(page)


if __name__ == "__main__":
    main()

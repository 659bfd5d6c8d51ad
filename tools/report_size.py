"""How big a run folder grows with its benchmarks: repeats a stored run's benchmarks (each with its request file)
until the run holds N, builds its report and prints the folder's size by part (the numbers docs/report.md states).

    python tools/report_size.py docs/validation/gpu-h200-graphs/run-seed2 50

Request files stored compressed (``.jsonl.xz``) are read through ``lzma``. Nothing is measured here: the
copies carry the stored run's own records and samples."""

from __future__ import annotations

import argparse
import json
import lzma
import shutil
import tempfile
from pathlib import Path

from plugin.report import build_report
from plugin.results.store import RESULTS_FILE

PARTS = {
    "plotly.js": lambda path: path.name == "plotly.min.js",
    "page (index.html)": lambda path: path.name == "index.html",
    "PNG charts": lambda path: path.suffix == ".png",
    "request records (JSONL)": lambda path: path.suffix == ".jsonl",
    "power samples (CSV)": lambda path: path.suffix == ".csv",
    "results.json": lambda path: path.name == RESULTS_FILE,
}


def repeated_run(source: Path, count: int, folder: Path) -> Path:
    """A run folder at ``folder`` holding ``count`` benchmarks: the source's, over and over, renamed."""
    results = json.loads((source / RESULTS_FILE).read_text())
    originals = results["benchmarks"]
    folder.mkdir(parents=True)
    for name in (results.get("power") or {}).get("samples_csv", {}).values():
        shutil.copy(source / name, folder / name)
    benchmarks = []
    for index in range(count):
        entry = json.loads(json.dumps(originals[index % len(originals)]))
        entry["name"], entry["id"] = f"{entry['name']}#{index}", f"{entry['id']}#{index}"
        requests_file = f"requests-{index:03d}.jsonl"
        (folder / requests_file).write_bytes(_records(source / entry["requests_file"]))
        entry["requests_file"] = requests_file
        benchmarks.append(entry)
    (folder / RESULTS_FILE).write_text(json.dumps({**results, "benchmarks": benchmarks}))
    return folder


def _records(path: Path) -> bytes:
    if path.is_file():
        return path.read_bytes()
    return lzma.decompress(path.with_name(f"{path.name}.xz").read_bytes())


def sizes(folder: Path) -> dict[str, int]:
    """Bytes per part of the folder, and the total."""
    files = [path for path in folder.rglob("*") if path.is_file()]
    found = {part: sum(path.stat().st_size for path in files if test(path)) for part, test in PARTS.items()}
    return {**found, "total": sum(path.stat().st_size for path in files)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("source", type=Path, help="a stored run folder (results.json, request files, power CSVs)")
    parser.add_argument("count", type=int, help="how many benchmarks the generated run holds")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as scratch:
        folder = repeated_run(args.source, args.count, Path(scratch) / "run")
        build_report(folder)
        print(f"{args.count} benchmarks repeated from {args.source}:")
        for part, size in sizes(folder).items():
            print(f"  {part:<26} {size / 1e6:8.2f} MB")


if __name__ == "__main__":
    main()

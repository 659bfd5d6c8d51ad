"""``python -m plugin.results.merge OUT RUN RUN...``: one run folder from several runs of the same load, so that
topologies measured in separate calls (a device call too short for all of them) are compared in one report.

The runs must share their ``prompt_seed`` (``--seed``): prompts and arrivals are seeded by test, workload and
setting, never by topology, so runs of one seed met the same requests at the same times. Their benchmarks must
not repeat one another. Each benchmark's request records are copied under a new, ordered name; each GPU's power
samples are joined into one CSV (the report reads them by time: the runs must come from one machine between
two boots, whose monotonic clock they share). The header is the first run's, with ``merged_from`` naming them all
and the energy card fitted again over every benchmark (each run's card saw only its own topologies).
Its ``settings`` too, the verdict's ``slo_attainment_pct`` included: runs that differ there still merge, and the
first run's threshold judges them all (it changes the verdict, not what was measured).
"""

from __future__ import annotations

import argparse
import json
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from plugin.analysis.energy_card import energy_card_json
from plugin.results.store import RESULTS_FILE, load_run, requests_file_name, write_json_atomic

STATUS_ORDER = ("complete", "interrupted", "failed", "running")
"""A merged run is as finished as its least finished part."""


def merge_runs(folders: Sequence[Path], out: Path) -> Path:
    """Write the merged run into ``out`` (created; it must not hold a run) and return its ``results.json``."""
    if len(folders) < 2:
        raise ValueError("give at least two run folders to merge")
    runs = [load_run(folder) for folder in folders]
    seeds = {run.header.get("prompt_seed") for run in runs}
    if len(seeds) != 1:
        raise ValueError(
            f"the runs met different loads (prompt seeds {sorted(map(str, seeds))}): measure them with the same --seed"
        )
    names = [benchmark.name for run in runs for benchmark in run.benchmarks]
    repeated = sorted({name for name in names if names.count(name) > 1})
    if repeated:
        raise ValueError(f"benchmarks measured in more than one run: {', '.join(repeated)}; merge runs of others")
    if (out / RESULTS_FILE).exists():
        raise ValueError(f"{out} holds a run already: give a new folder")
    out.mkdir(parents=True, exist_ok=True)
    entries: list[dict[str, Any]] = []
    for run in runs:
        data = json.loads((run.folder / RESULTS_FILE).read_text())
        for entry in data["benchmarks"]:
            name = requests_file_name(len(entries), entry["name"])
            shutil.copyfile(run.folder / entry["requests_file"], out / name)
            entries.append({**entry, "requests_file": name})
    header = _header([run.header for run in runs], [run.folder for run in runs], out)
    header["energy_card"] = energy_card_json([benchmark for run in runs for benchmark in run.benchmarks])
    path = out / RESULTS_FILE
    write_json_atomic(path, {**header, "benchmarks": entries})
    return path


def _header(headers: list[dict[str, Any]], folders: list[Path], out: Path) -> dict[str, Any]:
    first = headers[0]
    topologies = {name: entry for header in headers for name, entry in (header.get("topologies") or {}).items()}
    statuses = [str(header.get("status", "running")) for header in headers]
    merged = {
        **first,
        "run_id": out.name,
        "merged_from": [
            str(header.get("run_id", folder.name)) for header, folder in zip(headers, folders, strict=True)
        ],
        "status": max(statuses, key=lambda status: STATUS_ORDER.index(status) if status in STATUS_ORDER else 3),
        "finished_at": max(str(header.get("finished_at") or "") for header in headers) or None,
    }
    for key in ("server", "disaggregated"):
        merged[key] = next((header[key] for header in headers if header.get(key)), None)
    if topologies:
        merged["topologies"] = topologies
    if first.get("power"):
        merged["power"] = {**first["power"], "samples_csv": _join_samples(headers, folders, out)}
    return merged


def _join_samples(headers: list[dict[str, Any]], folders: list[Path], out: Path) -> dict[str, str]:
    """Each GPU's sample CSVs of every run, one after another under one header line."""
    joined: dict[str, str] = {}
    for header, folder in zip(headers, folders, strict=True):
        for gpu, name in ((header.get("power") or {}).get("samples_csv") or {}).items():
            source = folder / name
            if not source.is_file():
                continue
            target = out / f"power_gpu{gpu}.csv"
            lines = source.read_text().splitlines(keepends=True)
            with target.open("a") as stream:
                stream.writelines(lines if gpu not in joined else lines[1:])
            joined[gpu] = target.name
    return joined


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m plugin.results.merge", description=__doc__)
    parser.add_argument("out", type=Path, help="the new run folder")
    parser.add_argument("runs", type=Path, nargs="+", help="run folders holding results.json, of one --seed")
    args = parser.parse_args(argv)
    try:
        print(merge_runs(args.runs, args.out))
    except (ValueError, OSError) as error:
        parser.error(str(error))


if __name__ == "__main__":
    main()

"""``python -m plugin.results.merge OUT RUN RUN...``: one run folder from several runs of the same load, so that
topologies measured in separate calls (a device call too short for all of them) are compared in one report.

The runs must share their ``prompt_seed`` (``--seed``): prompts and arrivals are seeded by test, workload and
setting, never by topology, so runs of one seed met the same requests at the same times. Their benchmarks must
not repeat one another. Each benchmark's request records are copied under a new, ordered name; each GPU's power
samples are joined into one CSV (the report reads them by time: the runs must come from one machine between
two boots, whose monotonic clock they share). The header is the first run's, with ``merged_from`` naming them all
and the energy card fitted again over every benchmark (each run's card saw only its own topologies).

Runs are refused, before anything is written, when they differ in what makes their figures comparable
(``comparable_keys``): the model, the GPUs (names and UUIDs) and the GPU budget that per-GPU figures divide by,
the goodput targets, the datasets, the SLO attainment at which the verdict counts targets as met, and the prices and
carbon intensity the cost figures were derived from (``--energy-usd-per-kwh``, ``--pue``, ``--gpu-usd-per-hour``,
``--grid-gco2e-per-kwh``: a run priced differently, or not at all, would rank topologies by $ at two prices). The
message names each differing key with every run's value, and for the prices what to do.
"""

from __future__ import annotations

import argparse
import json
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from plugin.analysis.cost import COST_KEY
from plugin.analysis.energy_card import energy_card_json
from plugin.option_values import DEFAULT_SLO_ATTAINMENT_PCT
from plugin.results.store import RESULTS_FILE, StoredRun, load_run, requests_file_name, write_json_atomic

PRICES_HINT = (
    "(cost and carbon hold at one set of prices: measure every run with the same --energy-usd-per-kwh, --pue, "
    "--gpu-usd-per-hour and --grid-gco2e-per-kwh, or all without them)"
)
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
    differing = _differences(runs)
    if differing:
        raise ValueError(f"the runs do not compare, so they are not merged: {'; '.join(differing)}")
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


def comparable_keys(run: StoredRun) -> dict[str, Any]:
    """What must be equal in runs that are merged, each as JSON-like values that compare by ``==``."""
    header = run.header
    deployments = [header.get("server"), header.get("disaggregated"), *(header.get("topologies") or {}).values()]
    gpus = (header.get("environment") or {}).get("gpus") or []
    targets = {json.dumps(b.summary.get("goodput_targets_ms"), sort_keys=True) for b in run.benchmarks}
    prices = {
        json.dumps(b.summary[COST_KEY]["inputs"], sort_keys=True) for b in run.benchmarks if COST_KEY in b.summary
    }
    attainment_pct = (header.get("settings") or {}).get("slo_attainment_pct", DEFAULT_SLO_ATTAINMENT_PCT)
    return {
        "model": sorted({str(entry["model"]) for entry in deployments if entry and entry.get("model")}),
        "gpus": [{"name": gpu.get("name"), "uuid": gpu.get("uuid")} for gpu in gpus],
        "gpu_budget": header.get("gpu_budget"),
        "goodput_targets_ms": [json.loads(target) for target in sorted(targets)],
        "datasets": sorted({str(b.workload.dataset) for b in run.benchmarks if b.workload.dataset is not None}),
        "slo_attainment_pct": attainment_pct,  # runs from before --slo-attainment were judged at 90 %
        "prices": [json.loads(one) for one in sorted(prices)],
    }


def _differences(runs: list[StoredRun]) -> list[str]:
    """``key: run-a X, run-b Y`` for each comparable key whose value is not the same in every run."""
    keys = [comparable_keys(run) for run in runs]
    names = [str(run.header.get("run_id", run.folder.name)) for run in runs]
    return [
        f"{key}: "
        + ", ".join(f"{name} {json.dumps(values[key])}" for name, values in zip(names, keys, strict=True))
        + (f" {PRICES_HINT}" if key == "prices" else "")
        for key in keys[0]
        if any(values[key] != keys[0][key] for values in keys)
    ]


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

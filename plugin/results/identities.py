"""The identities between the figures of a stored run (docs/results-schema.md, "One accounting"): each figure of
an entry divides by what its windows measured, so its neighbours must agree with it. A figure that disagrees with
its neighbour is a defect even when each looks plausible alone.

Usage: ``python -m plugin.results.identities RUN [RUN ...]`` prints every identity that does not hold and exits 1
if any; an identity whose figures are absent (power not measured, no request completed) is not checked.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from plugin.results.store import RESULTS_FILE, load_run

REL_TOL = 1e-9
ROUND_SUMS = (
    "requests", "window_s", "window_completed", "window_prompt_tokens", "window_output_tokens", "window_good_completed",
)  # fmt: skip
"""What each round counts and the benchmark adds up."""
PER_GPU = {
    "request_throughput_per_gpu_rps": "request_throughput",
    "output_throughput_per_gpu": "output_throughput",
    "goodput_per_gpu_rps": "goodput_rps",
}


def broken(entry: dict[str, Any]) -> Iterator[str]:
    """What does not hold in one benchmark entry (``results.json``'s form), each in words."""
    summary, power, rounds = entry["summary"], entry["power"], entry["rounds"]
    energy_j = power.get("energy_j")
    if "window_completed" not in summary:
        return  # stored before the one accounting: re-analyse it first (python -m plugin.reanalyse)
    pairs = [
        ("output_tokens_per_j x energy_per_output_token_j", summary.get("output_tokens_per_j"),
         power.get("energy_per_output_token_j"), 1.0),
        ("energy_per_request_j x window_completed", power.get("energy_per_request_j"),
         summary["window_completed"], energy_j),
        ("energy_per_good_request_j x window_good_completed", summary.get("energy_per_good_request_j"),
         summary.get("window_good_completed"), energy_j),
        ("request_throughput x window_s", summary.get("request_throughput"), summary["window_s"],
         summary["window_completed"]),
    ]  # fmt: skip
    for name, a, b, expected in pairs:
        if a is not None and b is not None and expected is not None and not _close(a * b, expected):
            yield f"{name} = {a * b:.9g}, not {expected:.9g}"
    phases = power.get("phases")
    if phases is not None:
        for key, count in (("requests", "window_completed"), ("prompt_tokens", "window_prompt_tokens"),
                           ("output_tokens", "window_output_tokens")):  # fmt: skip
            if phases[key] != summary[count]:
                yield f"the phase split's {key} {phases[key]} is not the summary's {count} {summary[count]}"
    for window in power.get("windows", []):
        split = window.get("phases")
        if split is not None and window.get("energy_j") is not None:
            total_j = split["prefill_j"] + split["decode_j"] + split["idle_j"]
            if not _close(total_j, window["energy_j"]):
                counters_j = window["energy_j"]
                yield f"round {window['round']}: prefill + decode + idle = {total_j:.9g} J, not {counters_j:.9g} J"
    energies = [window.get("energy_j") for window in power.get("windows", [])]
    if energy_j is not None and None not in energies and not _close(math.fsum(energies), energy_j):
        yield f"the windows' energies add up to {math.fsum(energies):.9g} J, not {energy_j:.9g}"
    for key in ROUND_SUMS:
        if key in summary and all(key in one for one in rounds):
            added = math.fsum(one[key] for one in rounds)
            if not _close(added, summary[key]):
                yield f"the rounds' {key} add up to {added:.9g}, not {summary[key]:.9g}"
    budget = entry.get("gpu_budget", 1)
    for per_gpu, total in PER_GPU.items():
        value, whole = summary.get(per_gpu), summary.get(total)
        if value is not None and whole is not None and not _close(value * budget, whole):
            yield f"{per_gpu} x {budget} GPUs = {value * budget:.9g}, not {total} {whole:.9g}"


def entries(folder: Path) -> list[dict[str, Any]]:
    """The run's benchmark entries as stored (``load_run`` first refuses another schema version)."""
    load_run(folder)
    stored: list[dict[str, Any]] = json.loads((folder / RESULTS_FILE).read_text())["benchmarks"]
    return stored


def check(folder: Path) -> list[str]:
    """Every identity that does not hold in the run's entries, named by benchmark."""
    return [f"{entry['name']}: {problem}" for entry in entries(folder) for problem in broken(entry)]


def _close(a: float, b: float) -> bool:
    return math.isclose(a, b, rel_tol=REL_TOL, abs_tol=1e-12)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m plugin.results.identities", description=__doc__)
    parser.add_argument("runs", nargs="+", type=Path, help="run folders (each with a results.json)")
    args = parser.parse_args(argv)
    problems = [f"{folder}: {problem}" for folder in args.runs for problem in check(folder)]
    for line in problems:
        print(line)
    count = sum(len(entries(folder)) for folder in args.runs)
    print(f"{len(problems)} identities broken in {count} benchmark entries of {len(args.runs)} runs")
    sys.exit(1 if problems else 0)


if __name__ == "__main__":
    main()

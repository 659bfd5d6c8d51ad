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

from plugin.analysis.cost import COST_KEY, J_PER_KWH, PER_MILLION, S_PER_HOUR
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
    if COST_KEY in summary:
        yield from (f"cost: {problem}" for problem in cost_broken(summary, energy_j, budget))


def cost_broken(summary: dict[str, Any], energy_j: float | None, budget: int) -> Iterator[str]:
    """What does not hold between the cost and carbon figures (``plugin.analysis.cost``) and the energy, the
    windows' time and the work they divide by: each cost is its inputs' product, and its figures per unit of work
    times that work give it back (input and output tokens together pay the whole cost)."""
    cost, inputs = summary[COST_KEY], summary[COST_KEY]["inputs"]
    gpu_s = math.fsum(cost["gpu_s"].values())
    kwh = None if energy_j is None else energy_j * inputs["pue"] / J_PER_KWH
    products = [
        ("energy_kwh", cost["energy_kwh"], kwh),
        ("gpu_hours x 3600", cost["gpu_hours"] * S_PER_HOUR, gpu_s),
        ("the GPU time split", gpu_s, summary["window_s"] * budget),
        ("energy_usd", cost["energy_usd"], _times(kwh, inputs["energy_usd_per_kwh"])),
        ("g_co2e", cost["g_co2e"], _times(kwh, inputs["grid_g_co2e_per_kwh"])),
        ("gpu_time_usd", cost["gpu_time_usd"], _times(cost["gpu_hours"], inputs["gpu_usd_per_hour"])),
    ]
    priced = [cost[key] for key, price in (("energy_usd", "energy_usd_per_kwh"), ("gpu_time_usd", "gpu_usd_per_hour"))
              if inputs[price] is not None]  # fmt: skip
    if None not in priced:
        products.append(("energy_usd + gpu_time_usd (those priced)", cost["usd"], math.fsum(priced)))
    for name, value, expected in products:
        if value is not None and expected is not None and not _close(value, expected):
            yield f"{name} = {value:.9g}, not {expected:.9g}"
    prompt, output = summary["window_prompt_tokens"], summary["window_output_tokens"]
    good = summary.get("window_good_completed")
    for part in ("energy_usd", "gpu_time_usd", "usd", "g_co2e"):
        total, prefix = cost[part], part.removesuffix("usd")
        per_in, per_out = (
            cost.get(f"{prefix}usd_per_million_input_tokens"),
            cost.get(f"{prefix}usd_per_million_output_tokens"),
        )
        if part != "g_co2e" and None not in (total, per_in, per_out):
            paid = (per_in * prompt + per_out * output) / PER_MILLION
            if not _close(paid, total):
                yield f"{prefix}usd_per_million_input_tokens and _output_tokens pay {paid:.9g}, not {part} {total:.9g}"
        per_good = cost.get(f"{part}_per_good_request")
        if None not in (total, per_good, good) and not _close(per_good * good, total):
            yield f"{part}_per_good_request x window_good_completed = {per_good * good:.9g}, not {total:.9g}"
    per_million_out = cost["g_co2e_per_million_output_tokens"]
    if None not in (cost["g_co2e"], per_million_out) and not _close(
        per_million_out * output / PER_MILLION, cost["g_co2e"]
    ):
        yield f"g_co2e_per_million_output_tokens x window_output_tokens / 1e6 is not g_co2e {cost['g_co2e']:.9g}"


def _times(a: float | None, b: float | None) -> float | None:
    return None if a is None or b is None else a * b


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

"""Two runs of the same benchmarks, compared as the energy issue's validation asks: for each benchmark the energy
figure of its phase in both runs with its stated uncertainty, whether the two differ by less than the sum of
their uncertainties, the shortest power window, and how far the phase split's sum is from the counter.

Usage: ``python tools/energy_repeatability.py RUN_A RUN_B [--out FILE.md]`` (run folders with results.json).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from plugin.analysis.phase_figures import energy_figures
from plugin.records.results import BenchmarkResult
from plugin.results.store import load_run


def phase_sum_gap_pct(benchmark: BenchmarkResult) -> float | None:
    """The largest |prefill + decode + idle - counter| / counter over the benchmark's windows, in %."""
    gaps = []
    for window in benchmark.power.windows:
        if window.phases is None or window.energy_j is None or window.phases.total_j is None:
            return None
        gaps.append(abs(window.phases.total_j - window.energy_j) / window.energy_j * 100.0)
    return max(gaps) if gaps else None


def shortest_window_s(benchmark: BenchmarkResult) -> float | None:
    return min((window.duration_s for window in benchmark.power.windows), default=None)


def figure(benchmark: BenchmarkResult) -> tuple[str, float | None, float | None]:
    """The first energy figure of the benchmark's phase, with its ± (95 %) from the stored uncertainty."""
    name, value = next(iter(energy_figures(benchmark).items()))
    stored = {"j_per_prompt_token": "energy_per_prompt_token_j", "j_per_output_token": "energy_per_output_token_j",
              "j_per_request": "energy_per_request_j"}  # fmt: skip
    uncertainty = getattr(benchmark.power, "uncertainty", {}) or {}
    return name, value, uncertainty.get(stored.get(name, name))


def table(run_a: Path, run_b: Path) -> tuple[str, int, int]:
    """The markdown table, and how many benchmarks agree within their uncertainties out of those compared."""
    a, b = load_run(run_a), load_run(run_b)
    by_id = {benchmark.id: benchmark for benchmark in b.benchmarks}
    lines = [
        f"| benchmark | figure | run A ({run_a.name}) | run B ({run_b.name}) | difference | within ± sum | "
        "shortest window (s) | phase sum vs counter |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    agree = compared = 0
    for first in a.benchmarks:
        second = by_id.get(first.id)
        if second is None:
            continue
        name, value_a, pm_a = figure(first)
        _, value_b, pm_b = figure(second)
        within = "-"
        if None not in (value_a, value_b, pm_a, pm_b):
            assert value_a is not None and value_b is not None and pm_a is not None and pm_b is not None
            compared += 1
            ok = abs(value_a - value_b) < pm_a + pm_b
            agree += ok
            within = "yes" if ok else "**no**"
        difference = "-" if value_a is None or value_b is None else f"{value_b - value_a:+.4g}"
        windows = [w for w in (shortest_window_s(first), shortest_window_s(second)) if w is not None]
        gaps = [g for g in (phase_sum_gap_pct(first), phase_sum_gap_pct(second)) if g is not None]
        window_text = f"{min(windows):.2f}" if windows else "-"
        gap_text = f"{max(gaps):.2g} %" if gaps else "-"
        lines.append(
            f"| {first.name} | {name} | {_pm(value_a, pm_a)} | {_pm(value_b, pm_b)} | {difference} | {within} | "
            f"{window_text} | {gap_text} |"
        )
    return "\n".join(lines), agree, compared


def _pm(value: float | None, pm: float | None) -> str:
    if value is None:
        return "not measured"
    return f"{value:.4g}" if pm is None else f"{value:.4g} ± {pm:.2g}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("run_a", type=Path)
    parser.add_argument("run_b", type=Path)
    parser.add_argument("--out", type=Path, help="write the table here as well")
    args = parser.parse_args(argv)
    text, agree, compared = table(args.run_a, args.run_b)
    summary = f"{agree} of {compared} benchmarks agree within the sum of their stated uncertainties."
    print(text, summary, sep="\n\n")
    if args.out:
        args.out.write_text(f"{text}\n\n{summary}\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())

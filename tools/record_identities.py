"""The one accounting's identities, checked in a stored results.json (docs/results-schema.md, "One accounting"):
what a published record claims to hold, checked on the file itself rather than on a fresh run
(``tests/test_identities.py`` checks fresh ones).

Per serving or phase entry, each where its figures are defined:
- ``summary.output_tokens_per_j`` x ``power.energy_per_output_token_j`` = 1;
- ``summary.energy_per_request_j`` x ``window_completed`` = ``energy_j``, and the same for good requests;
- the phase split's prefill + decode + idle = ``energy_j`` (the counters), and its counts = the ``window_*`` counts;
- the rounds' ``requests``, ``window_*`` counts, ``window_s`` and ``energy_j`` sum to the benchmark's.

Usage: ``python tools/record_identities.py RUN [RUN ...]``; prints one line per check and exits 1 if any fails.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from plugin.results.store import RESULTS_FILE

REL_TOL = 1e-9
ROUND_SUMS = ("requests", "window_completed", "window_prompt_tokens", "window_output_tokens", "window_s", "energy_j")


def checks(entry: dict[str, Any]) -> Iterator[tuple[str, float, float]]:
    """``(identity, left side, right side)`` for every identity whose figures the entry defines."""
    summary, power = entry["summary"], entry.get("power") or {}
    energy_j = power.get("energy_j")
    if energy_j is None:
        return
    if summary.get("output_tokens_per_j") is not None and power.get("energy_per_output_token_j") is not None:
        yield "output_tokens_per_j x energy_per_output_token_j = 1", (
            summary["output_tokens_per_j"] * power["energy_per_output_token_j"]), 1.0  # fmt: skip
    for figure, count in (("energy_per_request_j", "window_completed"),
                          ("energy_per_good_request_j", "window_good_completed")):  # fmt: skip
        if summary.get(figure) is not None and summary.get(count) is not None:
            yield f"{figure} x {count} = energy_j", summary[figure] * summary[count], energy_j
    phases = power.get("phases") or {}
    if phases.get("prefill_j") is not None:
        yield "prefill_j + decode_j + idle_j = energy_j", phases["prefill_j"] + phases["decode_j"] + phases["idle_j"], (
            energy_j)  # fmt: skip
    for count, window_count in (("requests", "window_completed"), ("prompt_tokens", "window_prompt_tokens"),
                                ("output_tokens", "window_output_tokens")):  # fmt: skip
        if phases.get(count) is not None and summary.get(window_count) is not None:
            yield f"phases.{count} = {window_count}", phases[count], summary[window_count]
    rounds = entry.get("rounds") or []
    for key in ROUND_SUMS:
        values = [one_round.get(key) for one_round in rounds]
        total = energy_j if key == "energy_j" else summary.get(key)
        if rounds and total is not None and None not in values:
            yield f"rounds' {key} sum to the benchmark's", math.fsum(values), total


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("runs", nargs="+", type=Path, help="run folders holding results.json")
    args = parser.parse_args(argv)
    failed = 0
    for folder in args.runs:
        for entry in json.loads((folder / RESULTS_FILE).read_text())["benchmarks"]:
            for name, left, right in checks(entry):
                holds = math.isclose(left, right, rel_tol=REL_TOL)
                failed += not holds
                print(
                    f"{'ok  ' if holds else 'FAIL'} {folder.name} {entry['name']}: {name} ({left:.10g} vs {right:.10g})"
                )
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())

"""A run against a baseline run: every headline metric's change in %, flagged only when it is larger than the
noise the two runs show themselves.

Noise of a metric in one run: with several rounds, the spread of its per-round values ((max - min) / mean); with
one round, for the per-request latencies, twice the standard error of the median over the requests
(1.25 sigma / sqrt(n), relative to the median). A change is flagged when it exceeds the larger of the two runs'
noise; where neither run gives a noise figure (one round, a throughput or an energy), it is not flagged and the
page says the noise is unknown (more ``--rounds`` fix that).
"""

from __future__ import annotations

import math
import statistics
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from plugin.report.data import HEADLINE, Run, load_run

# The standard error of the median says nothing of a p99: that one needs rounds to get a noise figure.
PER_REQUEST = {"median_ttft_ms": "ttft", "median_e2el_ms": "e2e", "median_tpot_ms": "tpot"}


@dataclass(frozen=True)
class Change:
    benchmark: str
    metric: str
    baseline: float
    current: float
    change_pct: float
    noise_pct: float | None

    @property
    def flagged(self) -> bool:
        return self.noise_pct is not None and abs(self.change_pct) > self.noise_pct


def choose_baseline(run: Run, reports_dir: Path, asked: str | None) -> Run | None:
    """``asked`` (a run id in ``reports_dir`` or a folder), else the newest earlier run with the same model and
    devices that has results."""
    if asked:
        folder = Path(asked) if Path(asked).is_dir() else reports_dir / asked
        if not (folder / "results.json").is_file():
            raise ValueError(f"--report-baseline {asked}: no results.json in {folder}")
        return load_run(folder)
    earlier = sorted(
        (path for path in reports_dir.iterdir() if path.is_dir() and path.name < run.folder.name),
        reverse=True,
    ) if reports_dir.is_dir() else []  # fmt: skip
    for folder in earlier:
        try:
            candidate = load_run(folder)
        except (OSError, ValueError):
            continue  # not a run folder, or an older schema
        if candidate.model == run.model and candidate.devices == run.devices and candidate.results.get("benchmarks"):
            return candidate
    return None


def compare(run: Run, baseline: Run) -> list[Change]:
    """Every headline metric of every benchmark (by id) that both runs have."""
    base_entries = {entry["id"]: entry for entry in baseline.results.get("benchmarks", [])}
    changes = []
    for entry in run.results.get("benchmarks", []):
        base = base_entries.get(entry["id"])
        if base is None:
            continue
        for metric in HEADLINE:
            now, then = entry["summary"].get(metric), base["summary"].get(metric)
            if now is None or then is None or then == 0:
                continue
            noises = [n for n in (noise_pct(entry, metric), noise_pct(base, metric)) if n is not None]
            changes.append(
                Change(entry["name"], metric, then, now, 100.0 * (now - then) / then, max(noises) if noises else None)
            )
    return changes


def noise_pct(entry: dict[str, Any], metric: str) -> float | None:
    """The metric's own spread in this benchmark, in % (see the module's docstring)."""
    rounds = [float(r[metric]) for r in entry.get("rounds", []) if r.get(metric) is not None]
    if len(rounds) >= 2 and statistics.fmean(rounds):
        return 100.0 * (max(rounds) - min(rounds)) / abs(statistics.fmean(rounds))
    kind = PER_REQUEST.get(metric)
    values = [v for v in (_per_request(request, kind) for request in entry.get("requests", [])) if v is not None]
    if kind is None or len(values) < 3:
        return None
    median = statistics.median(values)
    if median == 0:
        return None
    return 100.0 * 2 * 1.25 * statistics.stdev(values) / math.sqrt(len(values)) / abs(median)


def _per_request(request: dict[str, Any], kind: str | None) -> float | None:
    if request.get("error") is not None or request.get("first_token_s") is None:
        return None
    first, send, end = float(request["first_token_s"]), float(request["send_s"]), float(request["end_s"])
    if kind == "ttft":
        return first - send
    if kind == "e2e":
        return end - send
    tokens = len(request.get("token_times_s") or [])
    return (end - first) / (tokens - 1) if kind == "tpot" and tokens > 1 else None

"""What the run found, in sentences with their 95 % intervals, for the top of its page: the capacity search's answer
where one ran (``plugin.analysis.answer``, as ``results.json`` keeps its lines), else the topology verdicts where
several topologies served one dataset (``plugin.report.comparison``, ``plugin.analysis.verdict``), else each
benchmark's key figures; and what the prefix cache saved (``plugin.analysis.cache_savings``), or one line saying that
this run cannot tell."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from plugin.analysis.cache_savings import cache_savings, saving_line
from plugin.records.results import BenchmarkResult
from plugin.records.workload import SERVING
from plugin.report.compare import Figure, figures
from plugin.report.comparison import TopologyComparison
from plugin.report.data import Run
from plugin.report.formatting import number

KEY_FIGURES = {
    "prefill": ("median_ttft_ms", "j_per_prompt_token"),
    "decode": ("median_tpot_ms", "j_per_output_token"),
    "e2e": ("median_ttft_ms", "median_tpot_ms", "median_e2el_ms", "j_per_request"),
    SERVING: ("request_throughput", "p99_ttft_ms", "p99_tpot_ms", "slo_attainment_pct", "j_per_good_request",
              "j_per_request"),
}  # fmt: skip
"""The figures a benchmark's sentence names, by phase (a figure it lacks is left out)."""
WORDS = {
    "median_ttft_ms": ("TTFT median", "ms"),
    "median_tpot_ms": ("TPOT median", "ms"),
    "median_e2el_ms": ("E2E median", "ms"),
    "p99_ttft_ms": ("TTFT p99", "ms"),
    "p99_tpot_ms": ("TPOT p99", "ms"),
    "request_throughput": ("achieved", "req/s"),
    "slo_attainment_pct": ("SLO attainment", "%"),
    "j_per_prompt_token": ("energy", "J per prompt token"),
    "j_per_output_token": ("energy", "J per output token"),
    "j_per_request": ("energy", "J per request"),
    "j_per_good_request": ("energy", "J per good request"),
}
NO_CACHE_CONTROL = (
    "Prefix cache: this run has no benchmark with its control (--prefix-cache-control), so it cannot say what the "
    "cache saved."
)


@dataclass(frozen=True)
class Finding:
    """One block of the answer: a heading, a lead sentence and the lines under it."""

    heading: str
    lead: str
    lines: list[str]


@dataclass(frozen=True)
class AnswerSection:
    findings: list[Finding]
    cache: list[str]


def answer_section(run: Run, compared: Sequence[TopologyComparison]) -> AnswerSection:
    """The answer of the run's page (the module's docstring says which); ``compared``: its topology comparisons."""
    cache = [saving_line(saving) for saving in cache_savings(run.serving)] or [NO_CACHE_CONTROL]
    capacity = run.header.get("capacity") or []
    if capacity:
        findings = [Finding(f"The answer ({found['dataset']})", found["lines"][0], found["lines"][1:])
                    for found in capacity]  # fmt: skip
    elif compared:
        findings = [_topologies(comparison) for comparison in compared]
    else:
        lines = [line for benchmark in run.benchmarks if (line := key_figures(run, benchmark))]
        lead = "Key figures per benchmark (± the half-width of a 95 % interval, where one is known):"
        findings = [Finding("What this run measured", lead, lines)] if lines else []
    return AnswerSection(findings, [line.strip() for line in cache])


def _topologies(comparison: TopologyComparison) -> Finding:
    heading = f"Which topology ({comparison.dataset})"
    lead = (f"{', '.join(comparison.topologies)} on one GPU budget, judged on SLO attainment's 95 % interval against "
            f"the {comparison.attainment_pct:g} % target, then on energy per good request:")  # fmt: skip
    lines = list(comparison.verdicts)
    if comparison.why_no_verdict:
        lines.append(comparison.why_no_verdict[0].upper() + comparison.why_no_verdict[1:] + ".")
    return Finding(heading, lead, lines)


def key_figures(run: Run, benchmark: BenchmarkResult) -> str | None:
    """``name: TTFT median 35.8 ± 2.1 ms, energy 0.0123 ± 0.0004 J per prompt token``; ``None`` with no figure."""
    found = figures(run, benchmark)
    keys = [key for key in KEY_FIGURES.get(benchmark.phase, ()) if key in found]
    if "j_per_good_request" in keys and "j_per_request" in keys:
        keys.remove("j_per_request")
    parts = [_words(key, found[key]) for key in keys]
    if not parts:
        return None
    rate = benchmark.summary.get("offered_rate_rps") if benchmark.phase == SERVING else None
    at = "" if rate is None else f" at {number(rate)} req/s offered"
    return f"{benchmark.name}{at}: {', '.join(parts)}"


def _words(key: str, figure: Figure) -> str:
    name, unit = WORDS[key]
    return f"{name} {figure.text()} {unit}"

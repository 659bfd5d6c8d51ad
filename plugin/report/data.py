"""A run folder read into what the report shows: the typed results (``plugin.results.store.load_run``), one row
per benchmark with the figures that mean something for its phase, each benchmark's requests with the per-request
metrics of ``plugin.analysis.stats`` (read from its JSONL file), and each GPU's power samples (read from its CSV
only when a chart needs them)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from plugin.analysis.stats import e2e_s, tbt_gaps_s, tpot_s, ttft_s
from plugin.load.workload import workload_id
from plugin.results import store
from plugin.results.schema import BenchmarkResult

LATENCY = {
    "median_ttft_ms": "TTFT p50 (ms)",
    "p99_ttft_ms": "TTFT p99 (ms)",
    "median_tpot_ms": "TPOT p50 (ms)",
    "median_e2el_ms": "E2E p50 (ms)",
    "output_throughput": "output tok/s",
    "median_kv_handoff_ms": "KV hand-off p50 (ms)",
}
ENERGY = {
    "j_per_prompt_token": "J / prompt token",
    "j_per_output_token": "J / output token",
    "j_per_request": "J / request",
    "prefill_j_per_prompt_token": "prefill share: J / prompt token",
    "decode_j_per_output_token": "decode share: J / output token",
}
"""Energy figures; a benchmark has only those of its phase (``energy_figures``)."""
HEADLINE = {**LATENCY, **ENERGY}
REQUEST_COLUMNS = ["round", "send_s", "first_token_s", "end_s", "ttft_ms", "tpot_ms", "e2e_ms", "tbt_ms", "ok"]


def energy_figures(benchmark: BenchmarkResult) -> dict[str, float | None]:
    """The energy figures that mean something for the benchmark's phase: the window's energy over the prompt
    tokens of a prefill benchmark, over the output tokens of a decode one, per request end to end, plus, where
    both phases ran (e2e), the phase split's prefill J per prompt token and decode J per output token. The window
    energy over the other phase's tokens is not a figure of that phase, so it is left out."""
    power = benchmark.power
    if benchmark.phase == "prefill":
        return {"j_per_prompt_token": power.energy_per_prompt_token_j}
    if benchmark.phase == "decode":
        return {"j_per_output_token": power.energy_per_output_token_j}
    figures = {"j_per_request": power.energy_per_request_j}
    phases = power.phases
    if benchmark.phase == "e2e" and phases is not None and phases.prefill_s > 0 and phases.decode_s > 0:
        figures["prefill_j_per_prompt_token"] = phases.j_per_prompt_token
        figures["decode_j_per_output_token"] = phases.j_per_output_token
    return figures


@dataclass(frozen=True)
class Run:
    """A stored run and what the report derives from it."""

    stored: store.StoredRun

    @property
    def folder(self) -> Path:
        return self.stored.folder

    @property
    def header(self) -> dict[str, Any]:
        return self.stored.header

    @property
    def benchmarks(self) -> tuple[BenchmarkResult, ...]:
        return self.stored.benchmarks

    @property
    def run_id(self) -> str:
        return str(self.header.get("run_id", self.folder.name))

    @property
    def status(self) -> str:
        return str(self.header.get("status", "unknown"))

    @property
    def model(self) -> str:
        for source in (self.header.get("server"), self.header.get("disaggregated")):
            if source and source.get("model"):
                return str(source["model"])
        return "unknown"

    @property
    def devices(self) -> str:
        environment = self.header.get("environment") or {}
        gpus = environment.get("gpus") or []
        if gpus:
            return ", ".join(f"{gpu['index']}: {gpu['name']}" for gpu in gpus)
        return f"CPU: {environment.get('cpu') or 'unknown'} ({environment.get('cpu_count') or '?'} cores)"

    @property
    def power(self) -> dict[str, Any]:
        """The run's sampler (``plugin.analysis.power_entry.session_power``)."""
        return dict(self.header.get("power") or {})

    @property
    def power_measured(self) -> bool:
        return any(benchmark.power.measured for benchmark in self.benchmarks) or (
            not self.power.get("unmeasured_reason") and bool(self.power.get("gpus"))
        )

    @property
    def power_reason(self) -> str:
        """Why there is no power data, as a sentence that starts with "power not measured"."""
        reasons = [b.power.unmeasured_reason for b in self.benchmarks if b.power.unmeasured_reason]
        reason = str(self.power.get("unmeasured_reason") or (reasons[0] if reasons else ""))
        if reason.startswith("power not measured"):
            return reason
        return f"power not measured: {reason or 'no power sampler ran in this run'}"

    def rows(self) -> list[dict[str, Any]]:
        """One row per benchmark: what ran, the latency headline and its phase's energy figures only."""
        return [
            {
                "id": benchmark.id,
                "name": benchmark.name,
                "workload_id": f"{benchmark.phase} {workload_id(benchmark.workload)}",
                "architecture": benchmark.architecture,
                "phase": benchmark.phase,
                "input_len": benchmark.workload.input_len,
                "output_len": benchmark.workload.output_len,
                "concurrency": benchmark.workload.concurrency,
                "completed": benchmark.summary.get("completed"),
                "requests": benchmark.summary.get("requests"),
                **{key: benchmark.summary.get(key) for key in LATENCY},
                **energy_figures(benchmark),
            }
            for benchmark in self.benchmarks
        ]

    def table(self) -> pd.DataFrame:
        """``rows`` as a table; a figure a benchmark's phase does not have is NaN."""
        columns = ["id", "name", "workload_id", "architecture", "phase", "input_len", "output_len", "concurrency"]
        return pd.DataFrame(self.rows(), columns=[*columns, "completed", "requests", *HEADLINE])

    def requests(self, benchmark: BenchmarkResult) -> pd.DataFrame:
        """One benchmark's measured requests with TTFT, TPOT, E2E and the gaps between tokens (TBT) in ms, as
        ``plugin.analysis.stats`` defines them (missing where a request failed or had no token)."""
        rows = []
        for stored in self.stored.requests(benchmark):
            record = stored.record
            rows.append(
                {
                    "round": stored.round,
                    "send_s": record.send_s,
                    "first_token_s": record.first_token_s,
                    "end_s": record.end_s,
                    "ttft_ms": _ms(ttft_s(record)),
                    "tpot_ms": _ms(tpot_s(record)),
                    "e2e_ms": _ms(e2e_s(record)),
                    "tbt_ms": [gap * 1000.0 for gap in tbt_gaps_s(record)] if record.ok else [],
                    "ok": record.ok,
                }
            )
        return pd.DataFrame(rows, columns=REQUEST_COLUMNS)

    def samples(self, gpu: str, start_s: float, end_s: float) -> pd.DataFrame | None:
        """One GPU's power samples inside a window, or ``None`` when the run kept none."""
        name = (self.power.get("samples_csv") or {}).get(gpu)
        path = self.folder / name if name else None
        if path is None or not path.is_file():
            return None
        samples = pd.read_csv(path)
        return samples[(samples["t_s"] >= start_s) & (samples["t_s"] <= end_s)]


def _ms(value_s: float | None) -> float | None:
    return None if value_s is None else value_s * 1000.0


def load_run(folder: Path) -> Run:
    """``ValueError`` for a run of another schema version (``plugin.results.store.load_run``)."""
    return Run(store.load_run(folder))

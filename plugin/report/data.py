"""A run folder read into tables: one row per benchmark (the headline metrics), one per request, and each GPU's
power samples (read from its CSV only when a chart needs them)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from plugin.results import store as results_file

HEADLINE = {
    "median_ttft_ms": "TTFT p50 (ms)",
    "p99_ttft_ms": "TTFT p99 (ms)",
    "median_tpot_ms": "TPOT p50 (ms)",
    "median_e2el_ms": "E2E p50 (ms)",
    "output_throughput": "output tok/s",
    "median_kv_handoff_ms": "KV hand-off p50 (ms)",
    "energy_per_prompt_token_j": "J / prompt token",
    "energy_per_output_token_j": "J / output token",
}


@dataclass(frozen=True)
class Run:
    folder: Path
    results: dict[str, Any]

    @property
    def run_id(self) -> str:
        return str(self.results.get("run_id", self.folder.name))

    @property
    def status(self) -> str:
        return str(self.results.get("status", "unknown"))

    @property
    def model(self) -> str:
        for source in (self.results.get("server"), self.results.get("disaggregated")):
            if source and source.get("model"):
                return str(source["model"])
        return "unknown"

    @property
    def devices(self) -> str:
        gpus = self.results.get("environment", {}).get("gpus") or []
        if gpus:
            return ", ".join(f"{gpu['index']}: {gpu['name']}" for gpu in gpus)
        environment = self.results.get("environment", {})
        return f"CPU: {environment.get('cpu') or 'unknown'} ({environment.get('cpu_count') or '?'} cores)"

    @property
    def power_measured(self) -> bool:
        return not (self.results.get("power") or {}).get("unmeasured_reason") and bool(
            (self.results.get("power") or {}).get("gpus")
        )

    @property
    def power_reason(self) -> str:
        """Why there is no power data, as a sentence that starts with "power not measured"."""
        reason = str((self.results.get("power") or {}).get("unmeasured_reason") or "")
        if reason.startswith("power not measured"):
            return reason
        return f"power not measured: {reason or 'no power sampler ran in this run'}"

    def benchmarks(self) -> pd.DataFrame:
        """One row per benchmark: id, name, architecture, phase, workload sizes and the headline metrics."""
        rows = []
        for entry in self.results.get("benchmarks", []):
            workload = entry.get("workload", {})
            summary = entry.get("summary", {})
            rows.append(
                {
                    "id": entry["id"],
                    "name": entry["name"],
                    "workload_id": workload_id(workload),
                    "architecture": entry.get("architecture", "traditional"),
                    "phase": entry.get("phase"),
                    "input_len": workload.get("input_len"),
                    "output_len": workload.get("output_len"),
                    "concurrency": workload.get("concurrency"),
                    "completed": summary.get("completed"),
                    "requests": summary.get("requests"),
                    **{key: summary.get(key) for key in HEADLINE},
                }
            )
        columns = ["id", "name", "workload_id", "architecture", "phase", "input_len", "output_len", "concurrency"]
        return pd.DataFrame(rows, columns=[*columns, "completed", "requests", *HEADLINE])

    def requests(self, entry: dict[str, Any]) -> pd.DataFrame:
        """One benchmark's measured requests with TTFT, E2E and per-token gaps (TBT) in ms."""
        rows = []
        for request in entry.get("requests", []):
            first = request.get("first_token_s")
            times = request.get("token_times_s") or []
            rows.append(
                {
                    "send_s": request["send_s"],
                    "first_token_s": first,
                    "end_s": request["end_s"],
                    "ttft_ms": None if first is None else (first - request["send_s"]) * 1000,
                    "e2e_ms": (request["end_s"] - request["send_s"]) * 1000,
                    "tbt_ms": [(b - a) * 1000 for a, b in zip(times, times[1:], strict=False)],
                    "ok": request.get("error") is None,
                }
            )
        return pd.DataFrame(rows, columns=["send_s", "first_token_s", "end_s", "ttft_ms", "e2e_ms", "tbt_ms", "ok"])

    def samples(self, gpu: str, start_s: float, end_s: float) -> pd.DataFrame | None:
        """One GPU's power samples inside a window, or ``None`` when the run kept none."""
        name = ((self.results.get("power") or {}).get("samples_csv") or {}).get(gpu)
        path = self.folder / name if name else None
        if path is None or not path.is_file():
            return None
        samples = pd.read_csv(path)
        return samples[(samples["t_s"] >= start_s) & (samples["t_s"] <= end_s)]


def workload_id(workload: dict[str, Any]) -> str:
    """The same workload in both architectures, e.g. ``prefill in512-out1-c4``."""
    return (
        f"{workload.get('phase')} in{workload.get('input_len')}-out{workload.get('output_len')}"
        f"-c{workload.get('concurrency')}"
    )


def load_run(folder: Path) -> Run:
    return Run(folder, results_file.load(folder / "results.json"))

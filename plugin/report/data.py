"""A run folder read into what the report shows: the typed results (``plugin.results.store.load_run``), one row
per benchmark with the figures that mean something for its phase (each with its ± 95 % half-width and a flag where
it rests on too few sensor updates), the serving benchmarks' rows and curve points, the energy cards, the server's
phase times beside the client's, each GPU's attribution and clock residency, each benchmark's requests with the
per-request metrics of ``plugin.analysis.stats`` (read from its JSONL file), and each GPU's power samples (read from
its CSV only when a chart needs them). A field that an older run lacks gives an empty section, never an error."""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeGuard

import pandas as pd

from plugin.analysis.phase_figures import energy_figures
from plugin.analysis.stats import e2e_s, tbt_gaps_s, tpot_s, ttft_s
from plugin.analysis.uncertainty import FIGURE_KEYS, MIN_SENSOR_UPDATES
from plugin.option_values import DEFAULT_SLO_ATTAINMENT_PCT
from plugin.records.results import BenchmarkResult, GpuEnergy, PhaseSplit, PowerWindow
from plugin.records.workload import SERVING, workload_id
from plugin.results import store

LATENCY = {
    "median_ttft_ms": "TTFT p50 (ms)",
    "p99_ttft_ms": "TTFT p99 (ms)",
    "median_tpot_ms": "TPOT p50 (ms)",
    "median_e2el_ms": "E2E p50 (ms)",
    "output_throughput": "output tok/s",
    "median_kv_handoff_ms": "KV hand-off incl. decode queue p50 (ms)",
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
ERROR_SUFFIX = "_pm"
"""``j_per_prompt_token_pm``: the table's column of a figure's ± 95 % half-width (NaN: unknown)."""
SERVER_PHASES = ("queue", "prefill", "decode", "inference", "e2e", "ttft")
"""The server's phase histograms (``summary["server_phases"]``), in the order a request meets them."""
CLIENT_TIMES = {"mean_ttft_ms": "client TTFT", "mean_tpot_ms": "client TPOT", "mean_e2el_ms": "client E2E"}
RESIDENCY_TOP = 3
"""Clocks and reasons shown per phase; the rest are summed as "other"."""
SERVING_LATENCY = {
    "request_throughput": "achieved req/s",
    "median_ttft_ms": "TTFT p50 (ms)",
    "p99_ttft_ms": "TTFT p99 (ms)",
    "median_tpot_ms": "TPOT p50 (ms)",
    "p99_tpot_ms": "TPOT p99 (ms)",
    "output_throughput": "output tok/s",
}
GOODPUT = {
    "slo_attainment_pct": "SLO attainment (%)",
    "slo_attainment_low_pct": "SLO attainment, 95 % low",
    "slo_attainment_high_pct": "SLO attainment, 95 % high",
    "good_requests": "good requests",
    "goodput_rps": "goodput (good req/s)",
}
SERVING_ENERGY = {
    "j_per_request": "J / request",
    "j_per_good_request": "J / good request",
    "prefill_j_per_prompt_token": "prefill share: J / prompt token",
    "decode_j_per_output_token": "decode share: J / output token",
}
DATASET = {
    "requests_drawn": "pairs drawn",
    "skipped_by_length": "skipped by length",
    "too_long_for_model": "too long for the model",
    "mean_prompt_tokens": "mean prompt tokens",
    "mean_output_tokens": "mean output tokens",
}
"""The dataset's filter counts and mean lengths, as the serving plan records them (``plugin.load.plan``)."""
PREFIX_REUSE = {
    "prefix_hit_rate": "prefix hit rate (server's usage)",
    "metrics_hit_rate": "prefix hit rate (/metrics)",
    "prefill_j_per_prompt_token_cache_hit": "prefill J / prompt token, cache hit",
    "prefill_j_per_prompt_token_no_cache_hit": "prefill J / prompt token, no hit",
    "turns_text": "per turn: hit rate, mean TTFT, J / request",
    "dropped_text": "dropped from the dataset",
}
"""Prefix reuse (``plugin.analysis.prefix_reuse``) and what a trace or sessions file dropped."""
SERVING_TABLES = (
    {
        "dataset": "dataset",
        "arrivals": "arrivals",
        "offered_rate_rps": "offered req/s",
        "arrival_rate_rps": "arrived req/s",
        **SERVING_LATENCY,
        "goodput_targets": "goodput targets",
        **GOODPUT,
    },
    {"dataset": "dataset", "arrivals": "arrivals", **SERVING_ENERGY, "dataset_source": "dataset source", **DATASET},
    {"dataset": "dataset", "arrivals": "arrivals", **PREFIX_REUSE},
)
"""The serving tables' columns after the benchmark's name, architecture and completed requests: load, latency
and goodput; then energy and the dataset's filter counts (one table would not fit a page's width); then prefix
reuse."""
REQUEST_COLUMNS = ["round", "send_s", "first_token_s", "end_s", "ttft_ms", "tpot_ms", "e2e_ms", "tbt_ms", "ok"]


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
    def failures(self) -> list[dict[str, str]]:
        """The benchmarks that failed, each with its error (runs made before ``failures`` have none)."""
        return list(self.header.get("failures", []))

    @property
    def model(self) -> str:
        named = (self.header.get("topologies") or {}).values()
        for source in (self.header.get("server"), self.header.get("disaggregated"), *named):
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
    def attainment_pct(self) -> float:
        """The SLO attainment that meets the targets in the run's verdicts (``--slo-attainment``, recorded in its
        settings); runs from before the option were judged at 90 %."""
        value = (self.header.get("settings") or {}).get("slo_attainment_pct")
        return float(value) if _number(value) else DEFAULT_SLO_ATTAINMENT_PCT

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

    @property
    def serving(self) -> tuple[BenchmarkResult, ...]:
        return tuple(benchmark for benchmark in self.benchmarks if benchmark.phase == SERVING)

    @property
    def datasets(self) -> list[str]:
        """The serving benchmarks' datasets, in the order they ran."""
        return list(dict.fromkeys(str(benchmark.workload.dataset) for benchmark in self.serving))

    def rows(self) -> list[dict[str, Any]]:
        """One row per benchmark: what ran, the latency headline and its phase's energy figures only. A serving
        workload's lengths come from its dataset, so it has no ``input_len``/``output_len`` but its ``dataset``."""
        return [
            {
                "id": benchmark.id,
                "name": benchmark.name,
                "workload_id": f"{benchmark.phase} {workload_id(benchmark.workload)}",
                "architecture": benchmark.architecture,
                "phase": benchmark.phase,
                "dataset": benchmark.workload.dataset,
                "input_len": None if benchmark.phase == SERVING else benchmark.workload.input_len,
                "output_len": None if benchmark.phase == SERVING else benchmark.workload.output_len,
                "concurrency": benchmark.workload.concurrency,
                "completed": benchmark.summary.get("completed"),
                "requests": benchmark.summary.get("requests"),
                **{key: benchmark.summary.get(key) for key in LATENCY},
                **energy_figures(benchmark),
                **{f"{key}{ERROR_SUFFIX}": error for key, error in energy_errors(benchmark).items()},
                "errors": energy_errors(benchmark),
                "short_window": short_window(benchmark),
            }
            for benchmark in self.benchmarks
        ]

    def table(self) -> pd.DataFrame:
        """``rows`` as a table; a figure a benchmark's phase does not have is NaN."""
        columns = ["id", "name", "workload_id", "architecture", "phase", "dataset", "input_len", "output_len"]
        errors = [f"{key}{ERROR_SUFFIX}" for key in ENERGY]
        return pd.DataFrame(
            self.rows(), columns=[*columns, "concurrency", "completed", "requests", *HEADLINE, *errors, "short_window"]
        )

    @property
    def energy_cards(self) -> list[dict[str, Any]] | None:
        """The run's energy cards (``plugin.analysis.energy_card``); ``None`` in a run made before them. A card
        made before cards were per topology is its architecture's."""
        cards = self.header.get("energy_card")
        return None if cards is None else [{"topology": card["architecture"], **card} for card in cards]

    def server_phase_rows(self) -> list[dict[str, Any]]:
        """Per benchmark whose summary has the server's phase times: the client's mean TTFT, TPOT and E2E beside
        the server's mean queue, prefill, decode, inference, E2E and TTFT (ms; ``None``: no value)."""
        rows = []
        for benchmark in self.benchmarks:
            phases = benchmark.summary.get("server_phases")
            if not isinstance(phases, dict):
                continue
            server = {name: _mean_ms(phases.get(name)) for name in SERVER_PHASES}
            client = {key: benchmark.summary.get(key) for key in CLIENT_TIMES}
            client_ttft, server_ttft = client["mean_ttft_ms"], server["ttft"]
            rows.append(
                {
                    "name": benchmark.name,
                    "architecture": benchmark.architecture,
                    **client,
                    **{f"server_{name}": value for name, value in server.items()},
                    "ttft_gap_ms": None if client_ttft is None or server_ttft is None else client_ttft - server_ttft,
                    "note": phases.get("note"),
                }
            )
        return rows

    def gpu_rows(self) -> list[dict[str, Any]]:
        """Per benchmark with power and GPU: its role, how its energy was attributed (by role or by the time rule),
        the shares of its energy that are the idle baseline and the KV hand-off (every round together), and its
        clock and throttle residency per phase. A figure an older run lacks is ``None``; residency empty."""
        rows = []
        for benchmark in self.benchmarks:
            if not benchmark.power.measured:
                continue
            per_gpu: dict[str, list[tuple[GpuEnergy, PowerWindow]]] = {}
            for window in benchmark.power.windows:
                for gpu, energy in window.gpus.items():
                    per_gpu.setdefault(gpu, []).append((energy, window))
            for gpu, pairs in per_gpu.items():
                energies = [energy.window.energy_j for energy, _ in pairs]
                total_j = None if None in energies else math.fsum(e for e in energies if e is not None)
                rows.append(
                    {
                        "name": benchmark.name,
                        "gpu": gpu,
                        "role": pairs[0][0].role,
                        "method": ", ".join(dict.fromkeys(e.method for e, _ in pairs)),
                        "energy_j": total_j,
                        "idle_baseline_pct": _share_pct([e.idle_baseline_j for e, _ in pairs], total_j),
                        "kv_handoff_pct": _share_pct([e.kv_handoff_j for e, _ in pairs], total_j),
                        "kv_handoff_s": _sum([e.kv_handoff_s for e, _ in pairs]),
                        "residency": residency_rows(pairs),
                    }
                )
        return rows

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


def energy_errors(benchmark: BenchmarkResult) -> dict[str, float]:
    """The ± 95 % half-width of each of its energy figures (``energy_figures``' keys), where known."""
    uncertainty = benchmark.power.uncertainty
    errors = {key: uncertainty.get(FIGURE_KEYS.get(key, key)) for key in energy_figures(benchmark)}
    return {key: float(error) for key, error in errors.items() if _number(error)}


def short_window(benchmark: BenchmarkResult) -> str | None:
    """Why its energy figures must not be shown bare: ``short window: 6 sensor updates``; ``None`` when they rest
    on enough sensor updates (or the run predates the check)."""
    power = benchmark.power
    updates = power.sensor_updates_min
    short = power.short_window or (_number(updates) and updates < MIN_SENSOR_UPDATES)
    if not short or not power.measured:
        return None
    return f"short window: {updates:.3g} sensor updates" if _number(updates) else "short window"


def residency_rows(pairs: list[tuple[GpuEnergy, PowerWindow]]) -> list[dict[str, str]]:
    """One row per phase: the SM clocks and throttle reasons with their share of the phase's time, every round
    together (each round weighted by its time in that phase), the largest first."""
    shares: dict[str, dict[str, dict[str, float]]] = {}
    weights: dict[str, float] = {}
    for energy, window in pairs:
        for phase, kinds in energy.residency.items():
            weight = _phase_time_s(energy.phases or window.phases, phase, window.duration_s)
            weights[phase] = weights.get(phase, 0.0) + weight
            for kind, values in kinds.items():
                into = shares.setdefault(phase, {}).setdefault(kind, {})
                for name, share in values.items():
                    into[name] = into.get(name, 0.0) + share * weight
    rows = []
    for phase, kinds in shares.items():
        total = weights[phase] or 1.0
        clocks = {f"{name} MHz": value / total for name, value in kinds.get("sm_clock_mhz", {}).items()}
        reasons = {name: value / total for name, value in kinds.get("throttle", {}).items()}
        rows.append({"phase": phase, "sm_clock": _shares_text(clocks), "throttle": _shares_text(reasons)})
    return rows


def _phase_time_s(phases: PhaseSplit | None, phase: str, duration_s: float) -> float:
    """A window's time in a residency phase (prefill only, decode only, both, idle); its duration if unknown."""
    if phases is None:
        return duration_s
    times = {
        "prefill": phases.prefill_s - phases.overlap_s,
        "decode": phases.decode_s - phases.overlap_s,
        "both": phases.overlap_s,
        "idle": phases.idle_s,
    }
    return max(times.get(phase, duration_s), 0.0)


def _shares_text(shares: dict[str, float]) -> str:
    """``1980 MHz 82 %, 1755 MHz 18 %``: the largest ``RESIDENCY_TOP``, the rest as ``other``; "-" when none."""
    ordered = sorted(shares.items(), key=lambda item: -item[1])
    shown = [f"{name} {100 * share:.0f} %" for name, share in ordered[:RESIDENCY_TOP]]
    rest = math.fsum(share for _, share in ordered[RESIDENCY_TOP:])
    if rest > 0:
        shown.append(f"other {100 * rest:.0f} %")
    return ", ".join(shown) or "-"


def _share_pct(parts: list[float | None], total_j: float | None) -> float | None:
    summed = _sum(parts)
    return None if summed is None or not total_j else 100.0 * summed / total_j


def _sum(values: list[float | None]) -> float | None:
    return None if not values or any(v is None for v in values) else math.fsum(v for v in values if v is not None)


def _mean_ms(phase: Any) -> float | None:
    value = phase.get("mean_ms") if isinstance(phase, dict) else None
    return float(value) if _number(value) else None


def _number(value: Any) -> TypeGuard[float]:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _ms(value_s: float | None) -> float | None:
    return None if value_s is None else value_s * 1000.0


def load_run(folder: Path) -> Run:
    """``ValueError`` for a run of another schema version (``plugin.results.store.load_run``)."""
    return Run(store.load_run(folder))

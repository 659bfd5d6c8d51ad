"""Turns power windows into the ``power`` entries of ``results.json``: per GPU, per benchmark, per phase."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict
from typing import Any

from plugin.analysis.energy import PhaseEnergy, attribute_energy, per_unit
from plugin.load.client import RequestRecord
from plugin.power import Sampler, WindowMeasurement


def phase_entry(phases: PhaseEnergy) -> dict[str, Any]:
    return {
        **asdict(phases),
        "j_per_prompt_token": phases.j_per_prompt_token,
        "j_per_output_token": phases.j_per_output_token,
        "j_per_request": phases.j_per_request,
    }


def benchmark_power(sampler: Sampler, window: WindowMeasurement, records: Sequence[RequestRecord]) -> dict[str, Any]:
    """The window's energy per GPU, split into prefill and decode by ``plugin.analysis.energy``'s rule, and per token.

    The per-token figures of the whole window (``energy_per_prompt_token_j`` and ``_output_``) are the
    phase-isolating view: in a prefill benchmark nearly all energy is prefill's, in a decode one decode's.
    """
    entry: dict[str, Any] = {
        "measured": window.measured,
        "backend": window.backend,
        "unmeasured_reason": window.unmeasured_reason,
        "notes": list(window.notes),
    }
    if not window.measured:
        return entry
    done = [record for record in records if record.ok]
    prompt_tokens = sum(record.prompt_tokens or 0 for record in done)
    output_tokens = sum(record.completion_tokens or 0 for record in done)
    gpus: dict[str, Any] = {}
    for gpu_window in window.gpus:
        samples = sampler.samples(gpu_window.gpu, window.start_s, window.end_s)
        phases = attribute_energy(samples, done, window.start_s, window.end_s, gpu_window.idle_power_w)
        gpus[str(gpu_window.gpu)] = {**asdict(gpu_window), "phases": phase_entry(phases)}
    entry.update(
        start_s=window.start_s,
        end_s=window.end_s,
        energy_j=window.energy_j,
        energy_per_prompt_token_j=per_unit(window.energy_j, prompt_tokens),
        energy_per_output_token_j=per_unit(window.energy_j, output_tokens),
        energy_per_request_j=per_unit(window.energy_j, len(done)),
        gpus=gpus,
    )
    return entry


def session_power(sampler: Sampler, idle: WindowMeasurement | None) -> dict[str, Any]:
    """What the run's sampler was and saw: backend, period, raw sample files, idle baseline, sensor interval."""
    gpus = sampler.backend.gpus
    intervals = {str(gpu): sampler.update_interval_s(gpu) for gpu in gpus}
    return {
        "backend": sampler.backend.name,
        "unmeasured_reason": sampler.backend.unmeasured_reason,
        "period_ms": sampler.period_s * 1000.0,
        "gpus": list(gpus),
        "samples_csv": {str(gpu): sampler.csv_path(gpu).name for gpu in gpus},
        "idle_baseline": None if idle is None else [asdict(gpu) for gpu in idle.gpus],
        "sensor_update_interval_ms": {gpu: None if s is None else s * 1000.0 for gpu, s in intervals.items()},
        "sampler_cpu_share": sampler.cpu_share,
        "sample_errors": sampler.error_count,
        "recent_errors": list(sampler.recent_errors),
        "notes": list(sampler.notes),
    }

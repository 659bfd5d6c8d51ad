"""Power windows (one per round) and the requests they covered, turned into a benchmark's typed power results:
per GPU and round, the counter-anchored phase split by the GPU's role, its idle baseline, KV hand-off and clock and
throttle residency per phase; per round, all GPUs together; per benchmark, the rounds together. Nothing is read
back from disk: the windows carry their power curves and clock series."""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict
from typing import Any

from plugin.analysis.accounting import Work, energy_per_work, per_unit
from plugin.analysis.energy import (
    PhaseEnergy,
    attribute_energy,
    kv_handoff_intervals,
    kv_handoff_seconds,
    method_of,
    phase_slices,
)
from plugin.analysis.residency import residency
from plugin.power import Sampler, WindowMeasurement
from plugin.power.window import IdleBaseline
from plugin.records.requests import RequestRecord
from plugin.records.results import BenchmarkPower, GpuEnergy, PhaseSplit, PowerWindow

_ENERGIES = ("prefill_j", "decode_j", "idle_j", "prefill_above_idle_j", "decode_above_idle_j", "integral_j")
_TIMES = ("prefill_s", "decode_s", "overlap_s", "idle_s")
_COUNTS = ("requests", "prompt_tokens", "output_tokens")


def window_power(
    index: int,
    window: WindowMeasurement,
    records: Sequence[RequestRecord],
    gpu_roles: Mapping[int, str],
    prefill_s: float | None = None,
) -> PowerWindow:
    """One round's window: each GPU's split by its role, anchored to its own counter, and their sum, over the work
    done inside the window; ``prefill_s``, the server's mean prefill time, keeps waiting out of prefill
    (``plugin.analysis.energy``)."""
    done = [record for record in records if record.ok]
    handoffs = kv_handoff_intervals(done)
    slices = phase_slices(done, window.start_s, window.end_s, prefill_s)
    gpus: dict[str, GpuEnergy] = {}
    for gpu_window in window.gpus:
        role = gpu_roles.get(gpu_window.gpu, "unknown")
        curve = window.curves.get(gpu_window.gpu)
        clocks = window.clocks.get(gpu_window.gpu)
        energy = None
        if curve:
            energy = attribute_energy(
                [curve], done, window.start_s, window.end_s, gpu_window.idle_power_w, gpu_window.energy_counter_j,
                role=role, kv_handoffs=handoffs, prefill_s=prefill_s,
            )  # fmt: skip
        idle_w = gpu_window.idle_power_w
        gpus[str(gpu_window.gpu)] = GpuEnergy(
            role=role,
            window=gpu_window,
            phases=None if energy is None else split_of(energy),
            method=method_of(role),
            idle_baseline_j=None if idle_w is None else idle_w * gpu_window.duration_s,
            kv_handoff_s=None if handoffs is None else kv_handoff_seconds(handoffs, window.start_s, window.end_s),
            kv_handoff_j=None if energy is None else energy.kv_handoff_j,
            residency=residency(clocks, slices) if clocks else {},
        )
    splits = [gpu.phases for gpu in gpus.values() if gpu.phases is not None]
    return PowerWindow(
        round=index,
        start_s=window.start_s,
        end_s=window.end_s,
        energy_j=window.energy_j if window.measured else None,
        gpus=gpus,
        phases=combine(splits, same_requests=True) if len(splits) == len(gpus) else None,
        notes=window.notes,
    )


def benchmark_power(
    windows: Sequence[PowerWindow],
    backend: str,
    unmeasured_reason: str | None,
    gpu_roles: Mapping[int, str],
    work: Work,
    notes: Sequence[str] = (),
    excluded_gpus: Sequence[int] = (),
) -> BenchmarkPower:
    """The rounds together: energy summed over the windows, per unit of the work done inside them (``work``, the
    rounds' sum: the same counts every other figure of the benchmark divides by)."""
    measured = unmeasured_reason is None and bool(windows) and all(window.gpus for window in windows)
    energies = [window.energy_j for window in windows]
    energy_j = math.fsum(e for e in energies if e is not None) if measured and None not in energies else None
    splits = [window.phases for window in windows if window.phases is not None]
    phases = combine(splits, same_requests=False) if measured and len(splits) == len(windows) else None
    figures = energy_per_work(energy_j, work)
    return BenchmarkPower(
        measured=measured,
        backend=backend,
        unmeasured_reason=unmeasured_reason,
        gpu_roles={str(gpu): role for gpu, role in gpu_roles.items()},
        energy_j=energy_j,
        energy_per_prompt_token_j=figures["energy_per_prompt_token_j"],
        energy_per_output_token_j=figures["energy_per_output_token_j"],
        energy_per_request_j=figures["energy_per_request_j"],
        phases=phases,
        windows=tuple(windows),
        notes=tuple(dict.fromkeys([*(note for window in windows for note in window.notes), *notes])),
        excluded_gpus=tuple(excluded_gpus),
    )


def split_of(energy: PhaseEnergy) -> PhaseSplit:
    return _split({name: getattr(energy, name) for name in (*_ENERGIES, *_TIMES, *_COUNTS)})


def combine(splits: Sequence[PhaseSplit], same_requests: bool) -> PhaseSplit | None:
    """Energies add up. Over the GPUs of one window (``same_requests``) times and counts are the same on each GPU
    and are taken once; over rounds they add up too."""
    if not splits:
        return None
    values: dict[str, Any] = {name: _sum_or_none(getattr(s, name) for s in splits) for name in _ENERGIES}
    for name in (*_TIMES, *_COUNTS):
        values[name] = getattr(splits[0], name) if same_requests else sum(getattr(s, name) for s in splits)
    return _split(values)


def _split(values: dict[str, Any]) -> PhaseSplit:
    prefill_j, decode_j = values["prefill_j"], values["decode_j"]
    active_j = None if prefill_j is None or decode_j is None else prefill_j + decode_j
    return PhaseSplit(
        **values,
        j_per_prompt_token=per_unit(prefill_j, values["prompt_tokens"]),
        j_per_output_token=per_unit(decode_j, values["output_tokens"]),
        j_per_request=per_unit(active_j, values["requests"]),
    )


def _sum_or_none(values: Iterable[float | None]) -> float | None:
    items = list(values)
    return None if any(v is None for v in items) else math.fsum(v for v in items if v is not None)


def session_power(sampler: Sampler, no_context: IdleBaseline | None, loaded: Sequence[IdleBaseline]) -> dict[str, Any]:
    """What the run's sampler was and saw: backend, period, raw sample files, idle baselines (the one before any
    server, and one per topology and DVFS setting with its servers loaded), sensor interval."""
    gpus = sampler.backend.gpus
    intervals = {str(gpu): sampler.update_interval_s(gpu) for gpu in gpus}
    return {
        "backend": sampler.backend.name,
        "unmeasured_reason": sampler.backend.unmeasured_reason,
        "period_ms": sampler.period_s * 1000.0,
        "gpus": list(gpus),
        "samples_csv": {str(gpu): sampler.csv_path(gpu).name for gpu in gpus},
        "gpu_uuids": {str(gpu): sampler.backend.uuid(gpu) for gpu in gpus},
        "idle_baseline_no_context": None if no_context is None else [asdict(gpu) for gpu in no_context.gpus],
        "idle_baselines_loaded": [
            {**asdict(baseline.origin), "gpus": [asdict(gpu) for gpu in baseline.gpus]} for baseline in loaded
        ],
        "sensor_update_interval_ms": {gpu: None if s is None else s * 1000.0 for gpu, s in intervals.items()},
        "sampler_cpu_share": sampler.cpu_share,
        "sample_errors": sampler.error_count,
        "recent_errors": list(sampler.recent_errors),
        "notes": list(sampler.notes),
    }

"""Check the power sampler on a real NVIDIA GPU under a bf16 matrix-product load (read-only: no GPU setting changes).

For each sampling period it reports the achieved period and its jitter, the energy counter against the
integrated power (instant field and averaged reading), the sampler's CPU time per second, and the sensor update
interval it detected, with the sampler thread's CPU time split between the NVML reads and the rest.
Usage: ``python tools/sampler_check.py --periods-ms 100,20 --energy-periods-s 10 --out DIR``.
"""

from __future__ import annotations

import argparse
import json
import shutil
import threading
import time
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import numpy as np

from plugin.clock import now_s
from plugin.power import Sampler, open_backend
from plugin.power.backend import PowerBackend, Sample
from plugin.power.samples_csv import read_energy_readings
from plugin.power.window import IdleBaseline, PowerCurve
from plugin.records.windows import LOADED


def matmul_load(seconds: float, size: int = 8192) -> int:
    """Keep the GPU busy with bf16 matrix products for ``seconds``; returns how many ran."""
    import torch

    a = torch.randn(size, size, dtype=torch.bfloat16, device="cuda")
    b = torch.randn(size, size, dtype=torch.bfloat16, device="cuda")
    done = 0
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        for _ in range(20):
            a @ b
        torch.cuda.synchronize()
        done += 20
    return done


T = TypeVar("T")


class TimedBackend:
    """A backend wrapper that adds up the CPU time of each read, per method, in the sampler's thread only."""

    def __init__(self, backend: PowerBackend) -> None:
        self._backend = backend
        self.cpu_s: dict[str, float] = defaultdict(float)
        self.calls: dict[str, int] = defaultdict(int)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._backend, name)

    def read_samples(self) -> list[Sample]:
        return self._timed("read_samples", self._backend.read_samples)

    def read_energy_mj(self, gpu: int) -> int | None:
        return self._timed("read_energy_mj", lambda: self._backend.read_energy_mj(gpu))

    def _timed(self, name: str, read: Callable[[], T]) -> T:
        if threading.current_thread() is threading.main_thread():
            return read()  # window edges: the caller's cost, not the sampler's
        start_s = time.thread_time()
        try:
            return read()
        finally:
            self.cpu_s[name] += time.thread_time() - start_s
            self.calls[name] += 1


def integrate_j(samples: list[Sample], field: str) -> float | None:
    points = [(s.t_s, getattr(s, field)) for s in samples if getattr(s, field) is not None]
    if len(points) < 2:
        return None
    times, watts = np.array(points).T
    return float(np.sum((watts[1:] + watts[:-1]) / 2 * np.diff(times)))  # trapezoids, any numpy version


def check_period(
    gpu: int, period_ms: float, energy_period_s: float | None, load_s: float, idle_s: float, cpu_s: float, out: Path
) -> dict[str, Any]:
    folder = out / f"period-{period_ms:g}ms-energy-{energy_period_s or 'edges'}"
    backend = TimedBackend(open_backend("nvml", [gpu], int(period_ms)))
    with Sampler(backend, folder, period_ms=period_ms, energy_period_s=energy_period_s) as sampler:
        # The process does nothing else meanwhile: its CPU time is the sampler's.
        cpu_start, wall_start = time.process_time(), now_s()
        time.sleep(cpu_s)
        cpu_per_s = (time.process_time() - cpu_start) / (now_s() - wall_start)
        idle = sampler.measure_idle(idle_s)
        sampler.use_idle_baselines(IdleBaseline.of(LOADED, idle))  # the CUDA context is alive by then
        sampler.begin_window("load")
        products = matmul_load(load_s)
        window = sampler.end_window("load")
        samples = sampler.samples(gpu, window.start_s, window.end_s)
        update_interval_s = sampler.update_interval_s(gpu)
        notes = sampler.notes
    thread_share = sampler.cpu_share
    thread_s = (sampler.samples(gpu)[-1].t_s - sampler.samples(gpu)[0].t_s) or 1.0
    gaps_ms = np.diff([s.t_s for s in sampler.samples(gpu)]) * 1000.0
    measured = window.gpu(gpu)
    counter_j = measured.energy_counter_j
    average_j = integrate_j(samples, "power_avg_w")
    # The counter is also read about once a second: comparing between the first and last of those reads inside
    # the window leaves out the window's edges, where the load starts and stops between two sensor updates.
    reads = [(t, mj) for t, mj in read_energy_readings(sampler.csv_path(gpu)) if window.start_s < t < window.end_s]
    interior_counter_j = (reads[-1][1] - reads[0][1]) / 1000.0 if len(reads) >= 2 else None
    interior_samples_j = PowerCurve(samples).energy_j(reads[0][0], reads[-1][0]) if len(reads) >= 2 else None
    return {
        "period_ms": period_ms,
        "samples": len(gaps_ms) + 1,
        "period_p50_ms": float(np.percentile(gaps_ms, 50)),
        "period_p99_ms": float(np.percentile(gaps_ms, 99)),
        "jitter_p99_minus_p50_ms": float(np.percentile(gaps_ms, 99) - np.percentile(gaps_ms, 50)),
        "sampler_cpu_pct_of_core": 100.0 * cpu_per_s,
        "sampler_thread_cpu_pct_of_core": None if thread_share is None else 100.0 * thread_share,
        "energy_period_s": energy_period_s,
        "thread_cpu_pct_by_read": {name: 100.0 * cpu / thread_s for name, cpu in backend.cpu_s.items()},
        "thread_cpu_ms_per_call": {name: 1000.0 * cpu / backend.calls[name] for name, cpu in backend.cpu_s.items()},
        "sensor_update_interval_ms": None if update_interval_s is None else 1000.0 * update_interval_s,
        "load_s": measured.duration_s,
        "matmuls": products,
        "energy_counter_j": counter_j,
        "energy_instant_integrated_j": measured.energy_samples_j,
        "instant_vs_counter_pct": measured.disagreement_pct,
        "interior_counter_j": interior_counter_j,
        "interior_instant_integrated_j": interior_samples_j,
        "interior_instant_vs_counter_pct": (
            None
            if not (interior_counter_j and interior_samples_j)
            else 100.0 * (interior_samples_j - interior_counter_j) / interior_counter_j
        ),
        "energy_average_integrated_j": average_j,
        "average_vs_counter_pct": None
        if not (counter_j and average_j)
        else 100.0 * (average_j - counter_j) / counter_j,
        "mean_power_w": measured.mean_power_w,
        "max_power_w": measured.max_power_w,
        "idle_power_w": idle.gpu(gpu).mean_power_w,
        "energy_above_idle_j": measured.energy_above_idle_j,
        "mean_sm_clock_mhz": measured.mean_sm_clock_mhz,
        "throttled_s": measured.throttled_s,
        "throttle_reasons_s": dict(measured.throttle_reasons_s),
        "power_source": measured.power_source,
        "sample_errors": measured.sample_errors,
        "notes": list(notes),
        "csv": str(sampler.csv_path(gpu).relative_to(out)),
    }


def markdown(rows: list[dict[str, Any]]) -> str:
    def fmt(value: Any) -> str:
        return "-" if value is None else f"{value:.2f}" if isinstance(value, float) else str(value)

    keys = [
        "period_ms",
        "energy_period_s",
        "samples",
        "period_p50_ms",
        "period_p99_ms",
        "sampler_cpu_pct_of_core",
        "sampler_thread_cpu_pct_of_core",
        "sensor_update_interval_ms",
        "energy_counter_j",
        "energy_instant_integrated_j",
        "instant_vs_counter_pct",
        "interior_instant_vs_counter_pct",
        "energy_average_integrated_j",
        "average_vs_counter_pct",
        "mean_power_w",
        "idle_power_w",
        "mean_sm_clock_mhz",
        "throttled_s",
    ]
    lines = ["| " + " | ".join(keys) + " |", "|" + " --- |" * len(keys)]
    lines += ["| " + " | ".join(fmt(row[key]) for key in keys) + " |" for row in rows]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--gpu", type=int, default=0)
    parser.add_argument("--periods-ms", default="100,20")
    parser.add_argument(
        "--energy-periods-s", default="10", help="cadences of the extra counter reads; 'edges': window edges only"
    )
    parser.add_argument("--load-s", type=float, default=6.0)
    parser.add_argument("--idle-s", type=float, default=2.0)
    parser.add_argument("--cpu-s", type=float, default=3.0, help="seconds of sampling alone, for its CPU cost")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    matmul_load(1.0)  # import torch and make the CUDA context before sampling, so neither lands in a window
    rows = [
        check_period(args.gpu, float(period), energy_period_s, args.load_s, args.idle_s, args.cpu_s, args.out)
        for period in args.periods_ms.split(",")
        for energy_period_s in [None if e == "edges" else float(e) for e in args.energy_periods_s.split(",")]
    ]
    (args.out / "sampler_check.json").write_text(json.dumps(rows, indent=1))
    for row in rows:  # flatten the CSVs next to the JSON, so that they come back from the device machine
        flat = f"power_gpu{args.gpu}_{row['period_ms']:g}ms_energy_{row['energy_period_s'] or 'edges'}.csv"
        shutil.copy(args.out / row["csv"], args.out / flat)
    print(markdown(rows))
    print(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()

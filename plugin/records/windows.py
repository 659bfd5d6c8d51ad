"""What a power window measured on one GPU, and which idle baseline it subtracted: the figures the results keep.

Plain records: the power stage makes them (``plugin.power.window``), the analysis and the results read them."""

from __future__ import annotations

from dataclasses import dataclass

LOADED = "loaded"
"""An idle baseline measured with a topology's servers ready at a DVFS setting and no request in flight."""
NO_CONTEXT = "no context"
"""The idle baseline measured once before any server started: no CUDA context on any GPU (an H200 draws about 40 W
less than with a loaded server)."""
NO_BASELINE = "none"
RUN_BASELINE = "run (first server loaded)"
"""What a window from before per-topology baselines subtracted: one baseline per run, measured once the first
topology's servers were up (GPUs with and without a server mixed)."""


@dataclass(frozen=True, slots=True)
class BaselineOrigin:
    """Where and when an idle baseline was measured: the topology and DVFS setting it was measured under (``None``
    for the no-context one, and for a run without a DVFS sweep) and its window on the run's clock."""

    topology: str | None
    dvfs_setting: str | None
    start_s: float
    end_s: float


@dataclass(frozen=True, slots=True)
class GpuWindow:
    """One GPU over one window. ``energy_j`` is the counter's figure where there is one, else the samples'."""

    gpu: int
    start_s: float
    end_s: float
    energy_counter_j: float | None
    energy_samples_j: float | None
    disagreement_pct: float | None
    """(samples - counter) / counter, in %."""
    mean_power_w: float | None
    """``energy_j`` over the window's duration."""
    max_power_w: float | None
    mean_sm_clock_mhz: float | None
    throttled_s: float | None
    """Time with a slowdown reason (power cap, thermal, power brake...); ``None`` when reasons were not read."""
    throttle_reasons_s: tuple[tuple[str, float], ...]
    """Seconds spent with each clocks-event reason, slowdowns or not (``gpu_idle`` included)."""
    idle_power_w: float | None
    energy_above_idle_j: float | None
    samples: int
    sample_errors: int
    power_source: str | None
    """``instant`` (field-values API), ``average`` (1 s average), ``mixed``, or ``None`` without samples."""
    sensor_interval_s: float | None = None
    """The power sensor's update interval as measured when the window closed (``None`` until known)."""
    idle_baseline: str = RUN_BASELINE
    """Which baseline ``idle_power_w`` is: ``loaded``, ``no context`` or ``none``; files from before read
    ``run (first server loaded)``."""
    idle_baseline_origin: BaselineOrigin | None = None
    """Where and when that baseline was measured (``None`` without one, and in files from before)."""

    @property
    def duration_s(self) -> float:
        return self.end_s - self.start_s

    @property
    def energy_j(self) -> float | None:
        return self.energy_counter_j if self.energy_counter_j is not None else self.energy_samples_j

"""Window arithmetic: energy from the counter and from integrating power samples, and what a window reports.

Power between two samples is taken as the straight line joining them (the trapezoid rule); before the first
and after the last sample it is held at that sample's value, so that a window's edges need no sample of
their own. Throttle reasons are held from one sample to the next.
"""

from __future__ import annotations

import math
from bisect import bisect_right
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from plugin.power.backend import SLOWDOWN_MASK, Sample, reason_names
from plugin.records.windows import NO_BASELINE, BaselineOrigin, GpuWindow

COUNTER_MODULUS = 2**64
"""``nvmlDeviceGetTotalEnergyConsumption`` is an unsigned 64-bit count of mJ."""


def counter_delta_mj(begin_mj: int, end_mj: int) -> int:
    """Energy between two counter readings, across one wrap-around of the 64-bit counter."""
    return (end_mj - begin_mj) % COUNTER_MODULUS


def segment_energy_j(t0_s: float, p0_w: float, t1_s: float, p1_w: float, a_s: float, b_s: float) -> float:
    """The integral over ``[a_s, b_s]`` of the straight line from ``(t0_s, p0_w)`` to ``(t1_s, p1_w)``."""
    lo, hi = max(a_s, t0_s), min(b_s, t1_s)
    if hi <= lo:
        return 0.0
    slope = (p1_w - p0_w) / (t1_s - t0_s)
    return (2 * p0_w + slope * (lo - t0_s + hi - t0_s)) / 2 * (hi - lo)


class PowerCurve:
    """Power over time from one GPU's samples, built as they arrive, for energy over any interval in O(log n).

    The suite's one integrator: a window's sample energy and the phase split both read it."""

    def __init__(self, samples: Iterable[Sample] = ()) -> None:
        self._times: list[float] = []
        self._powers: list[float] = []
        self._cumulative_j: list[float] = []  # energy from the first sample to each sample
        for sample in sorted(samples, key=lambda s: s.t_s):
            self.add(sample.t_s, sample.power_w)

    def add(self, t_s: float, power_w: float | None) -> None:
        """One more point; a failed read (``None``) or a time not after the last point is skipped, so the line
        from the previous point bridges the gap."""
        if power_w is None or (self._times and t_s <= self._times[-1]):
            return
        if self._times:
            step_j = (self._powers[-1] + power_w) / 2 * (t_s - self._times[-1])
            self._cumulative_j.append(self._cumulative_j[-1] + step_j)
        else:
            self._cumulative_j.append(0.0)
        self._times.append(t_s)
        self._powers.append(power_w)

    def __bool__(self) -> bool:
        return bool(self._times)

    @property
    def last_time_s(self) -> float | None:
        return self._times[-1] if self._times else None

    def energy_j(self, start_s: float, end_s: float) -> float | None:
        """Energy over ``[start_s, end_s]``; ``None`` when there is no power sample at all."""
        if not self._times:
            return None
        return self._energy_to(end_s) - self._energy_to(start_s)

    def _energy_to(self, t_s: float) -> float:
        times, powers = self._times, self._powers
        if t_s <= times[0]:
            return powers[0] * (t_s - times[0])
        i = bisect_right(times, t_s) - 1
        if i == len(times) - 1:
            return self._cumulative_j[i] + powers[i] * (t_s - times[i])
        return self._cumulative_j[i] + segment_energy_j(times[i], powers[i], times[i + 1], powers[i + 1], times[i], t_s)


class ClockSeries:
    """One GPU's SM clock and clocks-event (throttle) mask over time, each held from one reading to the next, kept
    beside the power curve so that the analysis can tell which clock and which reasons each phase ran under.

    A reading that failed (``None``) or is not after the last one is skipped, so the previous value holds on."""

    def __init__(self, samples: Iterable[Sample] = ()) -> None:
        self.clock_times_s: list[float] = []
        self.sm_clocks_mhz: list[int] = []
        self.reason_times_s: list[float] = []
        self.reason_masks: list[int] = []
        for sample in sorted(samples, key=lambda s: s.t_s):
            self.add(sample)

    def add(self, sample: Sample) -> None:
        if sample.sm_clock_mhz is not None and (not self.clock_times_s or sample.t_s > self.clock_times_s[-1]):
            self.clock_times_s.append(sample.t_s)
            self.sm_clocks_mhz.append(sample.sm_clock_mhz)
        if sample.throttle_reasons is not None and (not self.reason_times_s or sample.t_s > self.reason_times_s[-1]):
            self.reason_times_s.append(sample.t_s)
            self.reason_masks.append(sample.throttle_reasons)

    def __bool__(self) -> bool:
        return bool(self.clock_times_s or self.reason_times_s)


@dataclass(frozen=True, slots=True)
class IdleBaseline:
    """An idle power per GPU that windows subtract, which kind it is (``loaded``, ``no context``), where and when
    it was measured, and the GPU windows it was measured in (what the results record)."""

    kind: str
    origin: BaselineOrigin
    power_w: Mapping[int, float]
    gpus: tuple[GpuWindow, ...] = ()

    @classmethod
    def of(
        cls, kind: str, window: WindowMeasurement, topology: str | None = None, dvfs_setting: str | None = None
    ) -> IdleBaseline:
        """A measured window as a baseline: each GPU's mean power over it (a GPU without one has no baseline)."""
        power_w = {gpu.gpu: gpu.mean_power_w for gpu in window.gpus if gpu.mean_power_w is not None}
        return cls(kind, BaselineOrigin(topology, dvfs_setting, window.start_s, window.end_s), power_w, window.gpus)


@dataclass(frozen=True, slots=True)
class WindowMeasurement:
    """What ``Sampler.end_window`` returns. Without a power backend, ``gpus`` is empty and the reason says why."""

    name: str
    backend: str
    start_s: float
    end_s: float
    gpus: tuple[GpuWindow, ...]
    notes: tuple[str, ...]
    unmeasured_reason: str | None
    curves: Mapping[int, PowerCurve] = field(default_factory=dict, compare=False, repr=False)
    """Each GPU's power over the window, held in memory for the phase split (never written to results)."""
    clocks: Mapping[int, ClockSeries] = field(default_factory=dict, compare=False, repr=False)
    """Each GPU's SM clock and throttle mask over the window, in memory for the residency per phase (likewise)."""
    clock_error_s: float = 0.0
    """How far the samples' timestamps may be off our clock (a Ray node's measured offset; 0 on this machine)."""

    @property
    def measured(self) -> bool:
        return self.unmeasured_reason is None and bool(self.gpus)

    @property
    def duration_s(self) -> float:
        return self.end_s - self.start_s

    @property
    def energy_j(self) -> float | None:
        """All GPUs together; ``None`` when power was not measured or one GPU has no figure."""
        energies = [gpu.energy_j for gpu in self.gpus]
        if not energies or any(energy is None for energy in energies):
            return None
        return math.fsum(energy for energy in energies if energy is not None)

    def gpu(self, index: int) -> GpuWindow:
        for window in self.gpus:
            if window.gpu == index:
                return window
        raise KeyError(f"GPU {index} is not in window {self.name!r} (GPUs: {[w.gpu for w in self.gpus]})")


class WindowAccumulator:
    """One GPU's window, fed sample by sample, so that the sampler keeps no list of samples."""

    def __init__(self, gpu: int, start_s: float, counter_start_mj: int | None, seed: Sample | None = None) -> None:
        """``seed`` is the last sample before the window: it lets the trapezoid start exactly at ``start_s``."""
        self.gpu = gpu
        self.start_s = start_s
        self.counter_start_mj = counter_start_mj
        self.curve = PowerCurve()
        self.clocks = ClockSeries()
        self._sources: set[str] = set()
        self._count = 0
        self._errors = 0
        self._max_power_w: float | None = None
        self._sm_clocks: list[float] = []
        self._last_reasons: tuple[float, int] | None = None
        self._reason_s: dict[str, float] = {}
        self._throttled_s = 0.0
        if seed is not None:
            self._take_power(seed)
            self._take_reasons(seed)
            self.clocks.add(seed)

    def add(self, sample: Sample) -> None:
        if sample.t_s >= self.start_s:
            self._count += 1
            self._errors += sample.error is not None
            if sample.power_w is not None:
                if self._max_power_w is None or sample.power_w > self._max_power_w:
                    self._max_power_w = sample.power_w
                self._sources.add("instant" if sample.power_instant_w is not None else "average")
            if sample.sm_clock_mhz is not None:
                self._sm_clocks.append(sample.sm_clock_mhz)
        self._take_power(sample)
        self._take_reasons(sample)
        self.clocks.add(sample)

    def finish(
        self,
        end_s: float,
        counter_end_mj: int | None,
        idle: IdleBaseline | None = None,
        sensor_interval_s: float | None = None,
    ) -> GpuWindow:
        """The window's figures; above idle where ``idle`` has this GPU's power."""
        idle_power_w = None if idle is None else idle.power_w.get(self.gpu)
        duration_s = end_s - self.start_s
        samples_j = self.curve.energy_j(self.start_s, end_s)
        counter_j: float | None = None
        if self.counter_start_mj is not None and counter_end_mj is not None:
            counter_j = counter_delta_mj(self.counter_start_mj, counter_end_mj) / 1000.0
        energy_j = counter_j if counter_j is not None else samples_j
        above_idle_j = None if energy_j is None or idle_power_w is None else energy_j - idle_power_w * duration_s
        self._hold_reasons_until(end_s)
        return GpuWindow(
            gpu=self.gpu,
            start_s=self.start_s,
            end_s=end_s,
            energy_counter_j=counter_j,
            energy_samples_j=samples_j,
            disagreement_pct=_disagreement_pct(samples_j, counter_j),
            mean_power_w=None if energy_j is None or duration_s <= 0 else energy_j / duration_s,
            max_power_w=self._max_power_w,
            mean_sm_clock_mhz=math.fsum(self._sm_clocks) / len(self._sm_clocks) if self._sm_clocks else None,
            throttled_s=self._throttled_s if self._last_reasons is not None else None,
            throttle_reasons_s=tuple(sorted(self._reason_s.items())),
            idle_power_w=idle_power_w,
            energy_above_idle_j=above_idle_j,
            samples=self._count,
            sample_errors=self._errors,
            power_source=_power_source(self._sources),
            sensor_interval_s=sensor_interval_s,
            idle_baseline=NO_BASELINE if idle is None or idle_power_w is None else idle.kind,
            idle_baseline_origin=None if idle is None or idle_power_w is None else idle.origin,
        )

    def _take_power(self, sample: Sample) -> None:
        self.curve.add(sample.t_s, sample.power_w)

    def _take_reasons(self, sample: Sample) -> None:
        if sample.throttle_reasons is None:
            return
        self._hold_reasons_until(sample.t_s)
        self._last_reasons = (sample.t_s, sample.throttle_reasons)

    def _hold_reasons_until(self, t_s: float) -> None:
        if self._last_reasons is None:
            return
        since_s, mask = self._last_reasons
        held_s = t_s - max(since_s, self.start_s)
        if held_s <= 0:
            return
        for name in reason_names(mask):
            self._reason_s[name] = self._reason_s.get(name, 0.0) + held_s
        if mask & SLOWDOWN_MASK:
            self._throttled_s += held_s
        self._last_reasons = (t_s, mask)


def measure_window(
    gpu: int,
    samples: Sequence[Sample],
    start_s: float,
    end_s: float,
    counter_start_mj: int | None = None,
    counter_end_mj: int | None = None,
    idle: IdleBaseline | None = None,
) -> GpuWindow:
    """The sampler's figures from a list of samples (read back from the CSV, or made in a test).

    Samples after ``end_s`` are left out, as they did not exist yet when the sampler closed the window.
    """
    accumulator = WindowAccumulator(gpu, start_s, counter_start_mj)
    for sample in sorted((s for s in samples if s.gpu == gpu and s.t_s <= end_s), key=lambda s: s.t_s):
        accumulator.add(sample)
    return accumulator.finish(end_s, counter_end_mj, idle)


def _disagreement_pct(samples_j: float | None, counter_j: float | None) -> float | None:
    if samples_j is None or counter_j is None or counter_j == 0:
        return None
    return (samples_j - counter_j) / counter_j * 100.0


def _power_source(sources: set[str]) -> str | None:
    if not sources:
        return None
    return next(iter(sources)) if len(sources) == 1 else "mixed"

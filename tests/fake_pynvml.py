"""A fake ``pynvml`` that plays a known power trace: nvidia-ml-py's own constants, error classes and ctypes
return types, with device functions that answer from the trace instead of a GPU.

Like the real sensor, readings change only every ``update_interval_s``, and the energy counter is the exact
integral of the trace up to the last update (in mJ, unsigned 64-bit, so it can be started near its wrap).
It has no set functions at all: a backend that called one would fail with ``AttributeError``.
"""

from __future__ import annotations

import math
import threading
import types
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import pynvml as _real  # types and constants only: nothing here loads libnvidia-ml

from plugin.clock import now_s

_COUNTER_MODULUS = 2**64
_MIB = 2**20


@dataclass(frozen=True)
class Step:
    """A stretch of the trace: ``power_w`` (and the rest) held for ``duration_s``; the last step lasts forever."""

    duration_s: float
    power_w: float
    sm_clock_mhz: int = 1980
    throttle_reasons: int = 0
    util_gpu_pct: int = 100


@dataclass(frozen=True)
class FakeGpu:
    steps: Sequence[Step] = (Step(1.0, 100.0),)
    update_interval_s: float = 0.1
    """0 makes the sensor continuous."""
    has_instant_field: bool = True
    has_average_field: bool = True
    has_energy_counter: bool = True
    energy_start_mj: int = 0
    mem_clock_mhz: int = 2619
    mem_used_mib: int = 1024
    mem_total_mib: int = 81559
    temp_c: int = 40

    def step_at(self, elapsed_s: float) -> Step:
        for step in self.steps:
            if elapsed_s < step.duration_s:
                return step
            elapsed_s -= step.duration_s
        return self.steps[-1]

    def energy_j(self, elapsed_s: float) -> float:
        """The trace's exact integral from 0 to ``elapsed_s``."""
        total_j = 0.0
        for step in self.steps[:-1]:
            span_s = min(step.duration_s, elapsed_s)
            total_j += step.power_w * max(span_s, 0.0)
            elapsed_s -= step.duration_s
            if elapsed_s <= 0:
                return total_j
        return total_j + self.steps[-1].power_w * elapsed_s

    def sensed_s(self, elapsed_s: float) -> float:
        """When the sensor last updated."""
        if self.update_interval_s <= 0:
            return elapsed_s
        return math.floor(elapsed_s / self.update_interval_s) * self.update_interval_s

    def average_w(self, sensed_s: float) -> float:
        """Power averaged over the second before ``sensed_s``, as NVML's 1 s average."""
        since_s = max(0.0, sensed_s - 1.0)
        if sensed_s <= since_s:
            return self.step_at(sensed_s).power_w
        return (self.energy_j(sensed_s) - self.energy_j(since_s)) / (sensed_s - since_s)


@dataclass(frozen=True)
class _Handle:
    index: int


class FakeNvml:
    """The fake's state. ``module()`` is what a test puts where ``pynvml`` would be."""

    def __init__(
        self,
        gpus: Sequence[FakeGpu] = (FakeGpu(),),
        clock: Callable[[], float] = now_s,
        binding_has_clocks_event_reasons: bool = True,
        driver_has_clocks_event_reasons: bool = True,
        init_error: int | None = None,
    ) -> None:
        self.gpus = tuple(gpus)
        self.clock = clock
        self.t0_s = clock()
        self.binding_has_clocks_event_reasons = binding_has_clocks_event_reasons
        self.driver_has_clocks_event_reasons = driver_has_clocks_event_reasons
        self.init_error = init_error
        self.init_count = 0
        self.calls: list[str] = []
        self._failures_left = 0
        self._failure_code = _real.NVML_ERROR_UNKNOWN
        self._lock = threading.Lock()

    def fail_next(self, count: int, code: int = _real.NVML_ERROR_UNKNOWN) -> None:
        """Make the next ``count`` device queries raise ``NVMLError(code)``."""
        with self._lock:
            self._failures_left = count
            self._failure_code = code

    def elapsed_s(self, t_s: float | None = None) -> float:
        return (self.clock() if t_s is None else t_s) - self.t0_s

    def counter_mj(self, gpu: int, t_s: float) -> int:
        """What the energy counter reads at ``t_s`` (``plugin.clock`` time)."""
        fake = self.gpus[gpu]
        joules = fake.energy_j(fake.sensed_s(self.elapsed_s(t_s)))
        return (fake.energy_start_mj + int(joules * 1000)) % _COUNTER_MODULUS

    def module(self) -> types.ModuleType:
        module = types.ModuleType("pynvml", "fake pynvml (tests/fake_pynvml.py)")
        for name in dir(_real):
            if name.startswith(("NVML_", "NVMLError", "nvmlClocksEventReason", "nvmlClocksThrottleReason", "c_nvml")):
                setattr(module, name, getattr(_real, name))
        functions = [
            "nvmlInit",
            "nvmlShutdown",
            "nvmlDeviceGetCount",
            "nvmlDeviceGetHandleByIndex",
            "nvmlDeviceGetFieldValues",
            "nvmlDeviceGetPowerUsage",
            "nvmlDeviceGetTotalEnergyConsumption",
            "nvmlDeviceGetClockInfo",
            "nvmlDeviceGetUtilizationRates",
            "nvmlDeviceGetMemoryInfo",
            "nvmlDeviceGetTemperature",
            "nvmlDeviceGetCurrentClocksThrottleReasons",
        ]
        if self.binding_has_clocks_event_reasons:
            functions.append("nvmlDeviceGetCurrentClocksEventReasons")
        for name in functions:
            setattr(module, name, getattr(self, name))
        return module

    # -- the pynvml functions -----------------------------------------------------------------------------

    def nvmlInit(self) -> None:
        self._log("nvmlInit")
        if self.init_error is not None:
            raise _real.NVMLError(self.init_error)
        self.init_count += 1

    def nvmlShutdown(self) -> None:
        self._log("nvmlShutdown")
        if self.init_count == 0:
            raise _real.NVMLError(_real.NVML_ERROR_UNINITIALIZED)
        self.init_count -= 1

    def nvmlDeviceGetCount(self) -> int:
        self._gate("nvmlDeviceGetCount")
        return len(self.gpus)

    def nvmlDeviceGetHandleByIndex(self, index: int) -> _Handle:
        self._gate("nvmlDeviceGetHandleByIndex")
        if not 0 <= index < len(self.gpus):
            raise _real.NVMLError(_real.NVML_ERROR_INVALID_ARGUMENT)
        return _Handle(index)

    def nvmlDeviceGetFieldValues(self, handle: _Handle, field_ids: list[int]) -> Any:
        fake, sensed_s = self._device_call("nvmlDeviceGetFieldValues", handle)
        values = (_real.c_nvmlFieldValue_t * len(field_ids))()
        for value, field_id in zip(values, field_ids, strict=True):
            value.fieldId = field_id
            value.timestamp = int((self.t0_s + sensed_s) * 1e6)
            value.valueType = _real.NVML_VALUE_TYPE_UNSIGNED_INT
            milliwatts: float | None = None
            if field_id == _real.NVML_FI_DEV_POWER_INSTANT and fake.has_instant_field:
                milliwatts = fake.step_at(sensed_s).power_w * 1000
            elif field_id == _real.NVML_FI_DEV_POWER_AVERAGE and fake.has_average_field:
                milliwatts = fake.average_w(sensed_s) * 1000
            if milliwatts is None:
                value.nvmlReturn = _real.NVML_ERROR_NOT_SUPPORTED
            else:
                value.nvmlReturn = _real.NVML_SUCCESS
                value.value.uiVal = round(milliwatts)
        return values

    def nvmlDeviceGetPowerUsage(self, handle: _Handle) -> int:
        """mW; a 1 s average, as on A100 and newer."""
        fake, sensed_s = self._device_call("nvmlDeviceGetPowerUsage", handle)
        return round(fake.average_w(sensed_s) * 1000)

    def nvmlDeviceGetTotalEnergyConsumption(self, handle: _Handle) -> int:
        fake, _ = self._device_call("nvmlDeviceGetTotalEnergyConsumption", handle)
        if not fake.has_energy_counter:
            raise _real.NVMLError(_real.NVML_ERROR_NOT_SUPPORTED)
        return self.counter_mj(handle.index, self.clock())

    def nvmlDeviceGetClockInfo(self, handle: _Handle, clock_type: int) -> int:
        fake, sensed_s = self._device_call("nvmlDeviceGetClockInfo", handle)
        if clock_type == _real.NVML_CLOCK_SM:
            return fake.step_at(sensed_s).sm_clock_mhz
        if clock_type == _real.NVML_CLOCK_MEM:
            return fake.mem_clock_mhz
        raise _real.NVMLError(_real.NVML_ERROR_NOT_SUPPORTED)

    def nvmlDeviceGetUtilizationRates(self, handle: _Handle) -> Any:
        fake, sensed_s = self._device_call("nvmlDeviceGetUtilizationRates", handle)
        return _real.c_nvmlUtilization_t(gpu=fake.step_at(sensed_s).util_gpu_pct, memory=0)

    def nvmlDeviceGetMemoryInfo(self, handle: _Handle) -> Any:
        fake, _ = self._device_call("nvmlDeviceGetMemoryInfo", handle)
        total, used = fake.mem_total_mib * _MIB, fake.mem_used_mib * _MIB
        return _real.c_nvmlMemory_t(total=total, free=total - used, used=used)

    def nvmlDeviceGetTemperature(self, handle: _Handle, sensor: int) -> int:
        fake, _ = self._device_call("nvmlDeviceGetTemperature", handle)
        return fake.temp_c

    def nvmlDeviceGetCurrentClocksEventReasons(self, handle: _Handle) -> int:
        fake, sensed_s = self._device_call("nvmlDeviceGetCurrentClocksEventReasons", handle)
        if not self.driver_has_clocks_event_reasons:
            raise _real.NVMLError(_real.NVML_ERROR_FUNCTION_NOT_FOUND)
        return fake.step_at(sensed_s).throttle_reasons

    def nvmlDeviceGetCurrentClocksThrottleReasons(self, handle: _Handle) -> int:
        fake, sensed_s = self._device_call("nvmlDeviceGetCurrentClocksThrottleReasons", handle)
        return fake.step_at(sensed_s).throttle_reasons

    # -- plumbing -----------------------------------------------------------------------------------------

    def _log(self, name: str) -> None:
        with self._lock:
            self.calls.append(name)

    def _gate(self, name: str) -> None:
        """Log the call, check NVML is initialised, and inject a failure if one is due."""
        with self._lock:
            self.calls.append(name)
            if self.init_count == 0:
                raise _real.NVMLError(_real.NVML_ERROR_UNINITIALIZED)
            if self._failures_left > 0:
                self._failures_left -= 1
                raise _real.NVMLError(self._failure_code)

    def _device_call(self, name: str, handle: _Handle) -> tuple[FakeGpu, float]:
        """``_gate``, then the GPU and when its sensor last updated."""
        self._gate(name)
        fake = self.gpus[handle.index]
        return fake, fake.sensed_s(self.elapsed_s())

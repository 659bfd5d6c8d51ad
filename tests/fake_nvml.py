"""The suite's one fake NVML, for power and DVFS alike: nvidia-ml-py's own constants, error classes and ctypes
return types, with device functions that answer from a known power trace and H100-like clocks and power limits
instead of a GPU. Set functions change only the fake's state, and every call is recorded.

Two ways in:

- Objects, in unit tests: ``nvml = FakeNvml([FakeGpu(...)])``, then ``nvml.module()`` where ``pynvml`` would be;
  ``nvml.calls`` and ``nvml.settings`` say what the code under test did.
- The module itself, named by ``PD_ENERGY_BENCH_NVML_MODULE=tests.fake_nvml``, so a pytest subprocess uses it
  through ``plugin.power.nvml_loader.load_nvml`` (inventory, power backend and DVFS controller alike). It then
  plays one ``FakeNvml`` per process (``module_fake()``), made on first use from these environment knobs:
  ``FAKE_NVML_GPUS`` (how many, default 2), ``FAKE_NVML_LOG`` (file the set and reset calls are appended to, one
  JSON object a line), ``FAKE_NVML_NO_PERMISSION=1`` (every set call: NoPermission), ``FAKE_NVML_REFUSE_SM``
  (comma-separated SM clocks that every GPU refuses with NotSupported).

Like the real sensor, readings change only every ``update_interval_s``, and the energy counter is the exact
integral of the trace up to the last update (in mJ, unsigned 64-bit, so it can be started near its wrap). A
locked SM clock caps the trace's clock; the power trace does not react to clocks or limits.
"""

from __future__ import annotations

import functools
import json
import math
import os
import threading
import types
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pynvml as _real  # types and constants only: nothing here loads libnvidia-ml

from plugin.clock import now_s

_COUNTER_MODULUS = 2**64
_MIB = 2**20
_PYNVML_NAMES = ("NVML_", "NVMLError", "nvmlClocksEventReason", "nvmlClocksThrottleReason", "c_nvml")
H100_SM_MHZ = tuple(range(1980, 344, -15))  # 110 clocks, 1980 down to 345, as on the lent H100
H100_MEM_MHZ = (2619, 1593)


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
    """What one GPU is: its power trace and sensor, and the clocks and power limits it supports."""

    steps: Sequence[Step] = (Step(1.0, 100.0),)
    update_interval_s: float = 0.1
    """0 makes the sensor continuous."""
    has_instant_field: bool = True
    has_average_field: bool = True
    has_energy_counter: bool = True
    energy_start_mj: int = 0
    mem_clock_mhz: int = H100_MEM_MHZ[0]
    mem_used_mib: int = 1024
    mem_total_mib: int = 81559
    temp_c: int = 40
    supported_sm_mhz: tuple[int, ...] = H100_SM_MHZ
    supported_mem_mhz: tuple[int, ...] = H100_MEM_MHZ
    default_power_limit_mw: int = 700_000
    min_power_limit_mw: int = 200_000
    max_power_limit_mw: int = 700_000

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


@dataclass
class GpuSettings:
    """What the set functions changed on one GPU; ``None``: not locked (the driver's own choice)."""

    power_limit_mw: int
    locked_sm_mhz: tuple[int, int] | None = None
    locked_mem_mhz: tuple[int, int] | None = None


@dataclass(frozen=True)
class _Handle:
    index: int


@dataclass(eq=False)
class FakeNvml:
    """The fake's state: GPUs, their settings and every call. ``module()`` is what a test puts where ``pynvml``
    would be."""

    gpus: Sequence[FakeGpu] = (FakeGpu(),)
    clock: Callable[[], float] = now_s
    binding_has_clocks_event_reasons: bool = True
    driver_has_clocks_event_reasons: bool = True
    init_error: int | None = None
    no_permission: bool = False
    refused_sm_mhz: Collection[int] = ()
    log_path: Path | None = None
    """Where set and reset calls are appended as JSON lines, for a test outside the process."""
    init_count: int = field(default=0, init=False)
    calls: list[dict[str, Any]] = field(default_factory=list, init=False)
    """Every call after ``nvmlInit``: ``{"name": ..., "gpu": ..., **arguments}``."""
    settings: list[GpuSettings] = field(init=False)
    t0_s: float = field(init=False)

    def __post_init__(self) -> None:
        self.gpus = tuple(self.gpus)
        self.settings = [GpuSettings(gpu.default_power_limit_mw) for gpu in self.gpus]
        self.t0_s = self.clock()
        self._failures_left = 0
        self._failure_code = _real.NVML_ERROR_UNKNOWN
        self._lock = threading.Lock()

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> FakeNvml:
        """The fake the module plays in a process, set up by the ``FAKE_NVML_*`` knobs."""
        return cls(
            gpus=[FakeGpu()] * int(env.get("FAKE_NVML_GPUS", "2")),
            no_permission=env.get("FAKE_NVML_NO_PERMISSION") == "1",
            refused_sm_mhz={int(mhz) for mhz in env.get("FAKE_NVML_REFUSE_SM", "").split(",") if mhz},
            log_path=Path(env["FAKE_NVML_LOG"]) if env.get("FAKE_NVML_LOG") else None,
        )

    def fail_next(self, count: int, code: int = _real.NVML_ERROR_UNKNOWN) -> None:
        """Make the next ``count`` device calls raise ``NVMLError(code)``."""
        with self._lock:
            self._failures_left = count
            self._failure_code = code

    def call_names(self) -> list[str]:
        with self._lock:
            return [call["name"] for call in self.calls]

    def set_calls(self) -> list[dict[str, Any]]:
        """The calls that change a GPU's settings, in order."""
        with self._lock:
            return [call for call in self.calls if call["name"].startswith(("nvmlDeviceSet", "nvmlDeviceReset"))]

    def elapsed_s(self, t_s: float | None = None) -> float:
        return (self.clock() if t_s is None else t_s) - self.t0_s

    def counter_mj(self, gpu: int, t_s: float) -> int:
        """What the energy counter reads at ``t_s`` (``plugin.clock`` time)."""
        fake = self.gpus[gpu]
        joules = fake.energy_j(fake.sensed_s(self.elapsed_s(t_s)))
        return (fake.energy_start_mj + int(joules * 1000)) % _COUNTER_MODULUS

    def functions(self) -> list[str]:
        """The pynvml functions this fake has (an older binding lacks the clocks-event call)."""
        names = [name for name in dir(type(self)) if name.startswith("nvml")]
        if not self.binding_has_clocks_event_reasons:
            names.remove("nvmlDeviceGetCurrentClocksEventReasons")
        return names

    def module(self) -> types.ModuleType:
        module = types.ModuleType("pynvml", "fake pynvml (tests/fake_nvml.py)")
        for name in dir(_real):
            if name.startswith(_PYNVML_NAMES):
                setattr(module, name, getattr(_real, name))
        for name in self.functions():
            setattr(module, name, getattr(self, name))
        return module

    # -- the pynvml functions: system -----------------------------------------------------------------------

    def nvmlInit(self) -> None:
        with self._lock:
            self.calls.append({"name": "nvmlInit"})
            if self.init_error is not None:
                raise _real.NVMLError(self.init_error)
            self.init_count += 1

    def nvmlShutdown(self) -> None:
        with self._lock:
            self.calls.append({"name": "nvmlShutdown"})
            if self.init_count == 0:
                raise _real.NVMLError(_real.NVML_ERROR_UNINITIALIZED)
            self.init_count -= 1

    def nvmlSystemGetDriverVersion(self) -> str:
        self._gate("nvmlSystemGetDriverVersion")
        return "fake-580"

    def nvmlDeviceGetCount(self) -> int:
        self._gate("nvmlDeviceGetCount")
        return len(self.gpus)

    def nvmlDeviceGetHandleByIndex(self, index: int) -> _Handle:
        self._gate("nvmlDeviceGetHandleByIndex", gpu=index)
        if not 0 <= index < len(self.gpus):
            raise _real.NVMLError(_real.NVML_ERROR_INVALID_ARGUMENT)
        return _Handle(index)

    # -- device identity and readings -----------------------------------------------------------------------

    def nvmlDeviceGetName(self, handle: _Handle) -> str:
        self._device_call("nvmlDeviceGetName", handle)
        return "Fake H100 (tests/fake_nvml.py)"

    def nvmlDeviceGetUUID(self, handle: _Handle) -> str:
        self._device_call("nvmlDeviceGetUUID", handle)
        return f"GPU-fake-{handle.index}"

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
        settings = self.settings[handle.index]
        if clock_type == _real.NVML_CLOCK_SM:
            trace_mhz = fake.step_at(sensed_s).sm_clock_mhz
            return trace_mhz if settings.locked_sm_mhz is None else min(trace_mhz, settings.locked_sm_mhz[1])
        if clock_type == _real.NVML_CLOCK_MEM:
            return fake.mem_clock_mhz if settings.locked_mem_mhz is None else settings.locked_mem_mhz[1]
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

    # -- supported values and limits ------------------------------------------------------------------------

    def nvmlDeviceGetSupportedMemoryClocks(self, handle: _Handle) -> list[int]:
        fake, _ = self._device_call("nvmlDeviceGetSupportedMemoryClocks", handle)
        return list(fake.supported_mem_mhz)

    def nvmlDeviceGetSupportedGraphicsClocks(self, handle: _Handle, mem_clock_mhz: int) -> list[int]:
        fake, _ = self._device_call("nvmlDeviceGetSupportedGraphicsClocks", handle)
        if mem_clock_mhz not in fake.supported_mem_mhz:
            raise _real.NVMLError(_real.NVML_ERROR_INVALID_ARGUMENT)
        return list(fake.supported_sm_mhz)

    def nvmlDeviceGetPowerManagementLimit(self, handle: _Handle) -> int:
        self._device_call("nvmlDeviceGetPowerManagementLimit", handle)
        return self.settings[handle.index].power_limit_mw

    def nvmlDeviceGetPowerManagementDefaultLimit(self, handle: _Handle) -> int:
        fake, _ = self._device_call("nvmlDeviceGetPowerManagementDefaultLimit", handle)
        return fake.default_power_limit_mw

    def nvmlDeviceGetPowerManagementLimitConstraints(self, handle: _Handle) -> list[int]:
        fake, _ = self._device_call("nvmlDeviceGetPowerManagementLimitConstraints", handle)
        return [fake.min_power_limit_mw, fake.max_power_limit_mw]

    # -- the set and reset functions ------------------------------------------------------------------------

    def nvmlDeviceSetGpuLockedClocks(self, handle: _Handle, min_mhz: int, max_mhz: int) -> None:
        fake = self._set_call("nvmlDeviceSetGpuLockedClocks", handle, min_mhz=min_mhz, max_mhz=max_mhz)
        if max_mhz in self.refused_sm_mhz:
            raise _real.NVMLError(_real.NVML_ERROR_NOT_SUPPORTED)
        # Like the driver: a clock between supported steps is clamped to the nearest supported one below.
        clamped = max((mhz for mhz in fake.supported_sm_mhz if mhz <= max_mhz), default=min(fake.supported_sm_mhz))
        self.settings[handle.index].locked_sm_mhz = (min(min_mhz, clamped), clamped)

    def nvmlDeviceResetGpuLockedClocks(self, handle: _Handle) -> None:
        self._set_call("nvmlDeviceResetGpuLockedClocks", handle)
        self.settings[handle.index].locked_sm_mhz = None

    def nvmlDeviceSetMemoryLockedClocks(self, handle: _Handle, min_mhz: int, max_mhz: int) -> None:
        self._set_call("nvmlDeviceSetMemoryLockedClocks", handle, min_mhz=min_mhz, max_mhz=max_mhz)
        self.settings[handle.index].locked_mem_mhz = (min_mhz, max_mhz)

    def nvmlDeviceResetMemoryLockedClocks(self, handle: _Handle) -> None:
        self._set_call("nvmlDeviceResetMemoryLockedClocks", handle)
        self.settings[handle.index].locked_mem_mhz = None

    def nvmlDeviceSetPowerManagementLimit(self, handle: _Handle, limit_mw: int) -> None:
        fake = self._set_call("nvmlDeviceSetPowerManagementLimit", handle, limit_mw=limit_mw)
        if not fake.min_power_limit_mw <= limit_mw <= fake.max_power_limit_mw:
            raise _real.NVMLError(_real.NVML_ERROR_INVALID_ARGUMENT)
        self.settings[handle.index].power_limit_mw = limit_mw

    # -- plumbing -------------------------------------------------------------------------------------------

    def _gate(self, name: str, **arguments: Any) -> None:
        """Record the call, check NVML is initialised, and inject a failure if one is due."""
        with self._lock:
            self.calls.append({"name": name, **arguments})
            if self.init_count == 0:
                raise _real.NVMLError(_real.NVML_ERROR_UNINITIALIZED)
            if self._failures_left > 0:
                self._failures_left -= 1
                raise _real.NVMLError(self._failure_code)

    def _device_call(self, name: str, handle: _Handle, **arguments: Any) -> tuple[FakeGpu, float]:
        """``_gate``, then the GPU and when its sensor last updated."""
        self._gate(name, gpu=handle.index, **arguments)
        fake = self.gpus[handle.index]
        return fake, fake.sensed_s(self.elapsed_s())

    def _set_call(self, name: str, handle: _Handle, **arguments: Any) -> FakeGpu:
        """A call that changes a setting: written to ``log_path`` first, refused without permission."""
        if self.log_path is not None:
            with self.log_path.open("a") as log:
                log.write(json.dumps({"name": name, "gpu": handle.index, **arguments}) + "\n")
        fake, _ = self._device_call(name, handle, **arguments)
        if self.no_permission:
            raise _real.NVMLError(_real.NVML_ERROR_NO_PERMISSION)
        return fake


@functools.cache
def module_fake() -> FakeNvml:
    """The one fake this module plays in a process (see the module's docstring)."""
    return FakeNvml.from_env(os.environ)


def reset() -> None:
    """Forget the module's fake, so that an in-process test gets a fresh one from the environment as it is now."""
    module_fake.cache_clear()


def __getattr__(name: str) -> Any:
    """This module as ``pynvml``: nvidia-ml-py's constants and errors, and ``module_fake()``'s functions."""
    if name.startswith(_PYNVML_NAMES):
        return getattr(_real, name)
    if name.startswith("nvml") and name in module_fake().functions():
        return getattr(module_fake(), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

"""The NVML backend: instant power through the field-values API, the energy counter, clocks and throttling.

Read-only: it never calls an NVML set function. ``pynvml`` (nvidia-ml-py) is imported when the backend is
created, never at module import, so that ``pytest --help`` works without it. An NVML error on one field makes
that field ``None`` and is written into ``Sample.error``; the sampler keeps going.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from plugin.clock import now_s
from plugin.power.backend import PowerError, PowerReadError, Sample
from plugin.power.nvml_loader import load_nvml

_MIB = 2**20


class NvmlBackend:
    def __init__(self, gpus: Sequence[int] | None = None, nvml: Any = None, clock: Callable[[], float] = now_s) -> None:
        """Initialise NVML and take handles for ``gpus`` (default: all). ``nvml`` replaces ``pynvml`` in tests."""
        if nvml is None:
            try:
                nvml = load_nvml()
            except ImportError as error:
                raise PowerError(f"nvidia-ml-py is not installed ({error}); pip install nvidia-ml-py") from error
        self._nvml: Any = nvml
        self._clock = clock
        try:
            nvml.nvmlInit()
        except nvml.NVMLError as error:
            raise PowerError(f"NVML could not start: {error}") from error
        try:
            count = int(nvml.nvmlDeviceGetCount())
            if count == 0:
                raise PowerError("NVML sees no GPU")
            indices = tuple(range(count)) if gpus is None else tuple(gpus)
            unknown = [index for index in indices if not 0 <= index < count]
            if unknown:
                raise PowerError(f"no GPU with index {unknown[0]}: NVML sees {count} GPU(s)")
            self._handles = {index: nvml.nvmlDeviceGetHandleByIndex(index) for index in indices}
            self._uuids = {index: self._read_uuid(handle) for index, handle in self._handles.items()}
        except nvml.NVMLError as error:
            nvml.nvmlShutdown()
            raise PowerError(f"NVML could not open the GPUs: {error}") from error
        except PowerError:
            nvml.nvmlShutdown()
            raise
        self._gpus = indices
        # (gpu, what) pairs that answered NotSupported once: not asked again.
        self._unsupported: set[tuple[int, str]] = set()
        self._closed = False

    @property
    def name(self) -> str:
        return "nvml"

    @property
    def gpus(self) -> tuple[int, ...]:
        return self._gpus

    @property
    def unmeasured_reason(self) -> str | None:
        return None

    def read_samples(self) -> list[Sample]:
        return [self._read(gpu, handle) for gpu, handle in self._handles.items()]

    def uuid(self, gpu: int) -> str | None:
        return self._uuids.get(gpu)

    def _read_uuid(self, handle: Any) -> str | None:
        try:
            uuid = self._nvml.nvmlDeviceGetUUID(handle)
        except self._nvml.NVMLError:
            return None
        return uuid.decode() if isinstance(uuid, bytes) else str(uuid)

    def read_energy_mj(self, gpu: int) -> int | None:
        if (gpu, "energy") in self._unsupported:
            return None
        nvml = self._nvml
        try:
            return int(nvml.nvmlDeviceGetTotalEnergyConsumption(self._handles[gpu]))
        except (nvml.NVMLError_NotSupported, nvml.NVMLError_FunctionNotFound):
            self._unsupported.add((gpu, "energy"))
            return None
        except nvml.NVMLError as error:
            raise PowerReadError(f"GPU {gpu} energy counter: {error}") from error

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        try:
            self._nvml.nvmlShutdown()
        except self._nvml.NVMLError:
            pass  # shutting down a broken NVML must not hide the run's results

    def _read(self, gpu: int, handle: Any) -> Sample:
        nvml = self._nvml
        errors: list[str] = []
        t_s = self._clock()
        instant_w, average_w = self._power_w(gpu, handle, errors)
        clock_info = nvml.nvmlDeviceGetClockInfo
        sm_clock = self._query(gpu, "sm_clock", errors, clock_info, handle, nvml.NVML_CLOCK_SM)
        mem_clock = self._query(gpu, "mem_clock", errors, clock_info, handle, nvml.NVML_CLOCK_MEM)
        utilization = self._query(gpu, "utilization", errors, nvml.nvmlDeviceGetUtilizationRates, handle)
        memory = self._query(gpu, "memory", errors, nvml.nvmlDeviceGetMemoryInfo, handle)
        temp = self._query(gpu, "temp", errors, nvml.nvmlDeviceGetTemperature, handle, nvml.NVML_TEMPERATURE_GPU)
        return Sample(
            t_s=t_s,
            gpu=gpu,
            power_instant_w=instant_w,
            power_avg_w=average_w,
            sm_clock_mhz=_int(sm_clock),
            mem_clock_mhz=_int(mem_clock),
            util_gpu_pct=None if utilization is None else int(utilization.gpu),
            mem_used_mib=None if memory is None else int(memory.used) // _MIB,
            temp_c=_int(temp),
            throttle_reasons=self._throttle_reasons(gpu, handle, errors),
            error="; ".join(errors) or None,
        )

    def _power_w(self, gpu: int, handle: Any, errors: list[str]) -> tuple[float | None, float | None]:
        """Instant and 1 s average power in W from one field-values call; the average falls back to PowerUsage."""
        nvml = self._nvml
        instant_w: float | None = None
        average_w: float | None = None
        if (gpu, "fields") not in self._unsupported:
            fields = [nvml.NVML_FI_DEV_POWER_INSTANT, nvml.NVML_FI_DEV_POWER_AVERAGE]
            values = self._query(gpu, "fields", errors, nvml.nvmlDeviceGetFieldValues, handle, fields)
            if values is not None:
                instant_w = self._field_w(gpu, "instant_power", values[0], errors)
                average_w = self._field_w(gpu, "average_power", values[1], errors)
        if average_w is None:
            milliwatts = self._query(gpu, "power_usage", errors, nvml.nvmlDeviceGetPowerUsage, handle)
            average_w = None if milliwatts is None else milliwatts / 1000.0
        return instant_w, average_w

    def _field_w(self, gpu: int, what: str, field: Any, errors: list[str]) -> float | None:
        nvml = self._nvml
        if field.nvmlReturn == nvml.NVML_SUCCESS:
            return _field_number(nvml, field) / 1000.0  # power fields are in mW
        if field.nvmlReturn == nvml.NVML_ERROR_NOT_SUPPORTED:
            self._unsupported.add((gpu, what))
        else:
            errors.append(f"{what}: {nvml.NVMLError(field.nvmlReturn)}")
        return None

    def _throttle_reasons(self, gpu: int, handle: Any, errors: list[str]) -> int | None:
        """Clocks-event reasons; the deprecated "throttle" call where the binding or the driver lacks the new one."""
        nvml = self._nvml
        current = getattr(nvml, "nvmlDeviceGetCurrentClocksEventReasons", None)
        if current is not None and (gpu, "clocks_event_reasons") not in self._unsupported:
            reasons = self._query(gpu, "clocks_event_reasons", errors, current, handle)
            if (gpu, "clocks_event_reasons") not in self._unsupported:
                return None if reasons is None else int(reasons)
        reasons = self._query(gpu, "throttle_reasons", errors, nvml.nvmlDeviceGetCurrentClocksThrottleReasons, handle)
        return None if reasons is None else int(reasons)

    def _query(self, gpu: int, what: str, errors: list[str], fn: Callable[..., Any], *args: Any) -> Any:
        """Call ``fn``; ``None`` when unsupported (remembered) or failed (noted in ``errors``)."""
        nvml = self._nvml
        if (gpu, what) in self._unsupported:
            return None
        try:
            return fn(*args)
        except (nvml.NVMLError_NotSupported, nvml.NVMLError_FunctionNotFound):
            self._unsupported.add((gpu, what))
            return None
        except nvml.NVMLError as error:
            errors.append(f"{what}: {error}")
            return None


def _field_number(nvml: Any, field: Any) -> float:
    """The member of the ``c_nvmlValue_t`` union that ``valueType`` names."""
    member = {
        nvml.NVML_VALUE_TYPE_DOUBLE: "dVal",
        nvml.NVML_VALUE_TYPE_UNSIGNED_INT: "uiVal",
        nvml.NVML_VALUE_TYPE_UNSIGNED_LONG: "ulVal",
        nvml.NVML_VALUE_TYPE_UNSIGNED_LONG_LONG: "ullVal",
        nvml.NVML_VALUE_TYPE_SIGNED_LONG_LONG: "sllVal",
        nvml.NVML_VALUE_TYPE_SIGNED_INT: "siVal",
        nvml.NVML_VALUE_TYPE_UNSIGNED_SHORT: "usVal",
    }.get(field.valueType, "uiVal")
    return float(getattr(field.value, member))


def _int(value: Any) -> int | None:
    return None if value is None else int(value)

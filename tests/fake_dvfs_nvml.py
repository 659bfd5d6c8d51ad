"""A stand-in ``pynvml`` with H100-like clocks and power limits whose set functions change only this fake's state
and append every set and reset call to a log: the DVFS code is checked with it, never on a real GPU.

Importable as a module (``PD_ENERGY_BENCH_NVML_MODULE=tests.fake_dvfs_nvml``), so a pytest subprocess uses it too.
Environment knobs, read at ``nvmlInit``: ``FAKE_NVML_LOG`` (file the calls are appended to, one JSON per line),
``FAKE_NVML_GPUS`` (how many, default 2), ``FAKE_NVML_NO_PERMISSION=1`` (every set call: NoPermission),
``FAKE_NVML_REFUSE_SM`` (SM clocks, comma-separated, that the GPU refuses with NotSupported).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from typing import Any

import pynvml as _real

for _name in dir(_real):
    if _name.startswith(("NVML_", "NVMLError", "c_nvml")):
        globals()[_name] = getattr(_real, _name)

NVMLError = _real.NVMLError
SUPPORTED_MEM_MHZ = (2619, 1593)
SUPPORTED_SM_MHZ = tuple(range(1980, 344, -15))  # 110 clocks, 1980 down to 345, as on the lent H100
DEFAULT_LIMIT_MW, MIN_LIMIT_MW, MAX_LIMIT_MW = 700_000, 200_000, 700_000
DEFAULT_SM_MHZ = 1980


@dataclass
class _Gpu:
    index: int
    locked_sm: tuple[int, int] | None = None
    locked_mem: tuple[int, int] | None = None
    limit_mw: int = DEFAULT_LIMIT_MW


@dataclass
class _State:
    gpus: list[_Gpu] = field(default_factory=list)
    calls: list[dict[str, Any]] = field(default_factory=list)
    initialised: int = 0


STATE = _State()


def reset() -> None:
    """Forget every GPU's settings and the calls seen (in-process tests)."""
    STATE.gpus, STATE.calls, STATE.initialised = [], [], 0


def set_calls() -> list[dict[str, Any]]:
    return [call for call in STATE.calls if call["name"].startswith(("nvmlDeviceSet", "nvmlDeviceReset"))]


def _log(name: str, **args: Any) -> None:
    call = {"name": name, **args}
    STATE.calls.append(call)
    path = os.environ.get("FAKE_NVML_LOG")
    if path:
        with open(path, "a") as log:
            log.write(json.dumps(call) + "\n")


def _gpu(handle: _Gpu) -> _Gpu:
    if not STATE.initialised:
        raise NVMLError(_real.NVML_ERROR_UNINITIALIZED)
    return handle


def _settable(name: str, handle: _Gpu, **args: Any) -> _Gpu:
    _log(name, gpu=handle.index, **args)
    if os.environ.get("FAKE_NVML_NO_PERMISSION") == "1":
        raise NVMLError(_real.NVML_ERROR_NO_PERMISSION)
    return _gpu(handle)


def nvmlInit() -> None:
    if not STATE.gpus:
        STATE.gpus = [_Gpu(index) for index in range(int(os.environ.get("FAKE_NVML_GPUS", "2")))]
    STATE.initialised += 1


def nvmlShutdown() -> None:
    STATE.initialised = max(0, STATE.initialised - 1)


def nvmlSystemGetDriverVersion() -> str:
    return "fake-580"


def nvmlDeviceGetCount() -> int:
    return len(STATE.gpus)


def nvmlDeviceGetHandleByIndex(index: int) -> _Gpu:
    if not 0 <= index < len(STATE.gpus):
        raise NVMLError(_real.NVML_ERROR_INVALID_ARGUMENT)
    return STATE.gpus[index]


def nvmlDeviceGetName(handle: _Gpu) -> str:
    return "Fake H100 (tests/fake_dvfs_nvml.py)"


def nvmlDeviceGetUUID(handle: _Gpu) -> str:
    return f"GPU-fake-{handle.index}"


def nvmlDeviceGetMemoryInfo(handle: _Gpu) -> Any:
    total = 81559 * 2**20
    return _real.c_nvmlMemory_t(total=total, free=total, used=0)


def nvmlDeviceGetSupportedMemoryClocks(handle: _Gpu) -> list[int]:
    return list(SUPPORTED_MEM_MHZ)


def nvmlDeviceGetSupportedGraphicsClocks(handle: _Gpu, mem_clock_mhz: int) -> list[int]:
    if mem_clock_mhz not in SUPPORTED_MEM_MHZ:
        raise NVMLError(_real.NVML_ERROR_INVALID_ARGUMENT)
    return list(SUPPORTED_SM_MHZ)


def nvmlDeviceGetPowerManagementLimit(handle: _Gpu) -> int:
    return _gpu(handle).limit_mw


def nvmlDeviceGetPowerManagementDefaultLimit(handle: _Gpu) -> int:
    return DEFAULT_LIMIT_MW


def nvmlDeviceGetPowerManagementLimitConstraints(handle: _Gpu) -> list[int]:
    return [MIN_LIMIT_MW, MAX_LIMIT_MW]


def nvmlDeviceGetClockInfo(handle: _Gpu, clock_type: int) -> int:
    gpu = _gpu(handle)
    if clock_type == _real.NVML_CLOCK_SM:
        return gpu.locked_sm[1] if gpu.locked_sm else DEFAULT_SM_MHZ
    if clock_type == _real.NVML_CLOCK_MEM:
        return gpu.locked_mem[1] if gpu.locked_mem else SUPPORTED_MEM_MHZ[0]
    raise NVMLError(_real.NVML_ERROR_NOT_SUPPORTED)


def nvmlDeviceSetGpuLockedClocks(handle: _Gpu, min_mhz: int, max_mhz: int) -> None:
    gpu = _settable("nvmlDeviceSetGpuLockedClocks", handle, min_mhz=min_mhz, max_mhz=max_mhz)
    refused = {int(c) for c in os.environ.get("FAKE_NVML_REFUSE_SM", "").split(",") if c}
    if max_mhz in refused:
        raise NVMLError(_real.NVML_ERROR_NOT_SUPPORTED)
    # Like the driver: a clock between supported steps is clamped to the nearest supported one below.
    clamped = max((c for c in SUPPORTED_SM_MHZ if c <= max_mhz), default=SUPPORTED_SM_MHZ[-1])
    gpu.locked_sm = (min(min_mhz, clamped), clamped)


def nvmlDeviceResetGpuLockedClocks(handle: _Gpu) -> None:
    _settable("nvmlDeviceResetGpuLockedClocks", handle).locked_sm = None


def nvmlDeviceSetMemoryLockedClocks(handle: _Gpu, min_mhz: int, max_mhz: int) -> None:
    _settable("nvmlDeviceSetMemoryLockedClocks", handle, min_mhz=min_mhz, max_mhz=max_mhz).locked_mem = (
        min_mhz,
        max_mhz,
    )


def nvmlDeviceResetMemoryLockedClocks(handle: _Gpu) -> None:
    _settable("nvmlDeviceResetMemoryLockedClocks", handle).locked_mem = None


def nvmlDeviceSetPowerManagementLimit(handle: _Gpu, limit_mw: int) -> None:
    gpu = _settable("nvmlDeviceSetPowerManagementLimit", handle, limit_mw=limit_mw)
    if not MIN_LIMIT_MW <= limit_mw <= MAX_LIMIT_MW:
        raise NVMLError(_real.NVML_ERROR_INVALID_ARGUMENT)
    gpu.limit_mw = limit_mw

"""Which NVIDIA GPUs this machine has, read through NVML when it can be loaded; an empty list otherwise."""

from __future__ import annotations

import os
import platform
from dataclasses import dataclass

from plugin.power.nvml_loader import load_nvml


@dataclass(frozen=True, slots=True)
class GpuInfo:
    index: int
    name: str
    uuid: str
    memory_mib: int


@dataclass(frozen=True, slots=True)
class Inventory:
    gpus: tuple[GpuInfo, ...]
    driver_version: str | None
    nvml_error: str | None

    def check_indices(self, indices: tuple[int, ...]) -> None:
        """Raise ``ValueError`` naming the GPUs there are when an index is not one of them."""
        known = {gpu.index for gpu in self.gpus}
        unknown = [index for index in indices if index not in known]
        if not unknown:
            return
        if not self.gpus:
            raise ValueError(
                f"no NVIDIA GPU is visible here ({self.nvml_error}); leave the option out to run on the CPU"
            )
        listing = ", ".join(f"{gpu.index}: {gpu.name}" for gpu in self.gpus)
        raise ValueError(f"no GPU with index {unknown[0]}; this machine has {listing}")


def inventory() -> Inventory:
    try:
        pynvml = load_nvml()
    except ImportError as error:
        return Inventory((), None, f"nvidia-ml-py is not installed: {error}")
    try:
        pynvml.nvmlInit()
    except pynvml.NVMLError as error:
        return Inventory((), None, f"NVML: {error}")
    try:
        gpus = []
        for index in range(pynvml.nvmlDeviceGetCount()):
            handle = pynvml.nvmlDeviceGetHandleByIndex(index)
            memory = pynvml.nvmlDeviceGetMemoryInfo(handle)
            gpus.append(
                GpuInfo(
                    index=index,
                    name=_text(pynvml.nvmlDeviceGetName(handle)),
                    uuid=_text(pynvml.nvmlDeviceGetUUID(handle)),
                    memory_mib=int(memory.total) // 2**20,
                )
            )
        return Inventory(tuple(gpus), _text(pynvml.nvmlSystemGetDriverVersion()), None)
    finally:
        pynvml.nvmlShutdown()


def _text(value: str | bytes) -> str:
    return value.decode() if isinstance(value, bytes) else value


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as cpuinfo:
            for line in cpuinfo:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def cpu_count() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1

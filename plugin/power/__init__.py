"""GPU power sampling: backends (NVML, nvidia-smi, none), the sampler thread and window measurements.

Nothing here imports ``pynvml`` at module import: the NVML backend does when it is created.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

from plugin.power.backend import PowerBackend, PowerError, PowerReadError, Sample
from plugin.power.none import NoneBackend
from plugin.power.sampler import Sampler
from plugin.power.window import WindowMeasurement

BackendKind = Literal["auto", "nvml", "smi", "none"]

__all__ = [
    "BackendKind",
    "NoneBackend",
    "PowerBackend",
    "PowerError",
    "PowerReadError",
    "Sample",
    "Sampler",
    "WindowMeasurement",
    "open_backend",
]


def open_backend(kind: BackendKind = "auto", gpus: Sequence[int] | None = None, period_ms: int = 50) -> PowerBackend:
    """The backend ``kind`` names; ``auto`` tries NVML, then nvidia-smi, and falls back to ``none`` saying why.

    ``period_ms`` matters only to nvidia-smi, which paces itself; pass the sampler's period.
    """
    from plugin.power.nvml import NvmlBackend
    from plugin.power.smi import SmiBackend

    if kind == "none":
        return NoneBackend("power sampling is off (power backend 'none')")
    if kind == "nvml":
        return NvmlBackend(gpus)
    if kind == "smi":
        return SmiBackend(period_ms, gpus)
    failures = []
    try:
        return NvmlBackend(gpus)
    except PowerError as error:
        failures.append(f"NVML: {error}")
    try:
        return SmiBackend(period_ms, gpus)
    except PowerError as error:
        failures.append(f"nvidia-smi: {error}")
    return NoneBackend("power not measured: no GPU power source here (" + "; ".join(failures) + ")")

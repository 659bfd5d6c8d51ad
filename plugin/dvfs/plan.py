"""DVFS planning: the GPU settings (SM clock, memory clock, power limit) a run's benchmarks sweep, and what each
GPU supports. Pure: nothing here changes a GPU."""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass
from types import ModuleType
from typing import Any

from plugin.errors import BenchError
from plugin.options import Settings


class DvfsError(BenchError):
    """A setting that cannot be made: out of the GPU's range, or no permission to change it."""


@dataclass(frozen=True, slots=True)
class GpuSetting:
    """What one GPU runs at; ``None`` leaves that knob as found."""

    sm_clock_mhz: int | None = None
    mem_clock_mhz: int | None = None
    power_limit_w: int | None = None

    @property
    def id(self) -> str:
        parts = [
            f"{prefix}{value}"
            for prefix, value in (("sm", self.sm_clock_mhz), ("mem", self.mem_clock_mhz), ("pl", self.power_limit_w))
            if value is not None
        ]
        return "-".join(parts) or "asfound"


@dataclass(frozen=True, slots=True)
class DvfsSetting:
    """One point of the sweep: the prefill GPUs' setting and the decode GPUs' (the same one in traditional)."""

    prefill: GpuSetting
    decode: GpuSetting

    @property
    def id(self) -> str:
        if self.prefill == self.decode:
            return self.prefill.id
        return f"p-{self.prefill.id}-d-{self.decode.id}"

    def for_role(self, role: str) -> GpuSetting:
        """The setting of a GPU with this role (``prefill+decode``: one GPU does both, so both settings agree)."""
        return self.decode if role == "decode" else self.prefill


AS_FOUND = DvfsSetting(GpuSetting(), GpuSetting())


def sweep(
    architecture: str,
    sm_clocks: Sequence[int],
    mem_clocks: Sequence[int],
    power_limits: Sequence[int],
    prefill_sm_clocks: Sequence[int] = (),
    decode_sm_clocks: Sequence[int] = (),
    shared_gpu: bool = False,
) -> list[DvfsSetting]:
    """Every setting, in the order given; disaggregated takes the cross product of the prefill and decode SM
    clocks (each defaults to ``sm_clocks``), except on a GPU both roles share, which can hold one clock only."""
    mems: Sequence[int | None] = mem_clocks or (None,)
    limits: Sequence[int | None] = power_limits or (None,)
    if architecture == "traditional":
        return [
            DvfsSetting(setting, setting)
            for sm, mem, limit in itertools.product(sm_clocks or (None,), mems, limits)
            for setting in (GpuSetting(sm, mem, limit),)
        ]
    prefill: Sequence[int | None] = prefill_sm_clocks or sm_clocks or (None,)
    decode: Sequence[int | None] = decode_sm_clocks or sm_clocks or (None,)
    settings = []
    for p_sm, d_sm, mem, limit in itertools.product(prefill, decode, mems, limits):
        if shared_gpu and p_sm != d_sm:
            continue
        settings.append(DvfsSetting(GpuSetting(p_sm, mem, limit), GpuSetting(d_sm, mem, limit)))
    return settings


def planned_sweep(settings: Settings, kind: str, shared_gpu: bool = False) -> list[DvfsSetting]:
    """The settings a topology's benchmarks run under (``kind``: traditional or disaggregated; ``shared_gpu``:
    both roles on one GPU): one, as found, without a DVFS option."""
    if not settings.dvfs_requested:
        return [AS_FOUND]
    return sweep(
        kind,
        settings.sm_clocks,
        settings.mem_clocks,
        settings.power_limits,
        settings.prefill_sm_clocks,
        settings.decode_sm_clocks,
        shared_gpu=shared_gpu,
    )


@dataclass(frozen=True, slots=True)
class GpuLimits:
    """What a GPU supports, read once through NVML."""

    mem_clocks_mhz: tuple[int, ...]
    sm_clocks_mhz: dict[int, tuple[int, ...]]  # per memory clock
    power_limit_range_w: tuple[float, float]
    found_power_limit_w: float

    def check(self, gpu: int, setting: GpuSetting) -> list[str]:
        """Raise ``DvfsError`` for a value out of range; return notes for values the driver will clamp."""
        notes = []
        if setting.mem_clock_mhz is not None and setting.mem_clock_mhz not in self.mem_clocks_mhz:
            raise DvfsError(
                f"GPU {gpu}: memory clock {setting.mem_clock_mhz} MHz is not supported "
                f"(supported: {', '.join(map(str, self.mem_clocks_mhz))})"
            )
        if setting.sm_clock_mhz is not None:
            supported = self.sm_clocks_mhz[setting.mem_clock_mhz or self.mem_clocks_mhz[0]]
            low, high = min(supported), max(supported)
            if not low <= setting.sm_clock_mhz <= high:
                raise DvfsError(f"GPU {gpu}: SM clock {setting.sm_clock_mhz} MHz is outside {low} to {high} MHz")
            if setting.sm_clock_mhz not in supported:
                nearest = max(c for c in supported if c <= setting.sm_clock_mhz)
                notes.append(
                    f"GPU {gpu}: SM clock {setting.sm_clock_mhz} MHz is between supported steps; the driver "
                    f"clamps it (expected {nearest} MHz)"
                )
        if setting.power_limit_w is not None:
            low_w, high_w = self.power_limit_range_w
            if not low_w <= setting.power_limit_w <= high_w:
                raise DvfsError(
                    f"GPU {gpu}: power limit {setting.power_limit_w} W is outside {low_w:g} to {high_w:g} W"
                )
        return notes


def read_limits(nvml: ModuleType, handle: Any) -> GpuLimits:
    mems = tuple(int(c) for c in nvml.nvmlDeviceGetSupportedMemoryClocks(handle))
    sms = {mem: tuple(int(c) for c in nvml.nvmlDeviceGetSupportedGraphicsClocks(handle, mem)) for mem in mems}
    low_mw, high_mw = nvml.nvmlDeviceGetPowerManagementLimitConstraints(handle)
    found_mw = nvml.nvmlDeviceGetPowerManagementLimit(handle)
    return GpuLimits(mems, sms, (low_mw / 1000.0, high_mw / 1000.0), found_mw / 1000.0)

"""What every power backend gives the sampler: one ``Sample`` per GPU per read, and the energy counter.

A field the GPU does not have is ``None``, never zero, so that "not measured" cannot pass for "no power".
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from plugin.errors import BenchError


class PowerError(BenchError):
    """The power sampler was misused or could not start (unknown window, backend not available)."""


class PowerReadError(PowerError):
    """One read failed (an NVML error mid-run); the sampler records it and keeps going."""


@dataclass(frozen=True, slots=True)
class Sample:
    """One reading of one GPU at ``t_s`` (``plugin.clock.now_s``). ``error`` says which fields failed and why."""

    t_s: float
    gpu: int
    power_instant_w: float | None
    power_avg_w: float | None
    sm_clock_mhz: int | None
    mem_clock_mhz: int | None
    util_gpu_pct: int | None
    mem_used_mib: int | None
    temp_c: int | None
    throttle_reasons: int | None
    error: str | None = None

    @property
    def power_w(self) -> float | None:
        """The instant value where the GPU has one: on A100 and newer the plain reading is a 1 s average."""
        return self.power_instant_w if self.power_instant_w is not None else self.power_avg_w


class PowerBackend(Protocol):
    """Device access behind one interface, so that the sampler runs the same on NVML, nvidia-smi or nothing."""

    @property
    def name(self) -> str: ...

    @property
    def gpus(self) -> tuple[int, ...]:
        """The GPU indices this backend reads; empty for the ``none`` backend."""
        ...

    @property
    def unmeasured_reason(self) -> str | None:
        """Why power is not measured at all (the ``none`` backend); ``None`` when it is."""
        ...

    def read_samples(self) -> list[Sample]:
        """The samples taken since the last call (NVML: one per GPU now). Field errors go into ``Sample.error``."""
        ...

    def read_energy_mj(self, gpu: int) -> int | None:
        """The GPU's energy counter in mJ (unsigned 64 bit, wraps); ``None`` when the GPU has none.

        Raises ``PowerReadError`` when a read that is supported fails.
        """
        ...

    def uuid(self, gpu: int) -> str | None:
        """The GPU's UUID, which names it whatever the index order (``None``: the source does not give it)."""
        ...

    def close(self) -> None: ...


# Clocks-event (formerly throttle) reason bits, as nvml.h and pynvml's nvmlClocksEventReason* name them.
CLOCKS_EVENT_REASONS: tuple[tuple[int, str], ...] = (
    (0x001, "gpu_idle"),
    (0x002, "applications_clocks_setting"),
    (0x004, "sw_power_cap"),
    (0x008, "hw_slowdown"),
    (0x010, "sync_boost"),
    (0x020, "sw_thermal_slowdown"),
    (0x040, "hw_thermal_slowdown"),
    (0x080, "hw_power_brake_slowdown"),
    (0x100, "display_clock_setting"),
    (0x200, "board_limit"),
    (0x400, "reliability"),
)

SLOWDOWN_MASK = 0x004 | 0x008 | 0x020 | 0x040 | 0x080 | 0x200 | 0x400
"""Reasons that hold clocks below what the load asks for; idle, sync boost and clock settings are not slowdowns."""


def reason_names(mask: int) -> tuple[str, ...]:
    """Decode a clocks-event bitmask; unknown bits come out as ``bit_0x...``."""
    names = [name for bit, name in CLOCKS_EVENT_REASONS if mask & bit]
    known = sum(bit for bit, _ in CLOCKS_EVENT_REASONS)
    rest = mask & ~known
    bit = 1
    while rest:
        if rest & bit:
            names.append(f"bit_{bit:#x}")
            rest &= ~bit
        bit <<= 1
    return tuple(names)

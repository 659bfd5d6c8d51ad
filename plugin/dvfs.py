"""DVFS: the sweep of GPU settings (SM clock, memory clock, power limit) that benchmarks run under, applied through
NVML just before a benchmark, read back, and restored to the state found at start after it: on failure, on
Ctrl-C and SIGTERM (both reach here as exceptions), at interpreter exit, and by ``python -m plugin.dvfs restore``
after a crash no handler could catch (``kill -9``), from the state file written before the first change.

Clocks are locked with ``nvmlDeviceSetGpuLockedClocks`` / ``nvmlDeviceSetMemoryLockedClocks`` (min = max = the
asked clock) and restored with their reset calls; the power limit is set with
``nvmlDeviceSetPowerManagementLimit`` and restored to the limit found. A clock between the GPU's supported
steps is clamped by the driver: the results keep the asked and the applied value. ``--dvfs-dry-run`` only reads.
"""

from __future__ import annotations

import atexit
import itertools
import json
import os
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

from plugin.errors import BenchError
from plugin.options import Settings

STATE_FILE = "dvfs-state.json"


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

    @property
    def changes_anything(self) -> bool:
        return any(v is not None for v in (self.sm_clock_mhz, self.mem_clock_mhz, self.power_limit_w))


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


def planned_sweep(settings: Settings, architecture: str) -> list[DvfsSetting]:
    """The settings an architecture's benchmarks run under: one, as found, without a DVFS option."""
    if not settings.dvfs_requested:
        return [AS_FOUND]
    return sweep(
        architecture,
        settings.sm_clocks,
        settings.mem_clocks,
        settings.power_limits,
        settings.prefill_sm_clocks,
        settings.decode_sm_clocks,
        shared_gpu=bool(set(settings.prefill_gpus) & set(settings.decode_gpus)),
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


class DvfsController:
    """Applies settings to the run's GPUs and restores them; the one place that calls an NVML set function."""

    def __init__(self, nvml: ModuleType, gpus: Sequence[int], state_dir: Path) -> None:
        """Refuses to start over a state file left by a run that could not restore (its "found" values would be
        the changed ones): that run's settings must be restored first."""
        self._state_path = state_dir / STATE_FILE
        if self._state_path.is_file():
            raise DvfsError(
                f"{self._state_path} says an earlier run left GPU settings changed; restore them first with "
                f"python -m plugin.dvfs restore --reports-dir {state_dir}"
            )
        self._nvml = nvml
        nvml.nvmlInit()
        self._handles = {gpu: nvml.nvmlDeviceGetHandleByIndex(gpu) for gpu in gpus}
        self.limits = {gpu: read_limits(nvml, handle) for gpu, handle in self._handles.items()}
        self._changed: dict[int, set[str]] = {}
        self.restore_errors: list[str] = []
        atexit.register(self.restore_all)

    def check(self, setting: DvfsSetting, gpu_roles: Mapping[int, str]) -> list[str]:
        """Validate a setting on the GPUs it would touch (``DvfsError`` if impossible); notes for clamping."""
        return [note for gpu, role in gpu_roles.items() for note in self.limits[gpu].check(gpu, setting.for_role(role))]

    def check_permission(self) -> None:
        """Setting each GPU's power limit to the limit it has changes nothing but fails without the right."""
        for gpu, handle in self._handles.items():
            try:
                self._nvml.nvmlDeviceSetPowerManagementLimit(handle, round(self.limits[gpu].found_power_limit_w * 1000))
            except self._nvml.NVMLError as error:
                raise DvfsError(
                    f"GPU {gpu}: no permission to change clocks or power limits ({error}). Run as root (or with "
                    "the rights nvidia-smi -lgc needs), or leave out --sm-clocks/--mem-clocks/--power-limits; "
                    "--dvfs-dry-run checks a sweep without changing anything"
                ) from None

    @contextmanager
    def applied(self, setting: DvfsSetting, gpu_roles: Mapping[int, str]) -> Iterator[dict[str, Any]]:
        """Apply ``setting`` for the duration of the block, then restore what was found, whatever happens."""
        record: dict[str, Any] = {"setting": setting.id, "gpus": {}, "clamped": [], "refused": []}
        try:
            for gpu, role in gpu_roles.items():
                record["gpus"][str(gpu)] = self._apply(gpu, role, setting.for_role(role), record)
            yield record
        finally:
            self.restore_all()

    def _apply(self, gpu: int, role: str, setting: GpuSetting, record: dict[str, Any]) -> dict[str, Any]:
        nvml, handle = self._nvml, self._handles[gpu]
        record["clamped"] += self.limits[gpu].check(gpu, setting)
        steps = [
            ("mem_clock", setting.mem_clock_mhz, nvml.nvmlDeviceSetMemoryLockedClocks, (setting.mem_clock_mhz,) * 2),
            ("sm_clock", setting.sm_clock_mhz, nvml.nvmlDeviceSetGpuLockedClocks, (setting.sm_clock_mhz,) * 2),
            ("power_limit", setting.power_limit_w, nvml.nvmlDeviceSetPowerManagementLimit,
             (None if setting.power_limit_w is None else setting.power_limit_w * 1000,)),
        ]  # fmt: skip
        for what, asked, set_call, args in steps:
            if asked is None:
                continue
            self._remember(gpu, what)
            try:
                set_call(handle, *args)
            except nvml.NVMLError as error:
                record["refused"].append(f"GPU {gpu}: {what} {asked}: {error}")
        return {"role": role, "asked": asdict(setting), "readback": self.read_back(gpu)}

    def read_back(self, gpu: int) -> dict[str, float]:
        """What the GPU reports now (an idle GPU may run below a locked SM clock: the benchmark's mean SM clock in
        its power entry is the observed one)."""
        nvml, handle = self._nvml, self._handles[gpu]
        return {
            "sm_clock_mhz": int(nvml.nvmlDeviceGetClockInfo(handle, nvml.NVML_CLOCK_SM)),
            "mem_clock_mhz": int(nvml.nvmlDeviceGetClockInfo(handle, nvml.NVML_CLOCK_MEM)),
            "power_limit_w": nvml.nvmlDeviceGetPowerManagementLimit(handle) / 1000.0,
        }

    def _remember(self, gpu: int, what: str) -> None:
        """Note a knob before changing it, in memory and in the state file that outlives a ``kill -9``."""
        self._changed.setdefault(gpu, set()).add(what)
        state = {
            "pid": os.getpid(),
            "gpus": {str(g): {"found_power_limit_w": self.limits[g].found_power_limit_w} for g in self._handles},
            "changed": {str(g): sorted(knobs) for g, knobs in self._changed.items()},
        }
        self._state_path.parent.mkdir(parents=True, exist_ok=True)
        self._state_path.write_text(json.dumps(state, indent=1))

    def restore_all(self) -> None:
        """Put back every knob changed since the last restore; safe to call any number of times."""
        for gpu, knobs in list(self._changed.items()):
            self.restore_errors += restore_gpu(
                self._nvml, self._handles[gpu], gpu, knobs, self.limits[gpu].found_power_limit_w
            )
            del self._changed[gpu]
        if not self.restore_errors and not self._changed:
            self._state_path.unlink(missing_ok=True)  # ours: the constructor refused to start over another's

    def close(self) -> None:
        self.restore_all()
        atexit.unregister(self.restore_all)
        self._nvml.nvmlShutdown()


def restore_gpu(nvml: ModuleType, handle: Any, gpu: int, knobs: set[str], power_limit_w: float) -> list[str]:
    """Reset the changed knobs of one GPU; the errors, if any, as messages (one failure must not stop the rest)."""
    calls = {
        "sm_clock": (nvml.nvmlDeviceResetGpuLockedClocks, ()),
        "mem_clock": (nvml.nvmlDeviceResetMemoryLockedClocks, ()),
        "power_limit": (nvml.nvmlDeviceSetPowerManagementLimit, (round(power_limit_w * 1000),)),
    }
    errors = []
    for knob in sorted(knobs):
        call, args = calls[knob]
        try:
            call(handle, *args)
        except nvml.NVMLError as error:
            errors.append(f"GPU {gpu}: restoring {knob} failed: {error}; run python -m plugin.dvfs restore")
    return errors


def restore_from_state(nvml: ModuleType, state_dir: Path, gpus: Sequence[int] = ()) -> list[str]:
    """After a crash: reset what the state file says was changed (with the power limits found then), or, with
    no state file, the clocks and the default power limit of ``gpus``. Returns what was done."""
    state_path = state_dir / STATE_FILE
    nvml.nvmlInit()
    try:
        if state_path.is_file():
            state = json.loads(state_path.read_text())
            plan = {
                int(gpu): (set(knobs), float(state["gpus"][gpu]["found_power_limit_w"]))
                for gpu, knobs in state["changed"].items()
            }
        elif gpus:
            plan = {
                gpu: ({"sm_clock", "mem_clock", "power_limit"},
                      nvml.nvmlDeviceGetPowerManagementDefaultLimit(nvml.nvmlDeviceGetHandleByIndex(gpu)) / 1000.0)
                for gpu in gpus
            }  # fmt: skip
        else:
            raise DvfsError(f"no {state_path}: nothing recorded to restore; name GPUs with --gpus to reset them")
        done, errors = [], []
        for gpu, (knobs, limit_w) in plan.items():
            errors += restore_gpu(nvml, nvml.nvmlDeviceGetHandleByIndex(gpu), gpu, knobs, limit_w)
            done.append(f"GPU {gpu}: reset {', '.join(sorted(knobs))} (power limit {limit_w:g} W)")
        if errors:
            raise DvfsError("; ".join(errors))
        state_path.unlink(missing_ok=True)
        return done
    finally:
        nvml.nvmlShutdown()


def main(argv: list[str] | None = None) -> None:
    """``python -m plugin.dvfs restore [--reports-dir reports] [--gpus 0,1]``."""
    import argparse

    from plugin.nvml_loader import load_nvml

    parser = argparse.ArgumentParser(prog="python -m plugin.dvfs", description=main.__doc__)
    parser.add_argument("command", choices=["restore"])
    parser.add_argument("--reports-dir", type=Path, default=Path("reports"), help=f"where {STATE_FILE} is")
    parser.add_argument("--gpus", default="", help="GPUs to reset when there is no state file, e.g. 0,1")
    args = parser.parse_args(argv)
    try:
        gpus = [int(gpu) for gpu in args.gpus.split(",") if gpu.strip()]
        for line in restore_from_state(load_nvml(), args.reports_dir, gpus):
            print(line)
    except (DvfsError, ValueError) as error:
        parser.exit(1, f"error: {error}\n")


def preflight(
    nvml: ModuleType,
    plans: Sequence[tuple[str, Sequence[DvfsSetting], Mapping[int, str]]],
    dry_run: bool,
    state_dir: Path,
) -> list[str]:
    """Check every setting of every architecture's sweep against its GPUs before anything starts (``DvfsError``
    when one cannot be made), and the right to change them unless it is a dry run; returns the plan as lines."""
    gpus = sorted({gpu for _, _, roles in plans for gpu in roles})
    if not gpus:
        raise DvfsError("DVFS needs NVIDIA GPUs: this run uses none (see --gpus, --prefill-gpus, --decode-gpus)")
    controller = DvfsController(nvml, gpus, state_dir)
    try:
        lines = []
        for architecture, settings, roles in plans:
            for setting in settings:
                notes = controller.check(setting, roles)
                targets = ", ".join(f"GPU {gpu} ({role}): {setting.for_role(role).id}" for gpu, role in roles.items())
                lines.append(f"{architecture} {setting.id}: {targets}" + "".join(f"; {note}" for note in notes))
        if not dry_run:
            controller.check_permission()
        return lines
    finally:
        controller.close()


if __name__ == "__main__":
    main()

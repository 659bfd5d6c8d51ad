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
import json
import os
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import asdict
from pathlib import Path
from types import ModuleType
from typing import Any

from plugin.dvfs.plan import DvfsError, DvfsSetting, GpuSetting, read_limits

STATE_FILE = "dvfs-state.json"


class DvfsController:
    """Applies settings to the run's GPUs and restores them; the one place that calls an NVML set function."""

    def __init__(self, nvml: ModuleType, gpus: Sequence[int], state_dir: Path) -> None:
        """Refuses to start over a state file left by a run that could not restore (its "found" values would be
        the changed ones): that run's settings must be restored first."""
        self._state_path = state_dir / STATE_FILE
        if self._state_path.is_file():
            raise DvfsError(
                f"{self._state_path} says an earlier run left GPU settings changed; restore them first with "
                f"python -m plugin.dvfs.controller restore --reports-dir {state_dir}"
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
            errors.append(f"GPU {gpu}: restoring {knob} failed: {error}; run python -m plugin.dvfs.controller restore")
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

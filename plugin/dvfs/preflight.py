"""The DVFS check before anything starts: every planned setting against the GPUs' ranges, and the right to
change them (skipped in a dry run, which only reads)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from types import ModuleType

from plugin.dvfs.controller import DvfsController
from plugin.dvfs.plan import DvfsError, DvfsSetting


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

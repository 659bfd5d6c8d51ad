"""``python -m plugin.dvfs restore``: put GPUs back as found after a run that no handler could clean up
(``kill -9``)."""

from __future__ import annotations

from pathlib import Path

from plugin.dvfs.controller import STATE_FILE, restore_from_state
from plugin.dvfs.plan import DvfsError


def main(argv: list[str] | None = None) -> None:
    """``python -m plugin.dvfs restore [--reports-dir reports] [--gpus 0,1]``."""
    import argparse

    from plugin.power.nvml_loader import load_nvml

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


if __name__ == "__main__":
    main()

"""``python -m plugin.serving.cleanup [REPORTS_DIR] [--ray-address ADDR]``: stop servers left running by a run that
no handler could end (``kill -9`` of pytest). It reads the pid files that ``plugin.serving.process`` writes into
each run folder; with ``--ray-address``, on every host of that Ray cluster (``ray_placement.cleanup_all_nodes``)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from plugin.serving.process import PID_SUFFIX, command_line, group_pids, kill_group


def cleanup(reports_dir: Path, grace_s: float = 10.0) -> list[str]:
    """Stop every recorded process group that still runs vLLM; remove stale pid files. Returns what it did."""
    done: list[str] = []
    for pid_file in sorted(reports_dir.glob(f"*/pids/*{PID_SUFFIX}")):
        try:
            pgid = int(pid_file.read_text().strip())
        except ValueError:
            pid_file.unlink()
            continue
        # The pid may have been reused by an unrelated process since: only stop what is still a vLLM server.
        if any("vllm" in command_line(pid).lower() for pid in group_pids(pgid)):
            kill_group(pgid, grace_s)
            done.append(f"stopped process group {pgid} ({pid_file})")
        pid_file.unlink()
    return done


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m plugin.serving.cleanup", description=__doc__)
    parser.add_argument("reports_dir", nargs="?", default="reports", type=Path)
    parser.add_argument("--ray-address", help="run the cleanup on every host of this Ray cluster (ADDR or auto)")
    args = parser.parse_args(argv)
    if args.ray_address:
        from plugin.serving.ray_placement import cleanup_all_nodes

        actions = cleanup_all_nodes(args.ray_address, args.reports_dir)
    else:
        actions = cleanup(args.reports_dir)
    print("\n".join(actions) if actions else f"no leftover servers recorded under {args.reports_dir}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

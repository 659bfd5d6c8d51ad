"""``python -m plugin.serving.cleanup [REPORTS_DIR] [--ray-address ADDR]``: stop servers left running by a run that
no handler could end (``kill -9`` of pytest). It reads the pid files that ``plugin.serving.process`` writes into
each run folder; with ``--ray-address``, on every host of that Ray cluster (``cleanup_all_nodes``)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from plugin.errors import BenchError
from plugin.serving.process import PID_SUFFIX, command_line, group_pids, kill_group
from plugin.serving.ray_placement import RayPlacement, pinned, require_reachable


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


def _cleanup_here(reports_dir: str) -> list[str]:
    # By name: run as ``python -m``, this module is ``__main__``, which Ray ships to the nodes by value.
    from plugin.serving.cleanup import cleanup as on_this_host

    return on_this_host(Path(reports_dir))


def cleanup_all_nodes(address: str, reports_dir: Path) -> list[str]:
    """``cleanup`` on every host of the cluster (one task pinned to one node of each IP: nodes of one host share
    its disk); what each did, by host. A crashed driver's actors are ended by Ray, and their watchdogs end the
    servers: this is for what even that missed."""
    import ray

    placement = RayPlacement(address)
    try:
        task = ray.remote(_cleanup_here)
        hosts = list({node.address: node for node in placement.nodes()}.values())
        refs = [task.options(**pinned(node, 0)).remote(str(reports_dir.resolve())) for node in hosts]
        pairs = zip(hosts, ray.get(refs), strict=True)
        return [f"{node.address}: {line}" for node, lines in pairs for line in lines]
    finally:
        placement.close()


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m plugin.serving.cleanup", description=__doc__)
    parser.add_argument("reports_dir", nargs="?", default="reports", type=Path)
    parser.add_argument("--ray-address", help="run the cleanup on every host of this Ray cluster (ADDR or auto)")
    args = parser.parse_args(argv)
    if args.ray_address:
        try:
            require_reachable(args.ray_address)
        except BenchError as error:
            parser.error(str(error))
        actions = cleanup_all_nodes(args.ray_address, args.reports_dir)
    else:
        actions = cleanup(args.reports_dir)
    print("\n".join(actions) if actions else f"no leftover servers recorded under {args.reports_dir}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

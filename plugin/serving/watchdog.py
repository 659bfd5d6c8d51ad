"""``python -m plugin.serving.watchdog PARENT_PID PGID GRACE_S``: ends a server's process group when the process
that started it (a Ray actor) dies without stopping it.

Ray SIGKILLs a dead worker's own children, the server's leader among them, but not their children (vLLM's engine
core). So the watchdog forks out of the actor's children (the command returns once it is armed) and, in a session
of its own, polls the parent (by pid and start time: a pid may be reused) and the group every ``POLL_S``; when the
parent is gone it stops the group (SIGTERM, then SIGKILL after ``GRACE_S``). It ignores SIGTERM and exits when
the group is gone: a plain stop of the server ends it too.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import time
from pathlib import Path

from plugin.serving.process import group_alive, kill_group

POLL_S = 0.2


def started_at(pid: int) -> str | None:
    """The process's start time in clock ticks since boot (``/proc/PID/stat`` field 22); ``None`` when it is gone."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return None


def watch(parent: int, birth: str | None, pgid: int, grace_s: float, poll_s: float = POLL_S) -> bool:
    """Until the group is gone: stop it if ``parent`` (started at ``birth``) is gone first. Whether it did."""
    while group_alive(pgid):
        if started_at(parent) != birth:
            kill_group(pgid, grace_s)
            return True
        time.sleep(poll_s)
    return False


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m plugin.serving.watchdog", description=__doc__)
    parser.add_argument("parent_pid", type=int, help="the process whose death ends the group")
    parser.add_argument("pgid", type=int, help="the server's process group")
    parser.add_argument("grace_s", type=float, help="seconds between SIGTERM and SIGKILL")
    args = parser.parse_args(argv)
    birth = started_at(args.parent_pid)
    if os.fork():
        return 0  # armed: the child watches, out of the parent's children
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    watch(args.parent_pid, birth, args.pgid, args.grace_s)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

"""``python -m plugin.serving.watchdog``: a server's group ends when the process that started it dies without
stopping it (a Ray actor killed, its driver gone), also the part that ignores SIGTERM; a plain stop ends the
watchdog too."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest

from plugin.serving.process import ManagedProcess, group_pids, start
from tests.conftest import ROOT

GRACE_S = 0.5
pytestmark = pytest.mark.slow  # a few seconds: processes started and stopped with grace periods


def stubborn_server(folder: Path) -> ManagedProcess:
    """A stand-in server whose group also holds a child that ignores SIGTERM: only a SIGKILL of the group ends it."""
    script = "(trap '' TERM; exec sleep 600) & exec sleep 600"
    return start("server", ["sh", "-c", script], {}, folder / "server.log", folder / "pids")


def arm(parent: int, pgid: int, folder: Path) -> None:
    """The watchdog as the actor runs it; it returns once armed (forked away)."""
    watch = [sys.executable, "-m", "plugin.serving.watchdog", str(parent), str(pgid), str(GRACE_S)]
    subprocess.run(watch, cwd=ROOT, check=True, timeout=30, start_new_session=True)


def watchdogs_of(pgid: int) -> list[int]:
    """Watchdog processes watching the group ``pgid``."""
    done = subprocess.run(["pgrep", "-f", f"plugin.serving.watchdog [0-9]+ {pgid} "], capture_output=True, text=True)
    return [int(pid) for pid in done.stdout.split()]


def wait_until_empty(server: ManagedProcess, timeout_s: float = 10.0) -> list[int]:
    """What is left of the server's group and its watchdog after up to ``timeout_s``. The server's leader is this
    test's child: reaped here (on a node, its parent being dead, init reaps it)."""
    deadline = time.monotonic() + timeout_s
    while (group_pids(server.pid) or watchdogs_of(server.pid)) and time.monotonic() < deadline:
        server.popen.poll()
        time.sleep(0.1)
    return group_pids(server.pid) + watchdogs_of(server.pid)


def test_the_server_ends_when_its_parent_dies(tmp_path: Path) -> None:
    parent = subprocess.Popen(["sleep", "600"])
    server = stubborn_server(tmp_path)
    try:
        time.sleep(0.2)  # the shell has forked its stubborn child
        arm(parent.pid, server.pid, tmp_path)
        assert len(group_pids(server.pid)) == 2 and watchdogs_of(server.pid)
        time.sleep(0.5)
        assert len(group_pids(server.pid)) == 2  # the parent lives: nothing stopped
        parent.kill()
        parent.wait()  # reaped, as Ray's raylet reaps a dead worker
        assert wait_until_empty(server) == []
    finally:
        parent.kill()
        server.stop(grace_s=1)


def test_the_watchdog_ends_with_the_group_it_watches(tmp_path: Path) -> None:
    server = stubborn_server(tmp_path)
    try:
        arm(1, server.pid, tmp_path)  # init: a parent that outlives the test
        assert watchdogs_of(server.pid)
        server.stop(grace_s=GRACE_S)
        assert wait_until_empty(server, timeout_s=5) == []
    finally:
        server.stop(grace_s=1)

"""The only place that spawns processes: start in a new process group with a log file, wait until ready, stop.

Servers get a process group of their own so that stopping them also stops their children (vLLM's engine
core and workers), and a parent-death signal so that a ``kill -9`` of pytest still ends them. Their process
group ids go into a pid file in the run folder, which ``python -m plugin.serving.cleanup`` reads after a crash.
"""

from __future__ import annotations

import ctypes
import os
import signal
import subprocess
import time
import urllib.error
import urllib.request
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from plugin.errors import ServerStartError

PID_SUFFIX = ".pid"
_PR_SET_PDEATHSIG = 1


def _die_with_parent() -> None:
    """Runs in the child before exec: Linux sends it SIGTERM when the process that started it dies."""
    try:
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)
    except OSError:
        pass  # not Linux: the pid file and the cleanup command remain


def log_tail(path: Path, lines: int = 30) -> str:
    try:
        with path.open(errors="replace") as log:
            return "".join(deque(log, maxlen=lines))
    except OSError:
        return "(no log)"


@dataclass
class ManagedProcess:
    """A started server: its Popen, the log it writes and the pid file that records its process group."""

    name: str
    popen: subprocess.Popen[bytes]
    log_path: Path
    pid_path: Path
    _stopped: bool = field(default=False, repr=False)

    @property
    def pid(self) -> int:
        return self.popen.pid

    def exit_code(self) -> int | None:
        return self.popen.poll()

    def tail(self, lines: int = 30) -> str:
        return log_tail(self.log_path, lines)

    def stop(self, grace_s: float = 20.0) -> None:
        """SIGTERM the whole process group, then SIGKILL what is left after ``grace_s``; safe to call twice."""
        if self._stopped:
            return
        self._stopped = True
        kill_group(self.popen.pid, grace_s, reap=self.popen.poll)
        self.popen.wait(timeout=grace_s)
        self.pid_path.unlink(missing_ok=True)


class ServerProcess(Protocol):
    """What the suite checks and stops of a server: a ``ManagedProcess`` here, or an instance on a Ray node."""

    @property
    def name(self) -> str: ...
    @property
    def log_path(self) -> Path: ...
    def exit_code(self) -> int | None: ...
    def tail(self, lines: int = 30) -> str: ...
    def stop(self) -> None: ...


def group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def group_pids(pgid: int) -> list[int]:
    """Processes whose process group is ``pgid``, read from /proc (the leader may be gone, its children not)."""
    pids = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            # The command name in parentheses may hold spaces; the fields after it are fixed.
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if int(fields[2]) == pgid:
            pids.append(int(stat.parent.name))
    return pids


def command_line(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


def kill_group(pgid: int, grace_s: float, reap: Callable[[], object] = lambda: None) -> None:
    """SIGTERM the group, wait up to ``grace_s`` for it to empty, then SIGKILL it.

    ``reap`` collects the group leader when it is our own child: a zombie leader keeps the group alive.
    """
    try:
        os.killpg(pgid, signal.SIGTERM)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + grace_s
    while time.monotonic() < deadline:
        reap()
        if not group_alive(pgid):
            return
        time.sleep(0.1)
    try:
        os.killpg(pgid, signal.SIGKILL)
    except ProcessLookupError:
        return
    while group_alive(pgid) and time.monotonic() < deadline + 5:
        reap()
        time.sleep(0.05)


def start(
    name: str,
    command: list[str],
    env: dict[str, str],
    log_path: Path,
    pid_dir: Path,
) -> ManagedProcess:
    log_path.parent.mkdir(parents=True, exist_ok=True)
    pid_dir.mkdir(parents=True, exist_ok=True)
    with log_path.open("ab") as log:
        log.write(f"$ {' '.join(command)}\n".encode())
        log.flush()
        popen = subprocess.Popen(
            command,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            env=env,
            start_new_session=True,
            preexec_fn=_die_with_parent,
        )
    pid_path = pid_dir / f"{name}{PID_SUFFIX}"
    pid_path.write_text(f"{popen.pid}\n")
    return ManagedProcess(name=name, popen=popen, log_path=log_path, pid_path=pid_path)


def http_ok(url: str, timeout_s: float = 2.0) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=timeout_s) as response:
            return bool(response.status == 200)
    except (urllib.error.URLError, OSError, ValueError):
        return False


PORT_TAKEN = "Address already in use"


def _fail_if_port_taken(process: ManagedProcess, hint: str) -> None:
    """A vLLM whose NIXL side channel could not bind its port lives on but never becomes ready (on 4 H100s it
    loaded for 315 s after its log had said so): stop waiting at the first check that sees it."""
    tail = log_tail(process.log_path)
    if PORT_TAKEN in tail:
        raise ServerStartError(
            f"{process.name} could not bind a port it needs ({PORT_TAKEN!r}) and will not become ready: another "
            f"program took the port. What to do: run again (ports are chosen anew each run).\n"
            f"Last lines of {process.log_path}:\n{tail}\n{hint}"
        )


def wait_ready(
    process: ManagedProcess,
    health_url: str,
    timeout_s: float,
    hint: str,
    poll_s: float = 0.5,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
    probe: Callable[[str], bool] = http_ok,
    report: Callable[[str], None] | None = None,
    report_every_s: float = 15.0,
) -> None:
    """Poll ``health_url`` until it answers 200; fail at once if the process exits, or after ``timeout_s``.

    ``report`` is told where the log is, that the server is still loading (every ``report_every_s``; a large
    model takes minutes, which must not look like a hang) and when it is ready.
    """
    say = report or (lambda text: None)
    started = clock()
    deadline = started + timeout_s
    next_report = started + report_every_s
    say(f"starting {process.name}, log: {process.log_path}")
    while True:
        code = process.exit_code()
        if code is not None:
            raise ServerStartError(
                f"{process.name} exited with code {code} before it was ready.\n"
                f"Last lines of {process.log_path}:\n{log_tail(process.log_path)}\n{hint}"
            )
        if probe(health_url):
            say(f"{process.name} ready after {clock() - started:.0f} s")
            return
        now = clock()
        if now >= next_report:
            _fail_if_port_taken(process, hint)
            say(f"still loading {process.name} ({now - started:.0f} s)")
            while next_report <= now:
                next_report += report_every_s
        if now >= deadline:
            raise ServerStartError(
                f"{process.name} was not ready at {health_url} after {timeout_s:.0f} s.\n"
                f"Last lines of {process.log_path}:\n{log_tail(process.log_path)}\n{hint}"
            )
        sleep(poll_s)

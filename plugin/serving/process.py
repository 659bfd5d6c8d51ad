"""The only place that spawns processes: start in a new process group with a log file, wait until ready, stop.

Servers get a session (so a process group) of their own, so that stopping them also stops their children (vLLM's
engine core and workers), and a ``python -m plugin.serving.watchdog`` that ends the group if the process that started
it dies (``kill -9`` of pytest). No ``preexec_fn``: code run in a child forked from a threaded parent may deadlock
(Python's subprocess docs); the watchdog is a fresh process. Their process group ids go into a pid file in the run
folder, which ``python -m plugin.serving.cleanup`` reads after a crash. A stop is shielded from SIGINT and SIGTERM
(``shielded``): a second Ctrl-C while servers stop must not leave one running.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections import deque
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import IO, Protocol

from plugin.errors import ServerStartError

PID_SUFFIX = ".pid"
STOP_GRACE_S = 20.0
_PACKAGE_ROOT = Path(__file__).resolve().parents[2]
_SHIELDED_SIGNALS = (signal.SIGINT, signal.SIGTERM)


class _Deferred:
    """The signal handler while servers stop: it notes the signal (the stop re-raises it when done) and says why
    the run does not end at once."""

    def __init__(self) -> None:
        self.signum: int | None = None

    def __call__(self, signum: int, frame: FrameType | None) -> None:
        self.signum = signum
        print("pd-energy-bench: stopping the servers first; the run ends when they are down", file=sys.stderr)


@contextmanager
def shielded(interrupt_after: bool = True) -> Iterator[None]:
    """SIGINT and SIGTERM wait until the block is done, then end the run as Ctrl-C does (``KeyboardInterrupt``), or
    without ``interrupt_after`` are dropped (the run's last teardown: it ends anyway, and an interrupt raised there
    would skip the teardown after it). A nested block runs under the outermost one's shield; off the main thread
    (which gets no signals) it does nothing."""
    if threading.current_thread() is not threading.main_thread() or isinstance(
        signal.getsignal(signal.SIGINT), _Deferred
    ):
        yield
        return
    deferred = _Deferred()
    previous = {signum: signal.signal(signum, deferred) for signum in _SHIELDED_SIGNALS}
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, signal.SIG_DFL if handler is None else handler)
    if deferred.signum is not None and interrupt_after:
        raise KeyboardInterrupt(f"signal {deferred.signum}, held until the servers had stopped")


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
    grace_s: float = STOP_GRACE_S
    _stopped: bool = field(default=False, repr=False)

    @property
    def pid(self) -> int:
        return self.popen.pid

    def exit_code(self) -> int | None:
        return self.popen.poll()

    def tail(self, lines: int = 30) -> str:
        return log_tail(self.log_path, lines)

    def stop(self, grace_s: float | None = None) -> None:
        """SIGTERM the whole process group, then SIGKILL what is left after ``grace_s`` (default: the one it was
        started with); shielded from a second Ctrl-C, safe to call twice, and done again if a stop was cut short."""
        if self._stopped:
            return
        grace = self.grace_s if grace_s is None else grace_s
        with shielded():
            kill_group(self.popen.pid, grace, reap=self.popen.poll)
            self.popen.wait(timeout=grace)
            self.pid_path.unlink(missing_ok=True)
            self._stopped = True


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
    grace_s: float = STOP_GRACE_S,
    watch: bool = True,
) -> ManagedProcess:
    """Start ``command`` in a session of its own, logging to ``log_path``, its pid in ``pid_dir``; with ``watch``,
    a watchdog ends its group (SIGTERM, SIGKILL after ``grace_s``) if this process dies first."""
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
        )
        pid_path = pid_dir / f"{name}{PID_SUFFIX}"
        pid_path.write_text(f"{popen.pid}\n")
        if watch:
            try:
                arm_watchdog(popen.pid, grace_s, log)
            except (OSError, subprocess.SubprocessError) as error:
                kill_group(popen.pid, 0.0, reap=popen.poll)
                pid_path.unlink(missing_ok=True)
                raise ServerStartError(f"{name}: its watchdog did not start ({error}); see {log_path}") from None
    return ManagedProcess(name=name, popen=popen, log_path=log_path, pid_path=pid_path, grace_s=grace_s)


def arm_watchdog(pgid: int, grace_s: float, log: IO[bytes]) -> None:
    """``python -m plugin.serving.watchdog`` for the group ``pgid`` and this process; returns once it is armed."""
    watch = [sys.executable, "-m", "plugin.serving.watchdog", str(os.getpid()), str(pgid), str(grace_s)]
    env = {**os.environ, "PYTHONPATH": str(_PACKAGE_ROOT)}
    subprocess.run(
        watch, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True,
        check=True, timeout=60,
    )  # fmt: skip


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

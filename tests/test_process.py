"""Process lifecycle on real child processes: readiness, early exit, time-out, group stop (also through a second
Ctrl-C), the group ended after kill -9 of its parent, cleanup after kill -9."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from plugin.errors import ServerStartError
from plugin.serving.cleanup import cleanup
from plugin.serving.cleanup import main as cleanup_main
from plugin.serving.process import ManagedProcess, group_pids, kill_group, shielded, start, wait_ready
from plugin.serving.servers import free_port
from tests.conftest import ROOT

# A server that also starts a child, like vLLM's API server and its engine core: both must go on stop.
SERVER_WITH_CHILD = """
import http.server, subprocess, sys
subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
print("serving", flush=True)
http.server.HTTPServer(("127.0.0.1", int(sys.argv[1])), http.server.SimpleHTTPRequestHandler).serve_forever()
"""
IGNORES_SIGTERM = (
    "import signal, time\nsignal.signal(signal.SIGTERM, signal.SIG_IGN)\nprint('ignoring SIGTERM', flush=True)\n"
    "time.sleep(600)\n"
)


def wait_for_line(log: Path, line: str, timeout_s: float = 30.0) -> None:
    """Until the process wrote ``line`` to its log: a fixed sleep loses the race on a loaded machine."""
    deadline = time.monotonic() + timeout_s
    while not (log.exists() and line in log.read_text()):
        assert time.monotonic() < deadline, f"{log} never said {line!r}"
        time.sleep(0.05)


def spawn(tmp_path: Path, code: str, *args: str) -> ManagedProcess:
    return start("server", [sys.executable, "-c", code, *args], dict(os.environ), tmp_path / "s.log", tmp_path / "pids")


def test_ready_server_is_stopped_with_its_children(tmp_path: Path) -> None:
    port = free_port()
    process = spawn(tmp_path, SERVER_WITH_CHILD, str(port))
    try:
        wait_ready(process, f"http://127.0.0.1:{port}/", timeout_s=30, hint="")
        assert (tmp_path / "pids" / "server.pid").read_text().strip() == str(process.pid)
        deadline = time.monotonic() + 10
        while len(group_pids(process.pid)) < 2 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert len(group_pids(process.pid)) == 2
    finally:
        process.stop()
    assert group_pids(process.pid) == []
    assert not (tmp_path / "pids" / "server.pid").exists()
    assert "serving" in (tmp_path / "s.log").read_text()


def test_exit_before_ready_shows_code_log_and_hint(tmp_path: Path) -> None:
    process = spawn(tmp_path, "import sys; print('model not found: /x'); sys.exit(3)")
    with pytest.raises(ServerStartError) as failure:
        wait_ready(process, "http://127.0.0.1:9/health", timeout_s=30, hint="What to do: check --model")
    process.stop()
    message = str(failure.value)
    assert "exited with code 3" in message
    assert "model not found: /x" in message
    assert "What to do: check --model" in message


def test_not_ready_in_time_fails_without_waiting_for_real(tmp_path: Path) -> None:
    process = spawn(tmp_path, "import time; time.sleep(600)")
    now = [0.0]
    try:
        with pytest.raises(ServerStartError, match="was not ready at .* after 5 s"):
            wait_ready(
                process,
                "http://unused/health",
                timeout_s=5,
                hint="",
                clock=lambda: now[0],
                sleep=lambda seconds: now.__setitem__(0, now[0] + seconds),
                probe=lambda url: False,
            )
        assert now[0] >= 5
    finally:
        process.stop()


def test_waiting_reports_the_log_loading_every_15_s_and_ready(tmp_path: Path) -> None:
    process = spawn(tmp_path, "import time; time.sleep(600)")
    now = [100.0]
    said: list[str] = []
    try:
        wait_ready(
            process,
            "http://unused/health",
            timeout_s=900,
            hint="",
            poll_s=2.0,
            clock=lambda: now[0],
            sleep=lambda seconds: now.__setitem__(0, now[0] + seconds),
            probe=lambda url: now[0] >= 140,
            report=said.append,
        )
    finally:
        process.stop()
    assert said == [
        f"starting server, log: {tmp_path / 's.log'}",
        "still loading server (16 s)",
        "still loading server (30 s)",
        "server ready after 40 s",
    ]


def test_a_server_that_fails_to_load_was_announced_first(tmp_path: Path) -> None:
    process = spawn(tmp_path, "import sys; sys.exit(1)")
    process.popen.wait()
    said: list[str] = []
    with pytest.raises(ServerStartError, match="exited with code 1"):
        wait_ready(process, "http://unused/health", timeout_s=30, hint="", report=said.append)
    process.stop()
    assert said == [f"starting server, log: {tmp_path / 's.log'}"]


def test_a_process_that_ignores_sigterm_is_killed(tmp_path: Path) -> None:
    process = spawn(tmp_path, IGNORES_SIGTERM)
    wait_for_line(tmp_path / "s.log", "ignoring SIGTERM")
    process.stop(grace_s=1.0)
    assert process.exit_code() == -signal.SIGKILL
    assert group_pids(process.pid) == []


def test_cleanup_stops_servers_left_by_a_killed_run(tmp_path: Path) -> None:
    run_folder = tmp_path / "reports" / "run-1"
    # Started outside ManagedProcess, as a server survives a `kill -9` of pytest; "vllm" is in its command line.
    orphan = subprocess.Popen(
        [sys.executable, "-c", "import time; time.sleep(600)", "vllm.entrypoints.openai.api_server"],
        start_new_session=True,
    )
    (run_folder / "pids").mkdir(parents=True)
    (run_folder / "pids" / "server.pid").write_text(f"{orphan.pid}\n")
    unrelated = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"], start_new_session=True)
    (run_folder / "pids" / "other.pid").write_text(f"{unrelated.pid}\n")
    try:
        actions = cleanup(tmp_path / "reports", grace_s=5)
        assert orphan.wait(timeout=10) == -signal.SIGTERM
        assert actions == [f"stopped process group {orphan.pid} ({run_folder / 'pids' / 'server.pid'})"]
        assert unrelated.poll() is None  # not a vLLM server: a reused pid must not be killed
        assert list((run_folder / "pids").iterdir()) == []
    finally:
        for process in (orphan, unrelated):
            process.kill()
            process.wait()


def test_a_server_stuck_on_a_taken_port_fails_at_the_next_report(tmp_path: Path) -> None:
    process = spawn(
        tmp_path, "import time; print('zmq.error.ZMQError: Address already in use', flush=True); time.sleep(600)"
    )
    now = [0.0]
    try:
        deadline = time.monotonic() + 30
        while "Address already in use" not in process.log_path.read_text() and time.monotonic() < deadline:
            time.sleep(0.05)
        with pytest.raises(ServerStartError, match="could not bind a port it needs") as failure:
            wait_ready(
                process,
                "http://unused/health",
                timeout_s=900,
                hint="",
                clock=lambda: now[0],
                sleep=lambda seconds: now.__setitem__(0, now[0] + seconds),
                probe=lambda url: False,
            )
        assert now[0] < 20  # at the first 15 s check, not after the 900 s timeout
        assert "Address already in use" in str(failure.value)
    finally:
        process.stop()


# A run in miniature: a server that ignores SIGTERM, stopped in a `finally` as the fixtures stop theirs.
RUN_WITH_STUBBORN_SERVER = """
import os, sys, time
from pathlib import Path
from plugin.serving.process import start
folder, server_code = Path(sys.argv[1]), sys.argv[2]
server = start("server", [sys.executable, "-c", server_code], dict(os.environ), folder / "s.log", folder / "pids",
               grace_s=float(sys.argv[3]))
while "ignoring SIGTERM" not in (folder / "s.log").read_text():
    time.sleep(0.05)
try:
    print(server.pid, flush=True)
    time.sleep(600)
finally:
    print("stopping", flush=True)
    server.stop()
"""
STUBBORN_CHILD = (
    "import os, signal, time\nos.fork()\nsignal.signal(signal.SIGTERM, signal.SIG_IGN)\n"
    "print('ignoring SIGTERM', flush=True)\ntime.sleep(600)\n"
)


def run_in_miniature(tmp_path: Path, server_code: str, grace_s: float) -> tuple[subprocess.Popen[str], int]:
    """The run and its server's process group."""
    run = subprocess.Popen(
        [sys.executable, "-c", RUN_WITH_STUBBORN_SERVER, str(tmp_path), server_code, str(grace_s)],
        cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)}, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        text=True,
    )  # fmt: skip
    assert run.stdout is not None
    return run, int(run.stdout.readline())


def end(run: subprocess.Popen[str], pgid: int) -> None:
    run.kill()
    run.communicate()
    kill_group(pgid, 0.0)


def live_pids(pgid: int) -> list[int]:
    """The group's processes that are not zombies (an orphan's zombie waits for init, which may not reap it here)."""
    return [pid for pid in group_pids(pgid) if state(pid) not in ("Z", None)]


def state(pid: int) -> str | None:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return None


@pytest.mark.slow
def test_a_second_ctrl_c_during_a_stop_leaves_no_server(tmp_path: Path) -> None:
    run, pgid = run_in_miniature(tmp_path, IGNORES_SIGTERM, grace_s=3.0)
    try:
        assert run.stdout is not None
        run.send_signal(signal.SIGINT)
        assert run.stdout.readline().strip() == "stopping"
        for _ in range(2):  # impatience, during the 3 s grace
            time.sleep(0.5)
            run.send_signal(signal.SIGINT)
        output, _ = run.communicate(timeout=30)
        assert live_pids(pgid) == []  # at once: not left to the watchdog after the run is gone
        assert "stopping the servers first" in output
        assert "KeyboardInterrupt" in output  # and the run still ends as Ctrl-C ends it
    finally:
        end(run, pgid)


@pytest.mark.slow
def test_a_killed_run_takes_its_whole_server_group_along(tmp_path: Path) -> None:
    run, pgid = run_in_miniature(tmp_path, STUBBORN_CHILD, grace_s=1.0)
    try:
        assert len(live_pids(pgid)) == 2
        run.kill()  # kill -9: no handler runs; the watchdog ends the group, the child that ignores SIGTERM too
        run.wait()
        deadline = time.monotonic() + 15
        while live_pids(pgid) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert live_pids(pgid) == []
    finally:
        end(run, pgid)


def test_a_stop_cut_short_is_done_by_the_next(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    process = spawn(tmp_path, "import time; time.sleep(600)")

    def interrupted(*args: object, **kwargs: object) -> None:
        raise KeyboardInterrupt

    with monkeypatch.context() as patch:
        patch.setattr("plugin.serving.process.kill_group", interrupted)
        with pytest.raises(KeyboardInterrupt):
            process.stop(grace_s=1.0)
    assert process.exit_code() is None
    process.stop(grace_s=1.0)
    assert process.exit_code() == -signal.SIGTERM
    assert group_pids(process.pid) == []


def test_a_signal_during_a_shielded_block_waits_for_its_end() -> None:
    done = []
    with pytest.raises(KeyboardInterrupt, match="held until the servers had stopped"):
        with shielded():
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(0.1)  # Python runs the handler between instructions here
            done.append("stopped")
    assert done == ["stopped"]
    with shielded(interrupt_after=False):  # the run's last teardown: dropped
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(0.1)
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # handlers restored


def test_cleanup_on_a_ray_address_where_nothing_listens_says_so_at_once(capsys: pytest.CaptureFixture[str]) -> None:
    port = free_port()
    with pytest.raises(SystemExit) as exit_:
        cleanup_main(["--ray-address", f"127.0.0.1:{port}"])
    assert exit_.value.code == 2
    assert f"--ray-address 127.0.0.1:{port}: nothing answers there" in capsys.readouterr().err

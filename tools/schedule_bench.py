"""Does the client keep to an open-loop schedule? Its send lag (send - due) against a fast local stub, at a fixed
rate and then at rising rates, on a machine of two cores: the client pinned to one, the stub to the other.

It starts ``tests/stub_upstream.py`` (token delay 0) on 127.0.0.1, runs ``run_schedule`` with Poisson arrivals
(``open_loop``, no concurrency cap) at ``--rate`` for ``--duration-s``, then at each of ``--step-rates`` for
``--step-duration-s``, stopping at the first rate the client no longer keeps up with: p99 send lag above
``--lag-limit-ms``, or the arrivals falling behind (the median lag of the last tenth of the arrivals above the
limit), or a failed request. It prints a markdown table and JSON, and asserts nothing.

    .venv/bin/python tools/schedule_bench.py [--out DIR]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import random
import sys
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from proxy_bench import cpu_seconds, machine_busy_s  # tools/ is this script's folder: the same /proc readings

from plugin.load.arrivals import open_loop
from plugin.load.client import run_schedule
from plugin.records.requests import RequestRecord
from plugin.serving.process import start, wait_ready
from plugin.serving.servers import free_port

ROOT = Path(__file__).resolve().parent.parent
TIMEOUT_S = 10.0


@dataclass(frozen=True, slots=True)
class RateRun:
    """One rate: what was asked, what was sent, and how late."""

    rate: float
    duration_s: float
    requests: int
    failed: int
    sent_rate: float
    """Requests sent per second, first send to last."""
    lag_p50_ms: float
    lag_p99_ms: float
    lag_max_ms: float
    late_over_limit: int
    """Requests sent more than the lag limit after they were due."""
    tail_lag_p50_ms: float
    """Median lag of the last tenth of the arrivals: above the limit, the schedule as a whole had fallen behind."""
    peak_in_flight: int
    client_cpu_pct: float
    stub_cpu_pct: float
    foreign_cpu_pct: float
    """CPU the rest of the machine used meanwhile, % of one core: other work that skews the figures."""
    kept_up: bool
    quiet_before: bool
    """Whether the machine had been idle (other work under 10 % of a core) for ``--quiet-s`` before the run."""


def wait_until_idle(quiet_s: float, limit_s: float, busy_pct: float = 10.0) -> bool:
    """Wait (at most ``limit_s``) until the whole machine has used under ``busy_pct`` % of one core for ``quiet_s``:
    other sessions share it. Whether it got quiet."""
    started = time.monotonic()
    quiet_since = started
    while time.monotonic() - started < limit_s:
        before, wall = machine_busy_s(), time.monotonic()
        time.sleep(0.5)
        if 100.0 * (machine_busy_s() - before) / (time.monotonic() - wall) > busy_pct:
            quiet_since = time.monotonic()
        elif time.monotonic() - quiet_since >= quiet_s:
            return True
    return False


@contextmanager
def stub_on(cpu: int | None, log_dir: Path) -> Iterator[tuple[str, int]]:
    """The stub, on its own core, answering 127.0.0.1 only; stopped (SIGTERM, then SIGKILL) on the way out."""
    port = free_port()
    command = [sys.executable, str(ROOT / "tests" / "stub_upstream.py"), "--port", str(port), "--token-delay-ms", "0"]
    process = start("stub", command, {**os.environ, "PYTHONPATH": str(ROOT)}, log_dir / "stub.log", log_dir)
    try:
        if cpu is not None:
            os.sched_setaffinity(process.pid, {cpu})
        url = f"http://127.0.0.1:{port}"
        wait_ready(process, f"{url}/health", timeout_s=30.0, hint="Read the log above.", poll_s=0.05)
        yield url, process.pid
    finally:
        process.stop(grace_s=5.0)


def peak_in_flight(records: Sequence[RequestRecord]) -> int:
    events = sorted([(r.send_s, 1) for r in records] + [(r.end_s, -1) for r in records])
    level = peak = 0
    for _, step in events:
        level += step
        peak = max(peak, level)
    return peak


def measure(
    url: str, stub_pid: int, rate: float, duration_s: float, args: argparse.Namespace, seed: int, quiet: bool
) -> RateRun:
    offsets = open_loop(rate, args.burstiness, random.Random(seed), duration_s=duration_s)
    # Unique prompts, as the real benchmarks send them (the stub does not care, but the bodies cost the same).
    requests = [([index % 50_000, 1, 2, 3, 4, 5, 6, 7], args.max_tokens) for index in range(len(offsets))]
    busy, client, stub, wall = machine_busy_s(), time.process_time(), cpu_seconds(stub_pid), time.perf_counter()
    records = asyncio.run(run_schedule(url, "stub-model", requests, offsets, None, TIMEOUT_S))
    wall = time.perf_counter() - wall
    client, stub = time.process_time() - client, cpu_seconds(stub_pid) - stub
    foreign = max(machine_busy_s() - busy - client - stub, 0.0)
    lags_ms = np.asarray([r.send_s - (r.ready_s if r.ready_s is not None else r.due_s) for r in records]) * 1000.0
    sends = sorted(r.send_s for r in records)
    by_due = sorted(records, key=lambda r: r.due_s)
    tail = by_due[len(by_due) * 9 // 10 :]
    failed = sum(not r.ok for r in records)
    p99 = float(np.percentile(lags_ms, 99))
    tail_lag_ms = float(np.median([r.send_s - r.due_s for r in tail])) * 1000.0
    return RateRun(
        rate=rate,
        duration_s=duration_s,
        requests=len(records),
        failed=failed,
        sent_rate=(len(sends) - 1) / (sends[-1] - sends[0]) if len(sends) > 1 else 0.0,
        lag_p50_ms=float(np.percentile(lags_ms, 50)),
        lag_p99_ms=p99,
        lag_max_ms=float(lags_ms.max()),
        late_over_limit=int((lags_ms > args.lag_limit_ms).sum()),
        tail_lag_p50_ms=tail_lag_ms,
        peak_in_flight=peak_in_flight(records),
        client_cpu_pct=100.0 * client / wall,
        stub_cpu_pct=100.0 * stub / wall,
        foreign_cpu_pct=100.0 * foreign / wall,
        kept_up=p99 <= args.lag_limit_ms and tail_lag_ms <= args.lag_limit_ms and failed == 0,
        quiet_before=quiet,
    )


def table(runs: Sequence[RateRun]) -> str:
    lines = [
        "| rate (req/s) | s | requests | failed | sent (req/s) | lag p50 (ms) | lag p99 (ms) | lag max (ms) "
        "| > limit | tail lag p50 (ms) | peak in flight | client CPU % | stub CPU % | other CPU % "
        "| quiet before | kept up |",
        "|" + " ---: |" * 14 + " --- | --- |",
    ]
    for run in runs:
        lines.append(
            f"| {run.rate:g} | {run.duration_s:g} | {run.requests} | {run.failed} | {run.sent_rate:.1f} "
            f"| {run.lag_p50_ms:.3f} | {run.lag_p99_ms:.3f} | {run.lag_max_ms:.3f} | {run.late_over_limit} "
            f"| {run.tail_lag_p50_ms:.3f} | {run.peak_in_flight} | {run.client_cpu_pct:.0f} | {run.stub_cpu_pct:.0f} "
            f"| {run.foreign_cpu_pct:.0f} | {'yes' if run.quiet_before else 'no'} | {'yes' if run.kept_up else 'no'} |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rate", type=float, default=200.0, help="the main rate, requests/s (default 200)")
    parser.add_argument("--duration-s", type=float, default=30.0)
    parser.add_argument("--step-rates", default="400,800,1600,3200", help="rates tried next, until one fails")
    parser.add_argument("--step-duration-s", type=float, default=10.0)
    parser.add_argument("--burstiness", type=float, default=1.0, help="gamma shape of the gaps (1: Poisson)")
    parser.add_argument("--max-tokens", type=int, default=4)
    parser.add_argument("--lag-limit-ms", type=float, default=2.0)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--client-cpu", type=int, default=0)
    parser.add_argument("--stub-cpu", type=int, default=1)
    parser.add_argument("--no-pin", action="store_true", help="leave both processes to the scheduler")
    parser.add_argument("--quiet-s", type=float, default=10.0, help="wait for this much idle time before each rate")
    parser.add_argument("--quiet-limit-s", type=float, default=120.0, help="but never longer than this")
    parser.add_argument("--out", type=Path, help="write results.json, results.md and the stub's log here")
    args = parser.parse_args()
    out: Path = args.out or Path(f"/tmp/schedule-bench-{os.getpid()}")
    out.mkdir(parents=True, exist_ok=True)
    if not args.no_pin:
        os.sched_setaffinity(0, {args.client_cpu})
    runs: list[RateRun] = []
    with stub_on(None if args.no_pin else args.stub_cpu, out) as (url, stub_pid):
        measure(url, stub_pid, args.rate, 2.0, args, args.seed + 1000, False)  # warm-up: imports, connections
        quiet = wait_until_idle(args.quiet_s, args.quiet_limit_s)
        runs.append(measure(url, stub_pid, args.rate, args.duration_s, args, args.seed, quiet))
        print(table(runs[-1:]), flush=True)
        for step, rate in enumerate(float(item) for item in args.step_rates.split(",") if item.strip()):
            quiet = wait_until_idle(args.quiet_s, args.quiet_limit_s)
            runs.append(measure(url, stub_pid, rate, args.step_duration_s, args, args.seed + 1 + step, quiet))
            print(table(runs[-1:]).splitlines()[-1], flush=True)
            if not runs[-1].kept_up:
                break
    report = {
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(), "kernel": platform.release()},
        "settings": {key: str(value) for key, value in vars(args).items()},
        "runs": [asdict(run) for run in runs],
    }
    (out / "results.json").write_text(json.dumps(report, indent=2))
    (out / "results.md").write_text(table(runs) + "\n")
    print(table(runs))
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()

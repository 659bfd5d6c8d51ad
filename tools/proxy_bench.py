"""How much does the P/D proxy cost? Its added TTFT and its relay throughput, against stub upstreams and a plain
aiohttp pass-through (the same hop without Quart, Hypercorn or the prefill request), on a machine of two cores.

Each server runs as its own process: the proxy (or the pass-through) pinned to one core, the stubs and this
client to the other. TTFT is timed at concurrency 1 over short streams, interleaving direct, pass-through and
proxy requests. Throughput counts the SSE ``data:`` events the client receives from long streams, twice: bulk
(the stub sends tokens without pause, so they cross the relay several to a read) and paced (1 ms between
tokens, one read per token, as from a real decode). It prints a markdown table and JSON and asserts nothing;
the issue's targets (at most 2 ms added TTFT at the median, at least 20,000 streamed tokens/s on one core) are
shown beside the numbers.

    .venv/bin/python tools/proxy_bench.py --out /tmp/x

``python tools/proxy_bench.py passthrough --upstream URL --port P`` serves the pass-through alone.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import platform
import shutil
import socket
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

import aiohttp
import numpy as np
from aiohttp import web

from plugin.errors import BenchError
from plugin.serving.process import ManagedProcess, start, wait_ready

ROOT = Path(__file__).resolve().parent.parent

TTFT_TARGET_MS = 2.0
THROUGHPUT_TARGET_TOKENS_S = 20_000.0
DATA = b"data: "
EXTRA_EVENTS = 2  # after the tokens, the stub sends a usage chunk and [DONE]


@dataclass(frozen=True, slots=True)
class Settings:
    """What to run, resolved once from the command line."""

    ttft_requests: int
    ttft_warmup: int
    ttft_max_tokens: int
    stream_max_tokens: int
    stream_requests: int
    concurrencies: tuple[int, ...]
    paced_token_delay_ms: float
    paced_concurrencies: tuple[int, ...]
    relay_cpu: int | None
    stubs_cpu: int | None
    log_dir: Path


@dataclass(frozen=True, slots=True)
class StreamRecord:
    """One streamed request as the client saw it; the proxy's own timing headers when it answered."""

    ttft_s: float
    e2e_s: float
    tokens: int
    chunks: int
    """Reads that returned bytes: how finely the path in between split the stream."""
    prefill_ms: float | None
    kv_handoff_ms: float | None


@dataclass(frozen=True, slots=True)
class ThroughputRun:
    path: str
    token_delay_ms: float
    concurrency: int
    requests: int
    tokens: int
    tokens_per_chunk: float
    """Tokens per read at the client: 1 when every token crosses the relay on its own."""
    elapsed_s: float
    tokens_per_s: float
    relay_cpu_pct: float | None
    """CPU of the relay in the middle (proxy or pass-through, alone on its core), % of one core; none for direct."""
    relay_cpu_us_per_token: float | None
    """The relay's CPU per streamed token: 1e6 / this is what one core could relay in chunks of this run's size."""
    stubs_client_cpu_pct: float
    """CPU of both stubs and this client together, which share the other core."""
    foreign_cpu_pct: float
    """CPU the rest of the machine used meanwhile (other processes, kernel networking): % of one core."""


@dataclass(frozen=True, slots=True)
class Servers:
    prefill_url: str
    decode_url: str
    passthrough_url: str
    proxy_url: str
    pids: dict[str, int]


# --- the pass-through baseline --------------------------------------------------------------------------------


def serve_passthrough(upstream: str, host: str, port: int) -> None:
    """POST /v1/completions forwarded to one upstream, its answer relayed chunk by chunk: the least a relay does."""

    async def session_ctx(app: web.Application) -> Any:
        app["session"] = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0))
        yield
        await app["session"].close()

    async def completions(request: web.Request) -> web.StreamResponse:
        body = await request.read()
        session: aiohttp.ClientSession = request.app["session"]
        async with session.post(
            f"{upstream}/v1/completions", data=body, headers={"Content-Type": "application/json"}
        ) as answer:
            content_type = answer.headers.get("Content-Type", "application/json")
            response = web.StreamResponse(status=answer.status, headers={"Content-Type": content_type})
            await response.prepare(request)
            async for chunk in answer.content.iter_any():
                await response.write(chunk)
            await response.write_eof()
            return response

    async def health(request: web.Request) -> web.Response:
        return web.json_response({"status": "ok"})

    app = web.Application()
    app.cleanup_ctx.append(session_ctx)
    app.router.add_post("/v1/completions", completions)
    app.router.add_get("/health", health)
    web.run_app(app, host=host, port=port, print=None, access_log=None)


# --- processes ------------------------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def pinned(command: list[str], cpu: int | None) -> list[str]:
    return command if cpu is None else ["taskset", "-c", str(cpu), *command]


def cpu_seconds(pid: int) -> float:
    """utime + stime of a process (its threads included), from /proc."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def machine_busy_s() -> float:
    """CPU seconds all cores have spent busy since boot (everything but idle and iowait), from /proc/stat."""
    user, nice, system, _idle, _iowait, irq, softirq, steal = (
        int(value) for value in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:9]
    )
    return (user + nice + system + irq + softirq + steal) / os.sysconf("SC_CLK_TCK")


@dataclass(frozen=True, slots=True)
class CpuSnapshot:
    """CPU seconds so far: the relay under test, the stubs and this client, and the whole machine."""

    relay_s: float
    ours_s: float
    machine_s: float

    @classmethod
    def take(cls, pids: dict[str, int], relay: str | None) -> CpuSnapshot:
        per_process = {name: cpu_seconds(pid) for name, pid in pids.items()}
        return cls(
            relay_s=per_process[relay] if relay else 0.0,
            ours_s=sum(per_process.values()) + time.process_time(),
            machine_s=machine_busy_s(),
        )

    def since(self, earlier: CpuSnapshot) -> CpuSnapshot:
        return CpuSnapshot(
            self.relay_s - earlier.relay_s, self.ours_s - earlier.ours_s, self.machine_s - earlier.machine_s
        )

    @property
    def foreign_s(self) -> float:
        """Busy time of the machine that none of our processes spent: other work that skews the numbers."""
        return max(self.machine_s - self.ours_s, 0.0)


@contextlib.contextmanager
def running_servers(settings: Settings, token_delay_ms: float) -> Iterator[Servers]:
    """Prefill and decode stubs, the pass-through (to the decode stub) and the proxy; all stopped on the way out."""
    python = sys.executable
    stub = str(ROOT / "tests" / "stub_upstream.py")
    ports = {name: free_port() for name in ("prefill", "decode", "passthrough", "proxy")}
    urls = {name: f"http://127.0.0.1:{port}" for name, port in ports.items()}
    commands = {
        "prefill": pinned([python, stub, "--port", str(ports["prefill"])], settings.stubs_cpu),
        "decode": pinned(
            [python, stub, "--port", str(ports["decode"]), "--token-delay-ms", str(token_delay_ms)], settings.stubs_cpu
        ),
        "passthrough": pinned(
            [python, __file__, "passthrough", "--upstream", urls["decode"], "--port", str(ports["passthrough"])],
            settings.relay_cpu,
        ),
        "proxy": pinned(
            [python, "-m", "proxy", "--prefill", urls["prefill"], "--decode", urls["decode"]]
            + ["--kv-connector", "example", "--port", str(ports["proxy"])],
            settings.relay_cpu,
        ),
    }
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    processes: list[ManagedProcess] = []
    try:
        for name, command in commands.items():
            processes.append(
                start(name, command, env, settings.log_dir / f"{name}-{token_delay_ms:g}ms.log", settings.log_dir)
            )
        for process in processes:
            wait_ready(process, f"{urls[process.name]}/health", timeout_s=30.0, hint="Read the log above.")
        yield Servers(
            prefill_url=urls["prefill"],
            decode_url=urls["decode"],
            passthrough_url=urls["passthrough"],
            proxy_url=urls["proxy"],
            pids={process.name: process.pid for process in processes},
        )
    finally:
        for process in reversed(processes):
            process.stop(grace_s=10.0)


# --- the client -----------------------------------------------------------------------------------------------


async def stream_once(session: aiohttp.ClientSession, url: str, max_tokens: int) -> StreamRecord:
    """One streamed completion; tokens are the ``data:`` events received, less the usage chunk and [DONE]."""
    body = {"model": "stub-model", "prompt": "Hello", "max_tokens": max_tokens, "stream": True}
    sent_s = time.perf_counter()
    first_s: float | None = None
    events = chunks = 0
    tail = b""
    async with session.post(f"{url}/v1/completions", json=body) as answer:
        if answer.status != 200:
            raise BenchError(f"{url} answered HTTP {answer.status}: {(await answer.text())[:300]}")
        async for chunk in answer.content.iter_any():
            if first_s is None:
                first_s = time.perf_counter()
            chunks += 1
            buffer = tail + chunk
            events += buffer.count(DATA)
            tail = buffer[-(len(DATA) - 1) :]  # a marker cut in two by the chunking is counted once, next time
        prefill_ms = answer.headers.get("x-pd-prefill-ms")
        handoff_ms = answer.headers.get("x-pd-kv-handoff-ms")
    end_s = time.perf_counter()
    tokens = events - EXTRA_EVENTS
    if first_s is None or tokens != max_tokens:
        raise BenchError(f"{url}: asked for {max_tokens} tokens, received {tokens} data events (less 2)")
    return StreamRecord(
        ttft_s=first_s - sent_s,
        e2e_s=end_s - sent_s,
        tokens=tokens,
        chunks=chunks,
        prefill_ms=float(prefill_ms) if prefill_ms else None,
        kv_handoff_ms=float(handoff_ms) if handoff_ms else None,
    )


async def prefill_once(session: aiohttp.ClientSession, url: str) -> float:
    """The proxy's extra hop on its own: a non-streamed max_tokens=1 request straight to the prefill stub."""
    body = {"model": "stub-model", "prompt": "Hello", "max_tokens": 1, "stream": False}
    sent_s = time.perf_counter()
    async with session.post(f"{url}/v1/completions", json=body) as answer:
        await answer.read()
    return time.perf_counter() - sent_s


def percentiles_ms(values_s: Sequence[float]) -> dict[str, float]:
    values_ms = np.asarray(values_s, dtype=float) * 1000.0
    p50, p90 = np.percentile(values_ms, (50, 90))
    return {"p50_ms": float(p50), "p90_ms": float(p90), "mean_ms": float(values_ms.mean()), "n": len(values_ms)}


async def measure_ttft(session: aiohttp.ClientSession, servers: Servers, settings: Settings) -> dict[str, Any]:
    """Sequential requests, the paths interleaved so that a slow spell of the machine hits all of them alike."""
    paths = {"direct": servers.decode_url, "passthrough": servers.passthrough_url, "proxy": servers.proxy_url}
    records: dict[str, list[StreamRecord]] = {name: [] for name in paths}
    prefill_hop_s: list[float] = []
    before, started_s = CpuSnapshot.take(servers.pids, None), time.perf_counter()
    for index in range(settings.ttft_warmup + settings.ttft_requests):
        counted = index >= settings.ttft_warmup
        for name, url in paths.items():
            record = await stream_once(session, url, settings.ttft_max_tokens)
            if counted:
                records[name].append(record)
        hop_s = await prefill_once(session, servers.prefill_url)
        if counted:
            prefill_hop_s.append(hop_s)
    foreign_cpu_pct = (
        100.0 * CpuSnapshot.take(servers.pids, None).since(before).foreign_s / (time.perf_counter() - started_s)
    )
    result: dict[str, Any] = {name: percentiles_ms([r.ttft_s for r in rs]) for name, rs in records.items()}
    result["foreign_cpu_pct"] = foreign_cpu_pct
    result["prefill_hop_direct"] = percentiles_ms(prefill_hop_s)
    proxy = records["proxy"]
    result["proxy_prefill_header"] = percentiles_ms([r.prefill_ms / 1000.0 for r in proxy if r.prefill_ms])
    result["proxy_kv_handoff_header"] = percentiles_ms([r.kv_handoff_ms / 1000.0 for r in proxy if r.kv_handoff_ms])
    result["proxy_added_over_direct_p50_ms"] = result["proxy"]["p50_ms"] - result["direct"]["p50_ms"]
    result["proxy_added_over_passthrough_p50_ms"] = result["proxy"]["p50_ms"] - result["passthrough"]["p50_ms"]
    result["passthrough_added_over_direct_p50_ms"] = result["passthrough"]["p50_ms"] - result["direct"]["p50_ms"]
    return result


async def measure_throughput(
    session: aiohttp.ClientSession,
    path: str,
    url: str,
    concurrency: int,
    requests: int,
    token_delay_ms: float,
    settings: Settings,
    pids: dict[str, int],
) -> ThroughputRun:
    """``requests`` long streams, ``concurrency`` at a time; tokens/s over the wall time of all of them."""
    relay = path if path in pids else None  # the pass-through or the proxy; direct has no relay
    await stream_once(session, url, settings.stream_max_tokens)  # warm-up: connections open, code paths hot
    queue = iter(range(requests))
    records: list[StreamRecord] = []

    async def worker() -> None:
        for _ in queue:
            records.append(await stream_once(session, url, settings.stream_max_tokens))

    before = CpuSnapshot.take(pids, relay)
    started_s = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    elapsed_s = time.perf_counter() - started_s
    cpu = CpuSnapshot.take(pids, relay).since(before)
    tokens = sum(record.tokens for record in records)
    return ThroughputRun(
        path=path,
        token_delay_ms=token_delay_ms,
        concurrency=concurrency,
        requests=requests,
        tokens=tokens,
        tokens_per_chunk=tokens / sum(record.chunks for record in records),
        elapsed_s=elapsed_s,
        tokens_per_s=tokens / elapsed_s,
        relay_cpu_pct=100.0 * cpu.relay_s / elapsed_s if relay else None,
        relay_cpu_us_per_token=1e6 * cpu.relay_s / tokens if relay else None,
        stubs_client_cpu_pct=100.0 * (cpu.ours_s - cpu.relay_s) / elapsed_s,
        foreign_cpu_pct=100.0 * cpu.foreign_s / elapsed_s,
    )


def client_session() -> aiohttp.ClientSession:
    timeout = aiohttp.ClientTimeout(total=None, sock_read=60.0)
    return aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0), timeout=timeout)


async def throughput_runs(
    servers: Servers, settings: Settings, token_delay_ms: float, concurrencies: tuple[int, ...], rounds: int | None
) -> list[ThroughputRun]:
    """Every path at every concurrency: ``stream_requests`` streams each, or ``rounds`` x concurrency of them."""
    paths = {"direct": servers.decode_url, "passthrough": servers.passthrough_url, "proxy": servers.proxy_url}
    async with client_session() as session:
        return [
            await measure_throughput(
                session,
                path,
                url,
                concurrency,
                concurrency * rounds if rounds else max(settings.stream_requests, concurrency),
                token_delay_ms,
                settings,
                servers.pids,
            )
            for path, url in paths.items()
            for concurrency in concurrencies
        ]


def run_bench(settings: Settings) -> dict[str, Any]:
    """TTFT and bulk streams (token delay 0) on one set of servers, paced streams on a second set."""

    async def bulk(servers: Servers) -> tuple[dict[str, Any], list[ThroughputRun]]:
        async with client_session() as session:
            ttft = await measure_ttft(session, servers, settings)
        return ttft, await throughput_runs(servers, settings, 0.0, settings.concurrencies, rounds=None)

    with running_servers(settings, 0.0) as servers:
        ttft, throughput = asyncio.run(bulk(servers))
    if settings.paced_token_delay_ms > 0:
        with running_servers(settings, settings.paced_token_delay_ms) as servers:
            throughput += asyncio.run(
                throughput_runs(servers, settings, settings.paced_token_delay_ms, settings.paced_concurrencies, 1)
            )
    best = {
        delay_ms: max(run.tokens_per_s for run in throughput if run.path == "proxy" and run.token_delay_ms == delay_ms)
        for delay_ms in {run.token_delay_ms for run in throughput}
    }
    # Judged on the stricter case when there is one: paced tokens cross the relay one read each, not in bunches.
    judged = best[max(best)]
    return {
        "ttft": ttft,
        "throughput": [asdict(run) for run in throughput],
        "targets": {
            "ttft_added_p50_ms": {
                "target_max": TTFT_TARGET_MS,
                "measured_over_direct": ttft["proxy_added_over_direct_p50_ms"],
                "met": ttft["proxy_added_over_direct_p50_ms"] <= TTFT_TARGET_MS,
            },
            "relay_tokens_per_s": {
                "target_min": THROUGHPUT_TARGET_TOKENS_S,
                "best_by_token_delay_ms": best,
                "judged_on_token_delay_ms": max(best),
                "met": judged >= THROUGHPUT_TARGET_TOKENS_S,
            },
        },
    }


# --- report ---------------------------------------------------------------------------------------------------


def machine() -> dict[str, Any]:
    model = next(
        (
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if line.startswith("model name")
        ),
        platform.processor(),
    )
    return {
        "nproc": os.cpu_count(),
        "cpu_model": model,
        "python": platform.python_version(),
        "load_average_before": os.getloadavg(),
        "versions": {name: metadata.version(name) for name in ("quart", "hypercorn", "aiohttp", "h11")},
    }


def markdown(results: dict[str, Any]) -> str:
    ttft = results["ttft"]
    names = {
        "direct": "direct to the decode stub",
        "passthrough": "aiohttp pass-through",
        "proxy": "proxy (prefill hop + decode)",
        "prefill_hop_direct": "prefill hop alone (max_tokens=1, not streamed, direct)",
        "proxy_prefill_header": "proxy's x-pd-prefill-ms",
        "proxy_kv_handoff_header": "proxy's x-pd-kv-handoff-ms",
    }
    lines = ["| TTFT path | p50 (ms) | p90 (ms) | mean (ms) | requests |", "| --- | ---: | ---: | ---: | ---: |"]
    for key, label in names.items():
        row = ttft[key]
        lines.append(f"| {label} | {row['p50_ms']:.3f} | {row['p90_ms']:.3f} | {row['mean_ms']:.3f} | {row['n']} |")
    lines += [
        "",
        f"Proxy adds {ttft['proxy_added_over_direct_p50_ms']:+.3f} ms at p50 over the direct stub, "
        f"{ttft['proxy_added_over_passthrough_p50_ms']:+.3f} ms over the pass-through "
        f"(which adds {ttft['passthrough_added_over_direct_p50_ms']:+.3f} ms over direct). Other processes used "
        f"{ttft['foreign_cpu_pct']:.0f} % of a core meanwhile.",
        "",
        "| relay path | token delay (ms) | streams | requests | tokens | tokens/read | s | tokens/s "
        "| relay CPU % | relay CPU µs/token | stubs + client CPU % | other CPU % |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for run in results["throughput"]:
        cpu = (
            "- | -"
            if run["relay_cpu_pct"] is None
            else (f"{run['relay_cpu_pct']:.0f} | {run['relay_cpu_us_per_token']:.1f}")
        )
        lines.append(
            f"| {run['path']} | {run['token_delay_ms']:g} | {run['concurrency']} | {run['requests']} | {run['tokens']} "
            f"| {run['tokens_per_chunk']:.1f} | {run['elapsed_s']:.2f} "
            f"| {run['tokens_per_s']:,.0f} | {cpu} | {run['stubs_client_cpu_pct']:.0f} "
            f"| {run['foreign_cpu_pct']:.0f} |"
        )
    targets = results["targets"]
    relay = targets["relay_tokens_per_s"]
    lines += [
        "",
        f"Target TTFT added at p50 <= {TTFT_TARGET_MS} ms: "
        f"{targets['ttft_added_p50_ms']['measured_over_direct']:.3f} ms, "
        f"{'met' if targets['ttft_added_p50_ms']['met'] else 'not met'}.",
        f"Target relay >= {THROUGHPUT_TARGET_TOKENS_S:,.0f} tokens/s on one core: best "
        + ", ".join(
            f"{tokens_s:,.0f} tokens/s at token delay {delay_ms:g} ms"
            for delay_ms, tokens_s in sorted(relay["best_by_token_delay_ms"].items())
        )
        + f"; {'met' if relay['met'] else 'not met'} (judged at {relay['judged_on_token_delay_ms']:g} ms).",
    ]
    return "\n".join(lines)


# --- command line ---------------------------------------------------------------------------------------------


def positive_ints(text: str) -> tuple[int, ...]:
    values = tuple(int(part) for part in text.split(",") if part.strip())
    if not values or min(values) < 1:
        raise argparse.ArgumentTypeError(f"{text!r}: give positive integers, comma-separated, e.g. 1,4,16")
    return values


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, help="folder for results.json and the servers' logs")
    parser.add_argument("--ttft-requests", type=int, default=300, help="counted requests per path (default: 300)")
    parser.add_argument("--ttft-warmup", type=int, default=30)
    parser.add_argument("--ttft-max-tokens", type=int, default=8)
    parser.add_argument("--stream-max-tokens", type=int, default=2000)
    parser.add_argument("--stream-requests", type=int, default=64, help="bulk streams per path and concurrency")
    parser.add_argument("--concurrency", type=positive_ints, default=(1, 4, 16), help="bulk streams at a time")
    parser.add_argument(
        "--paced-token-delay-ms",
        type=float,
        default=1.0,
        help="the decode stub's delay between tokens in the paced runs, one chunk per token (0: no paced runs)",
    )
    parser.add_argument("--paced-concurrency", type=positive_ints, default=(16, 64, 128))
    parser.add_argument("--no-pin", action="store_true", help="do not pin processes to cores with taskset")
    sub = parser.add_subparsers(dest="command")
    passthrough = sub.add_parser("passthrough", help="serve the pass-through baseline alone")
    passthrough.add_argument("--upstream", required=True)
    passthrough.add_argument("--host", default="127.0.0.1")
    passthrough.add_argument("--port", type=int, required=True)
    args = parser.parse_args(argv)
    if args.command == "passthrough":
        serve_passthrough(args.upstream.rstrip("/"), args.host, args.port)
        return 0

    pin = not args.no_pin and shutil.which("taskset") is not None and len(os.sched_getaffinity(0)) >= 2
    relay_cpu, stubs_cpu = (0, 1) if pin else (None, None)
    if stubs_cpu is not None:
        os.sched_setaffinity(0, {stubs_cpu})  # the client shares the stubs' core, away from the relay
    with tempfile.TemporaryDirectory(prefix="proxy-bench-") as scratch:
        log_dir = args.out / "logs" if args.out else Path(scratch)
        settings = Settings(
            ttft_requests=args.ttft_requests,
            ttft_warmup=args.ttft_warmup,
            ttft_max_tokens=args.ttft_max_tokens,
            stream_max_tokens=args.stream_max_tokens,
            stream_requests=args.stream_requests,
            concurrencies=args.concurrency,
            paced_token_delay_ms=args.paced_token_delay_ms,
            paced_concurrencies=args.paced_concurrency,
            relay_cpu=relay_cpu,
            stubs_cpu=stubs_cpu,
            log_dir=log_dir,
        )
        about = machine()
        try:
            results = run_bench(settings)
        except BenchError as error:
            print(f"error: {error}", file=sys.stderr)
            return 2
    results = {
        "machine": about,
        "settings": {**asdict(settings), "log_dir": str(settings.log_dir)},
        **results,
    }
    print(markdown(results))
    print()
    print(json.dumps(results, indent=2))
    if args.out:
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "results.json").write_text(json.dumps(results, indent=2) + "\n")
        (args.out / "results.md").write_text(markdown(results) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())

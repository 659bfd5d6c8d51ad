"""Fixtures: each topology's servers (``plugin.serving.deploy``: started, or the user's), the power sampler over
the run's GPU budget and its idle baselines, the DVFS controller, and the per-benchmark load runner."""

from __future__ import annotations

import math
import random
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from dataclasses import asdict, replace
from typing import TYPE_CHECKING, Any, NoReturn

import pytest

from plugin.analysis.power_entry import session_power
from plugin.dvfs.controller import DvfsController
from plugin.dvfs.plan import DvfsSetting
from plugin.errors import BenchError
from plugin.hookspec import extra_vllm_args
from plugin.load.plan import ServingPlan, dataset_of, serving_plan, tokenizer_for
from plugin.load.schedule import arrivals_of, sweep_rate, with_measured_end
from plugin.load.workload import (
    DATASET_MAX_LEN,
    SERVING,
    SWEEP_MAX,
    SWEEP_SYNC,
    Workload,
    default_max_model_len,
    load_id,
    make_prompts,
)
from plugin.options import Settings
from plugin.outcome import check_servers, fail_on_errors, feed_benchmark, stop_topology, store
from plugin.power import NoneBackend, PowerBackend, PowerError, Sampler, open_backend
from plugin.power.dcgm import DcgmBackend
from plugin.power.nvml_loader import load_nvml
from plugin.power.ray_nodes import node_roles, node_stats, power_gpus, ray_sampler
from plugin.power.remote import RemoteBackend
from plugin.power.window import LOADED, NO_CONTEXT, IdleBaseline
from plugin.progress import Progress
from plugin.results.schema import BenchmarkResult
from plugin.runner import Measurement, Runner, WarmupFailed
from plugin.serving.deploy import DeployPlan, deploy
from plugin.serving.endpoint import Endpoint
from plugin.serving.topology import UNUSED, place
from plugin.session import SESSION_KEY, RunSession

if TYPE_CHECKING:
    from plugin.serving.ray_placement import RayPlacement


@pytest.fixture(scope="session")
def bench_session(pytestconfig: pytest.Config) -> RunSession:
    """The run: resolved settings, run folder and results file, shared by every benchmark."""
    return pytestconfig.stash[SESSION_KEY]


@pytest.fixture(scope="session")
def ray_cluster(bench_session: RunSession) -> Iterator[RayPlacement | None]:
    """The connection to the ``--ray-address`` cluster, held for the run (every deployment and the node samplers
    use it) and closed after them; ``None``, and Ray not imported, without the option."""
    address = bench_session.settings.ray_address
    if address is None:
        yield None
        return
    from plugin.serving.ray_placement import RayPlacement

    try:
        connection = RayPlacement(address)
    except ConnectionError as error:
        pytest.fail(f"cannot connect to the Ray cluster at {address}: {error}", pytrace=False)
    try:
        yield connection
    finally:
        connection.close()


@pytest.fixture(scope="session")
def deployments(ray_cluster: RayPlacement | None) -> Iterator[ExitStack]:
    """Every topology's servers, stopped at the end of the run whatever happened (each stop is safe to repeat),
    before the Ray connection (if any) closes."""
    with ExitStack() as stack:
        yield stack


@pytest.fixture
def served_topology(
    request: pytest.FixtureRequest, topology: str, bench_session: RunSession, deployments: ExitStack
) -> Endpoint:
    """The servers of the benchmark's topology, started for its first benchmark and kept for the others (the
    hooks stop them after its last). A topology whose servers do not start fails this benchmark, saying why,
    and its later ones are skipped; the other topologies go on."""
    known = bench_session.endpoints.get(topology)
    if known is not None:
        return known
    request.getfixturevalue("power_sampler")  # the first time, its no-context baseline comes before any server
    settings = bench_session.settings
    chosen = settings.topology(topology)
    placement = place(chosen, settings, bench_session.budget)
    roles = ("server",) if chosen.kind == "traditional" else ("prefill", "decode")
    role_args = {role: extra_vllm_args(request.config, role) for role in roles}
    progress = Progress.from_config(request.config)
    stack = ExitStack()
    deployments.callback(stack.close)
    try:
        plan = DeployPlan(
            chosen, placement, settings, bench_session.open_run,
            lambda entry: bench_session.record_deployment(chosen, entry), role_args, progress.say,
        )  # fmt: skip
        served = stack.enter_context(deploy(plan))
    except BenchError as error:
        bench_session.dead_topologies[topology] = f"its servers did not start: {error}"
        pytest.fail(str(error), pytrace=False)
    bench_session.endpoints[topology] = served.endpoint
    bench_session.server_processes[topology] = list(served.processes)
    bench_session.server_stoppers[topology] = stack.close
    return served.endpoint


def power_backend(bench_session: RunSession, gpus: tuple[int, ...]) -> PowerBackend:
    settings = bench_session.settings
    if settings.power_sources:  # a cluster's exporters: their GPUs, wherever the servers run
        return DcgmBackend(settings.power_sources)
    if settings.power_backend == "none":
        return NoneBackend("power not measured: --power-backend none")
    if not gpus:
        why = bench_session.inventory.nvml_error or "no GPU was given with --gpus"
        return NoneBackend(f"power not measured: this run uses no NVIDIA GPU ({why})")
    return open_backend(settings.power_backend, gpus, round(settings.gpu_sample_ms))  # type: ignore[arg-type]


def open_sampler(bench_session: RunSession, ray_cluster: RayPlacement | None) -> Sampler:
    """The run's sampler: over its budget's GPUs here, a cluster's exporters, or every Ray node with GPUs."""
    settings = bench_session.settings
    assert bench_session.results is not None
    folder = bench_session.results.path.parent
    if ray_cluster is not None and settings.power_backend != "none" and not settings.power_sources:
        nodes = [(node.node_id, node.address) for node in ray_cluster.nodes() if node.gpus]
        return ray_sampler(nodes, folder, settings.gpu_sample_ms)
    return Sampler(power_backend(bench_session, bench_session.budget), folder, period_ms=settings.gpu_sample_ms)


@pytest.fixture(scope="session")
def power_sampler(
    request: pytest.FixtureRequest, bench_session: RunSession, ray_cluster: RayPlacement | None
) -> Iterator[Sampler]:
    """Samples the GPUs of the run's budget (every GPU of the topologies the session runs; on Ray, of every node
    with GPUs) into the run folder. ``served_topology`` asks for it before the first server starts: the no-context
    idle baseline is measured then, once (not with ``--vllm-url``, whose server holds its GPUs already)."""
    settings = bench_session.settings
    bench_session.open_run(None)  # the first deployment fills in the vLLM version
    results = bench_session.results
    assert results is not None
    try:
        sampler = open_sampler(bench_session, ray_cluster)
    except PowerError as error:
        request.session.shouldstop = str(error)
        pytest.fail(f"power sampling cannot start: {error}; use --power-backend none to run without", pytrace=False)
    with sampler:
        if settings.vllm_url is None:
            bench_session.idle_no_context = measure_baseline(bench_session, sampler, NO_CONTEXT)
        write_session_power(bench_session, sampler)
        if isinstance(sampler.backend, DcgmBackend):
            results.update(power_gpus=[asdict(gpu) for gpu in sampler.backend.gpu_info])
        if isinstance(sampler.backend, RemoteBackend):
            results.update(power_gpus=power_gpus(sampler.backend))
        try:
            yield sampler
        finally:
            if isinstance(sampler.backend, RemoteBackend):  # before the samplers close with the sampler
                results.update(power_nodes=node_stats(sampler.backend))
            write_session_power(bench_session, sampler)


def measure_baseline(
    bench_session: RunSession, sampler: Sampler, kind: str, topology: str | None = None, dvfs_setting: str | None = None
) -> IdleBaseline | None:
    """``--idle-baseline-s`` of doing nothing on every GPU sampled; ``None`` without a GPU or with 0 s."""
    duration_s = bench_session.settings.idle_baseline_s
    if not sampler.backend.gpus or duration_s <= 0:
        return None
    name = " ".join(["idle", kind, *(part for part in (topology, dvfs_setting) if part)])
    return IdleBaseline.of(kind, sampler.measure_idle(duration_s, name), topology, dvfs_setting)


def use_loaded_baseline(bench_session: RunSession, sampler: Sampler, topology: str, dvfs_setting: str | None) -> None:
    """The benchmark's windows subtract its topology and DVFS setting's loaded baseline (on a GPU that lacks one,
    the no-context baseline). The first benchmark of the pair measures it, with the setting applied and before
    its warm-up: the servers are ready and nothing is in flight, and the GPUs have not just run requests, whose
    tail would read as idle power."""
    key = (topology, dvfs_setting)
    no_context = () if bench_session.idle_no_context is None else (bench_session.idle_no_context,)
    if key not in bench_session.idle_loaded:
        sampler.use_idle_baselines(*no_context)  # the loaded baseline's own figure above idle: what the servers cost
        loaded = measure_baseline(bench_session, sampler, LOADED, topology, dvfs_setting)
        if loaded is not None:
            bench_session.idle_loaded[key] = loaded
            write_session_power(bench_session, sampler)
    own = bench_session.idle_loaded.get(key)
    sampler.use_idle_baselines(*(() if own is None else (own,)), *no_context)


def write_session_power(bench_session: RunSession, sampler: Sampler) -> None:
    results = bench_session.results
    assert results is not None
    loaded = list(bench_session.idle_loaded.values())
    results.update(power=session_power(sampler, bench_session.idle_no_context, loaded))


@pytest.fixture(scope="session")
def dvfs_controller(bench_session: RunSession) -> Iterator[DvfsController]:
    """Sets and restores the run's GPU clocks and power limits (only when a DVFS option asks for a sweep). It opens
    every GPU of the run's budget; it changes only those a benchmark's servers use."""
    settings = bench_session.settings
    controller = DvfsController(load_nvml(), sorted(bench_session.budget), settings.reports_dir)
    try:
        yield controller
    finally:
        controller.close()


@pytest.fixture
def run_workload(
    request: pytest.FixtureRequest,
    benchmark: Any,
    topology: str,
    dvfs: DvfsSetting,
    bench_session: RunSession,
) -> Callable[[Workload], BenchmarkResult]:
    """Runs a workload on the test's topology and DVFS setting: the setting applied, the pair's loaded idle baseline
    (measured on its first benchmark), one warm-up request, then ``--rounds`` measured rounds, each in its own power
    window (``plugin.runner``), the GPUs restored as found, the results stored, and the round durations handed to
    pytest-benchmark."""
    dead = bench_session.dead_topologies.get(topology)
    if dead:
        pytest.skip(f"the {topology} servers are gone: {dead}")
    settings = bench_session.settings
    endpoint: Endpoint = request.getfixturevalue("served_topology")
    sampler: Sampler = request.getfixturevalue("power_sampler")
    endpoint = replace(endpoint, gpu_roles=sampled_roles(sampler, endpoint, settings))
    controller: DvfsController | None = request.getfixturevalue("dvfs_controller") if settings.dvfs_requested else None
    progress = Progress.from_config(request.config)

    def request_done(done: int, total: int) -> None:
        progress.requests(done, total, request.node.name)
        if done == total:
            progress.end()

    runner = Runner(endpoint, sampler, settings.request_timeout_s, on_request_done=request_done)

    def run(workload: Workload) -> BenchmarkResult:
        if controller is None:
            use_loaded_baseline(bench_session, sampler, topology, None)
            return measure(workload, None)
        used = {gpu: role for gpu, role in endpoint.gpu_roles.items() if role != UNUSED}
        with controller.applied(dvfs, used) as record:
            if record["refused"]:
                _skip_refused(bench_session, request.node.name, dvfs, record)
            use_loaded_baseline(bench_session, sampler, topology, dvfs.id)
            return measure(workload, record)

    def measure(workload: Workload, dvfs_record: dict[str, Any] | None) -> BenchmarkResult:
        # The same load on every topology: the seed names the test, workload and setting, never the topology.
        rng = bench_session.rng_for(f"{request.node.originalname}[{load_id(workload)}-{dvfs.id}]")
        try:
            measurement, extra = _measure(bench_session, runner, request.node.nodeid, workload, rng)
        except WarmupFailed as error:
            stop_topology(bench_session, topology, str(error))
        except BenchError as error:  # a dataset that cannot be used, a sweep point without its ends
            pytest.fail(str(error), pytrace=False)
        result = store(request, bench_session, topology, workload, measurement, endpoint, dvfs_record, extra)
        if workload.sweep in (SWEEP_SYNC, SWEEP_MAX):  # every topology's later points take their rates from these
            ends = bench_session.sweep_ends.get(str(workload.dataset))
            throughput_rps = result.summary["request_throughput"]
            bench_session.sweep_ends[str(workload.dataset)] = with_measured_end(
                ends, topology, workload.sweep, throughput_rps
            )
        feed_benchmark(benchmark, [r.duration_s for r in measurement.rounds], workload, result)
        check_servers(bench_session, topology, measurement)
        fail_on_errors(measurement.records)
        return result

    return run


def sampled_roles(sampler: Sampler, endpoint: Endpoint, settings: Settings) -> dict[int, str]:
    """The endpoint's GPU roles in the sampler's indices: as placed here, or a cluster's exporters' GPUs
    (``--gpu-role``), or the Ray nodes' GPUs that its instances were given."""
    if isinstance(sampler.backend, DcgmBackend):
        return exporter_roles(sampler.backend, settings.gpu_roles)
    if isinstance(sampler.backend, RemoteBackend):
        try:
            return node_roles(sampler.backend, endpoint.node_gpus)
        except PowerError as error:
            pytest.fail(str(error), pytrace=False)
    return dict(endpoint.gpu_roles)


def exporter_roles(backend: DcgmBackend, given: tuple[tuple[str, int, str], ...]) -> dict[int, str]:
    """Every GPU the exporters list, with its ``--gpu-role`` (``unknown`` where none is given: the time rule)."""
    roles = dict.fromkeys(backend.gpus, "unknown")
    try:
        roles |= {backend.index_of(host, gpu): role for host, gpu, role in given}
    except BenchError as error:
        pytest.fail(str(error), pytrace=False)
    return roles


def _skip_refused(bench_session: RunSession, name: str, dvfs: DvfsSetting, record: dict[str, Any]) -> NoReturn:
    """A setting the GPU refused: kept in the results, and the benchmark skipped saying why."""
    results = bench_session.results
    assert results is not None
    results.update(dvfs_refused=[*results.data.get("dvfs_refused", []), {"benchmark": name, **record}])
    pytest.skip(f"the GPU refused setting {dvfs.id}: {'; '.join(record['refused'])}")


def _measure(
    bench_session: RunSession, runner: Runner, name: str, workload: Workload, rng: random.Random
) -> tuple[Measurement, dict[str, Any]]:
    """A phase benchmark's rounds of fresh exact-length prompts, or a serving benchmark's schedules."""
    settings, endpoint = bench_session.settings, runner.endpoint
    if workload.phase == SERVING:
        plan, extra = _serving_plan(bench_session, workload, endpoint, rng)
        return runner.measure_schedules(name, plan.rounds, plan.warmup), extra

    def prompts_for(count: int) -> list[list[int]]:
        return make_prompts(count, workload.input_len, endpoint.vocab, rng)

    measurement = runner.measure(
        name, settings.rounds, prompts_for, workload.num_requests, workload.output_len, workload.concurrency,
        settings.min_window_s,
    )  # fmt: skip
    return measurement, {}


def _serving_plan(
    bench_session: RunSession, workload: Workload, endpoint: Endpoint, rng: random.Random
) -> tuple[ServingPlan, dict[str, Any]]:
    """The schedules of a serving benchmark; a sweep point's rate comes from its dataset's sweep ends, the same for
    every topology, and its entry names the topology that measured them."""
    settings = bench_session.settings
    rate = workload.request_rate
    extra: dict[str, Any] = {}
    if workload.sweep not in (None, SWEEP_SYNC, SWEEP_MAX):
        ends = bench_session.sweep_ends.get(str(workload.dataset))
        points = settings.request_rates.sweep_points or 0
        rate = sweep_rate(str(workload.sweep), points, ends)
        assert ends is not None  # sweep_rate refuses a point without its ends
        extra["sweep_ends"] = asdict(ends)
    arrivals = arrivals_of(workload, rate, settings.warmup_s, settings.cooldown_s, settings.arrival_scaling)
    spec = dataset_of(workload, settings)
    tokenizer = tokenizer_for(spec, endpoint.model_dir or endpoint.model, endpoint.metrics_url or endpoint.url)
    max_model_len = settings.max_model_len or (
        default_max_model_len(settings) if endpoint.model_dir else DATASET_MAX_LEN
    )
    plan = serving_plan(
        workload, arrivals, settings, rng, tokenizer, endpoint.vocab, max_model_len, endpoint.warmup_requests
    )
    offered = arrivals.rate if arrivals.rate is not None and math.isfinite(arrivals.rate) else None
    if offered is not None:  # an open loop: its gaps as drawn, or rescaled to the nominal span
        extra["arrival_scaling"] = arrivals.scaling
    return plan, {"offered_rate_rps": offered, "dataset": plan.dataset, **extra}

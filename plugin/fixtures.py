"""Fixtures only: each topology's servers (``plugin.serving.deploy``: started, or the user's), the power sampler
over the run's GPU budget (``plugin.power_sources``) and its idle baselines (``plugin.idle_baselines``), the DVFS
controller, and the per-benchmark load runner (``plugin.benchmark_load``, roles by ``plugin.gpu_roles``)."""

from __future__ import annotations

import functools
import random
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from dataclasses import asdict, replace
from typing import TYPE_CHECKING, Any, NoReturn

import pytest

from plugin import capacity_run
from plugin.analysis.capacity import candidate
from plugin.benchmark_load import measure_workload
from plugin.clock import now_s
from plugin.deploy_settings import deploy_options
from plugin.dvfs.controller import DvfsController
from plugin.dvfs.plan import DvfsSetting
from plugin.errors import BenchError
from plugin.gpu_roles import excluded_gpus, sampled_roles
from plugin.hookspec import extra_vllm_args
from plugin.idle_baselines import measure_baseline, use_loaded_baseline, write_session_power
from plugin.load.client import CANCELLED, STOPPED, Cancellation
from plugin.load.schedule import with_measured_end
from plugin.load.workload import SWEEP_MAX, SWEEP_SYNC, vocab_range
from plugin.options import Settings
from plugin.outcome import check_servers, fail, fail_on_errors, feed_benchmark, stop_topology, store
from plugin.power import PowerError, Sampler
from plugin.power.dcgm import DcgmBackend
from plugin.power.nvml_loader import load_nvml
from plugin.power.ray_nodes import node_stats, power_gpus
from plugin.power.remote_backend import RemoteBackend
from plugin.power_sources import open_sampler
from plugin.progress import Progress
from plugin.records.results import BenchmarkResult
from plugin.records.topology import UNUSED
from plugin.records.windows import NO_CONTEXT
from plugin.records.workload import Workload, load_id
from plugin.runner import Runner, WarmupFailed
from plugin.serving.deploy import DeployPlan, deploy, launcher_for
from plugin.serving.endpoint import Endpoint
from plugin.serving.process import shielded
from plugin.serving.topology import place
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
        fail(f"cannot connect to the Ray cluster at {address}: {error}")
    try:
        yield connection
    finally:
        connection.close()


@pytest.fixture(scope="session")
def deployments(ray_cluster: RayPlacement | None) -> Iterator[ExitStack]:
    """Every topology's servers, stopped at the end of the run whatever happened (each stop is safe to repeat),
    before the Ray connection (if any) closes; a second Ctrl-C meanwhile is dropped: the run is ending anyway."""
    stack = ExitStack()
    try:
        yield stack
    finally:
        with shielded(interrupt_after=False):
            stack.close()


@pytest.fixture
def served_topology(
    request: pytest.FixtureRequest,
    topology: str,
    bench_session: RunSession,
    deployments: ExitStack,
    ray_cluster: RayPlacement | None,
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
            chosen, placement, deploy_options(settings), bench_session.open_run,
            lambda entry: bench_session.record_deployment(chosen, entry), role_args, progress.say, vocab_range,
        )  # fmt: skip
        served = stack.enter_context(deploy(plan, functools.partial(launcher_for, placement=ray_cluster)))
    except BenchError as error:
        bench_session.dead_topologies[topology] = f"its servers did not start: {error}"
        fail(str(error))
    bench_session.endpoints[topology] = served.endpoint
    bench_session.server_processes[topology] = list(served.processes)
    bench_session.server_stoppers[topology] = stack.close
    return served.endpoint


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
        fail(f"power sampling cannot start: {error}; use --power-backend none to run without")
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
    capacity_run.skip_if_measured(bench_session, request.node.nodeid)
    searched = capacity_point(request)
    if searched is not None:  # a capacity search's rate is known (or the slot skipped) before any server starts
        plan = dvfs.id if settings.dvfs_requested else None
        rate = capacity_run.rate_or_skip(bench_session, candidate(topology, plan), searched)
    endpoint: Endpoint = request.getfixturevalue("served_topology")
    sampler: Sampler = request.getfixturevalue("power_sampler")
    try:
        endpoint = replace(endpoint, gpu_roles=sampled_roles(sampler, endpoint, settings))
    except BenchError as error:
        fail(str(error))
    excluded = excluded_gpus(sampler, endpoint.gpu_roles)
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
        load_key = f"{request.node.originalname}[{load_id(workload)}-{dvfs.id}]"
        rng = bench_session.rng_for(load_key)
        cancelling = _cancellation(settings, bench_session.rng_for(f"cancellation:{load_key}"))
        if searched is not None:
            workload = capacity_run.sized(workload, rate, settings)
        started_s = now_s()
        try:
            measurement, extra = measure_workload(
                bench_session, replace(runner, cancellation=cancelling), request.node.nodeid, workload, rng
            )
            if searched is not None:
                extra |= capacity_run.probe_extra(measurement, now_s() - started_s)
        except WarmupFailed as error:
            stop_topology(bench_session, topology, str(error))
        except BenchError as error:  # a dataset that cannot be used, a sweep point without its ends
            fail(str(error))
        result = store(request, bench_session, topology, workload, measurement, endpoint, dvfs_record, extra, excluded)
        if workload.sweep in (SWEEP_SYNC, SWEEP_MAX):  # every topology's later points take their rates from these
            ends = bench_session.sweep_ends.get(str(workload.dataset))
            throughput_rps = result.summary["request_throughput"]
            bench_session.sweep_ends[str(workload.dataset)] = with_measured_end(
                ends, topology, workload.sweep, throughput_rps
            )
        feed_benchmark(benchmark, [r.duration_s for r in measurement.rounds], workload, result)
        check_servers(bench_session, topology, measurement)
        fail_on_errors(
            [r for r in measurement.records if r.error not in (STOPPED, CANCELLED)],
            own_servers=settings.vllm_url is None,
        )
        return result

    return run


def _cancellation(settings: Settings, rng: random.Random) -> Cancellation | None:
    """The requests whose client leaves mid-answer (``--request-cancellation-rate``), drawn apart from the load's
    own draws, so the same prompts and arrivals come with or without it."""
    if settings.request_cancellation_pct is None:
        return None
    return Cancellation(settings.request_cancellation_pct, settings.request_cancellation_delay_s, rng.getrandbits(64))


def capacity_point(request: pytest.FixtureRequest) -> Workload | None:
    """The test's workload where it is a capacity search's probe or grid point, else ``None``."""
    callspec = getattr(request.node, "callspec", None)
    workload = None if callspec is None else callspec.params.get("workload")
    return workload if isinstance(workload, Workload) and capacity_run.is_search_point(workload) else None


def _skip_refused(bench_session: RunSession, name: str, dvfs: DvfsSetting, record: dict[str, Any]) -> NoReturn:
    """A setting the GPU refused: kept in the results, and the benchmark skipped saying why."""
    results = bench_session.results
    assert results is not None
    results.update(dvfs_refused=[*results.data.get("dvfs_refused", []), {"benchmark": name, **record}])
    pytest.skip(f"the GPU refused setting {dvfs.id}: {'; '.join(record['refused'])}")

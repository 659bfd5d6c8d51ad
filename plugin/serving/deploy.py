"""A topology's servers, up and ready, then stopped: the traditional server (one, or data parallel over several
GPUs), or the prefill and decode instances with the proxy in front (``plugin.serving.cluster``), or a server the
user runs (``--vllm-url``). Each deployment is a context manager: whatever happens inside it, or while its
servers load (a failure, Ctrl-C), none of its processes outlives it.

Each topology is written once, over a ``Launcher``: instances run as processes here (``local_launcher``) or, with
``--ray-address``, as Ray actors on the cluster's nodes (``ray_launcher``); the proxy always runs here.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from plugin.option_values import RAY_PLACEMENT_TIMEOUT_S
from plugin.records.topology import DISAGGREGATED, Topology
from plugin.serving import servers
from plugin.serving.cluster import ClusterInstance, cluster_instances, proxy_command
from plugin.serving.endpoint import Endpoint, build_tiny_model, served_model
from plugin.serving.launcher import Launcher, PlacedInstance
from plugin.serving.local_launcher import LocalLauncher
from plugin.serving.process import ManagedProcess, ServerProcess, shielded, start, wait_ready
from plugin.serving.topology import Placement, warmup_requests

if TYPE_CHECKING:
    from plugin.serving.ray_placement import RayPlacement

OpenRun = Callable[[str | None], Path]
"""Creates the run (given the vLLM version) and returns its folder, where the servers' logs go."""
Record = Callable[[dict[str, Any]], None]
"""Puts the deployment's entry (what runs where, with which command) into the results file."""
Vocab = Callable[[str], tuple[int, int]]
"""Token ids safe to send to a model, given its folder or name."""
LauncherFor = Callable[["DeployOptions", Path, Callable[[str], None]], Launcher]
"""The launcher of a deployment, given the options, the run folder and where progress lines go."""
ROLE_OF = {"server": "prefill+decode", "prefill": "prefill", "decode": "decode"}
"""An instance's role -> the role of the GPUs it was given."""


@dataclass(frozen=True, slots=True)
class DeployOptions:
    """What a deployment reads of the run's settings (the caller fills it from ``plugin.options.Settings``)."""

    vllm_python: str
    model: str | None
    """The user's model; ``None``: the suite's tiny model, built in ``model_cache_dir``."""
    model_cache_dir: Path
    max_model_len: int
    dtype: str | None
    vllm_args: tuple[str, ...]
    kv_connector: str
    server_start_timeout_s: float
    request_timeout_s: float
    vllm_url: str | None = None
    vllm_port: int | None = None
    ray_address: str | None = None
    nodes: Mapping[str, str | None] = field(default_factory=dict)
    """Role (``server``, ``prefill``, ``decode``) -> the Ray node named for it (``--server-node`` etc.)."""
    ray_placement_timeout_s: float = RAY_PLACEMENT_TIMEOUT_S
    """How long an instance may wait for its Ray node's GPUs (``--ray-placement-timeout-s``)."""


@dataclass(frozen=True, slots=True)
class Deployment:
    """Ready servers: the endpoint to send load to, and the processes the suite started (none for ``--vllm-url``)."""

    endpoint: Endpoint
    processes: tuple[ServerProcess, ...]


@dataclass(frozen=True, slots=True)
class DeployPlan:
    """What to deploy, where, and how it reports: the run folder, the results entry and progress lines."""

    topology: Topology
    placement: Placement
    options: DeployOptions
    open_run: OpenRun
    record: Record
    role_args: Mapping[str, tuple[str, ...]]
    """Conftest hooks' vLLM arguments per role (``server``, ``prefill``, ``decode``)."""
    say: Callable[[str], None]
    vocab: Vocab


def launcher_for(
    options: DeployOptions, folder: Path, say: Callable[[str], None], placement: RayPlacement | None = None
) -> Launcher:
    """Processes here, or with ``--ray-address`` actors on the cluster's nodes (which imports Ray), through the
    run's connection ``placement`` (one is opened without it)."""
    if options.ray_address:
        from plugin.serving.ray_launcher import RayLauncher
        from plugin.serving.ray_placement import RayPlacement

        return RayLauncher(
            placement or RayPlacement(options.ray_address), options.nodes, folder, say,
            placement_timeout_s=options.ray_placement_timeout_s,
        )  # fmt: skip
    return LocalLauncher(folder, say)


def deploy(plan: DeployPlan, launcher: LauncherFor = launcher_for) -> AbstractContextManager[Deployment]:
    """The topology's servers (a context manager), their instances started by ``launcher``."""
    if plan.options.vllm_url:
        return _external(plan, plan.options.vllm_url)
    return _disaggregated(plan, launcher) if plan.topology.kind == DISAGGREGATED else _traditional(plan, launcher)


def model_and_version(options: DeployOptions) -> tuple[str, str]:
    """The vLLM version (a clear error when the interpreter has none) and the model: the user's or the tiny one."""
    version = servers.vllm_version(options.vllm_python)
    return options.model or build_tiny_model(options.vllm_python, options.model_cache_dir), version


def base_spec(
    options: DeployOptions, model: str, role: str, port: int, gpus: tuple[int, ...], hook_args: tuple[str, ...] = ()
) -> servers.ServerSpec:
    """A server's spec; conftest hooks' vLLM arguments come first, so ``--vllm-arg`` wins a clash."""
    return servers.ServerSpec(
        role=role,
        python=options.vllm_python,
        model=model,
        port=port,
        gpus=gpus,
        max_model_len=options.max_model_len,
        dtype=options.dtype,
        extra_args=(*hook_args, *options.vllm_args),
    )


@contextmanager
def _external(plan: DeployPlan, url: str) -> Iterator[Deployment]:
    """The user's server (``--vllm-url``): nothing started, nothing stopped."""
    model = served_model(url)
    plan.open_run(None)
    plan.record({"mode": "external", "url": url, "model": model})
    # Power is sampled on --gpus, which the user sets to the GPUs of the server when it runs here.
    yield Deployment(Endpoint(url, model, plan.vocab(model), plan.placement.roles), ())


@contextmanager
def _traditional(plan: DeployPlan, launcher_of: LauncherFor) -> Iterator[Deployment]:
    """One server (``dp:N``: vLLM's ``--data-parallel-size N`` over the N GPUs)."""
    topology, placement, options = plan.topology, plan.placement, plan.options
    model, version = model_and_version(options)
    folder = plan.open_run(version)
    parallel = ("--data-parallel-size", str(topology.replicas)) if topology.replicas > 1 else ()
    port = options.vllm_port if topology.is_default and options.vllm_port else servers.free_port()
    hook_args = (*plan.role_args.get("server", ()), *parallel)
    spec = base_spec(options, model, "server", port, placement.server_gpus, hook_args)
    spec = replace(spec, cpu_instances=max(1, topology.replicas))  # dp:N on CPU: N engines share the cores
    launcher = launcher_of(options, folder, plan.say)
    try:
        (server,) = launcher.place([ClusterInstance("server", f"{topology.log_prefix}server", spec)])
        plan.record(server_entry(server, model, options.ray_address))
        processes = _started(launcher, [server], options.server_start_timeout_s)
        served = server.instance.spec
        # --served-model-name may name the model otherwise than its path: send what the server says it serves.
        endpoint = Endpoint(served.url, served_model(served.url), plan.vocab(model), placement.roles,
                            model_dir=model, node_gpus=node_gpus([server]),
                            warmup_requests=warmup_requests(topology, placement))  # fmt: skip
        yield Deployment(endpoint, tuple(processes))
    finally:
        with shielded():
            launcher.stop()


@contextmanager
def _disaggregated(plan: DeployPlan, launcher_of: LauncherFor) -> Iterator[Deployment]:
    """Prefill and decode instances with the ``--kv-connector``, and the proxy in front of them (here); the KV
    files of the ``example`` connector are removed at the end. On Ray, that connector's KV folder must be one that
    every node sees (one machine, or a shared file system); ``nixl`` needs none."""
    topology, placement, options = plan.topology, plan.placement, plan.options
    model, version = model_and_version(options)
    folder = plan.open_run(version)
    store = folder / f"{topology.log_prefix}kv_store"
    launcher = launcher_of(options, folder, plan.say)
    proxy_process: ManagedProcess | None = None
    try:
        base = base_spec(options, model, "prefill", 0, ())
        instances = cluster_instances(
            base, options.kv_connector, placement.prefill, placement.decode, store, plan.role_args,
            topology.log_prefix,
        )  # fmt: skip
        placed = launcher.place(instances)
        proxy_port = servers.free_port()
        proxy = proxy_command([p.instance for p in placed], options.kv_connector, proxy_port, options.request_timeout_s)
        proxy_name = f"{topology.log_prefix}proxy"
        plan.record(cluster_entry(options, proxy_port, model, proxy, proxy_name, placed))
        processes = _started(launcher, placed, options.server_start_timeout_s)
        proxy_process = start(
            proxy_name, proxy, servers.environment(base), folder / f"{proxy_name}.log", folder / "pids"
        )
        url = f"http://127.0.0.1:{proxy_port}"
        wait_ready(proxy_process, f"{url}/health", 60, "What to do: read the proxy's log above.", report=plan.say)
        decode = next(p.instance for p in placed if p.instance.role == "decode")
        endpoint = Endpoint(url, served_model(decode.spec.url), plan.vocab(model), placement.roles,
                            metrics_url=decode.spec.url, model_dir=model, node_gpus=node_gpus(placed),
                            warmup_requests=warmup_requests(topology, placement))  # fmt: skip
        yield Deployment(endpoint, (*processes, proxy_process))
    finally:  # the proxy first, then the instances; also on Ctrl-C while they load: none may outlive the run
        with shielded():
            if proxy_process is not None:
                proxy_process.stop()
            launcher.stop()
            shutil.rmtree(store, ignore_errors=True)


def start_order(placed: Sequence[PlacedInstance]) -> list[list[PlacedInstance]]:
    """The instances in groups, each started together and ready before the next group starts: all in one group,
    or one by one where two share a GPU (of one node). vLLM sizes its KV cache by the GPU memory it sees free;
    two instances loading at once on one GPU each count the other's memory as their own (on an H200 with vLLM
    0.26, decode was left 2,640 tokens of KV cache and prefill's first step took 127 s)."""
    gpus = [(p.node, p.instance.spec.host, gpu) for p in placed for gpu in p.instance.spec.gpus]
    return [[p] for p in placed] if len(set(gpus)) < len(gpus) else [list(placed)]


def _started(launcher: Launcher, placed: Sequence[PlacedInstance], timeout_s: float) -> list[ServerProcess]:
    """Every instance started and ready, in ``start_order``."""
    processes: list[ServerProcess] = []
    for group in start_order(placed):
        processes += [launcher.start(instance) for instance in group]
        launcher.wait_ready(group, timeout_s)
    return processes


def node_gpus(placed: Sequence[PlacedInstance]) -> tuple[tuple[str, int, str], ...]:
    """``(node id, GPU index on that node, role)`` of every GPU a cluster node gave an instance (none here)."""
    return tuple(
        (p.node.node_id, gpu, ROLE_OF[p.instance.role])
        for p in placed
        if p.node is not None
        for gpu in p.instance.spec.gpus
    )


def _node(placed: PlacedInstance) -> dict[str, Any]:
    """Where an instance runs on a cluster, as the results record it (nothing here)."""
    return {} if placed.node is None else {"node": {"address": placed.node.address, "node_id": placed.node.node_id}}


def server_entry(server: PlacedInstance, model: str, ray_address: str | None) -> dict[str, Any]:
    """The traditional server as the results record it: where, which GPUs, which command, which log."""
    spec = server.instance.spec
    return {
        "mode": "started",
        **({"ray_address": ray_address} if ray_address else {}),
        "url": spec.url,
        "model": model,
        "gpus": list(spec.gpus),
        "command": servers.command(spec),
        "log": f"{server.name}.log",
        **_node(server),
    }


def cluster_entry(
    options: DeployOptions,
    proxy_port: int,
    model: str,
    proxy: list[str],
    proxy_name: str,
    placed: Sequence[PlacedInstance],
) -> dict[str, Any]:
    """The cluster as the results record it: connector, proxy, and each instance's role, GPUs, command (and node)."""
    entry = {
        "kv_connector": options.kv_connector,
        "url": f"http://127.0.0.1:{proxy_port}",
        "model": model,
        "proxy": {"command": proxy, "log": f"{proxy_name}.log"},
        "instances": [
            {
                "name": p.name,
                "role": p.instance.role,
                "url": p.url,
                "gpus": list(p.instance.spec.gpus),
                "command": servers.command(p.instance.spec),
                "log": f"{p.name}.log",
                **_node(p),
            }
            for p in placed
        ],
    }
    return {**entry, "ray_address": options.ray_address} if options.ray_address else entry

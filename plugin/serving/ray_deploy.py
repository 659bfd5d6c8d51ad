"""A topology's servers on a running Ray cluster (``--ray-address``): each vLLM instance (the traditional server, or
each prefill and decode instance) is an ``InstanceActor`` on the node that has its GPUs (``ray_placement``); the
proxy stays here and reaches the instances at their nodes' addresses. Stopped as locally: the proxy, then the
instances. Imported only on that path; Ray itself only inside functions.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from plugin.errors import ServerStartError
from plugin.load.workload import vocab_range
from plugin.options import Settings
from plugin.serving import servers
from plugin.serving.cluster import ClusterInstance, cluster_instances, proxy_command
from plugin.serving.deploy import (
    START_HINT,
    Deployment,
    DeployPlan,
    base_spec,
    cluster_entry,
    model_and_version,
)
from plugin.serving.endpoint import Endpoint, served_model
from plugin.serving.process import ManagedProcess, start, wait_ready
from plugin.serving.ray_placement import InstanceHandle, RayPlacement, start_instances, stop_all, wait_all_ready
from plugin.serving.topology import DISAGGREGATED, warmup_requests

ROLE_OF = {"server": "prefill+decode", "prefill": "prefill", "decode": "decode"}
"""An instance's role -> the role of the GPUs it was given."""
ACTOR_TIMEOUT_S = 10.0


@dataclass(frozen=True)
class RayProcess:
    """An instance on a Ray node as the server checks see a process (``plugin.outcome.exited``): its exit code and
    log tail come from its actor; ``log_path`` is on that node's disk."""

    handle: InstanceHandle
    log_path: Path

    @property
    def name(self) -> str:
        return self.handle.instance.name

    def exit_code(self) -> int | None:
        """The server's exit code; -1 when its actor is gone (its watchdog has then ended the server)."""
        import ray

        try:
            code: int | None = ray.get(self.handle.actor.exit_code.remote(), timeout=ACTOR_TIMEOUT_S)
        except (ray.exceptions.RayError, TimeoutError):
            return -1
        return code

    def tail(self, lines: int = 30) -> str:
        import ray

        try:
            return str(ray.get(self.handle.actor.log_tail.remote(lines), timeout=ACTOR_TIMEOUT_S))
        except (ray.exceptions.RayError, TimeoutError) as error:
            return f"(its Ray actor on {self.handle.node.address} is gone: {type(error).__name__})"

    def stop(self) -> None:
        stop_all([self.handle])


def node_entry(handle: InstanceHandle) -> dict[str, str]:
    """Where an instance runs, as the results record it."""
    return {"address": handle.node.address, "node_id": handle.node.node_id}


def node_gpus(handles: Sequence[InstanceHandle]) -> tuple[tuple[str, int, str], ...]:
    """``(node id, GPU index on that node, role)`` of every GPU Ray gave an instance."""
    return tuple(
        (handle.node.node_id, gpu, ROLE_OF[handle.instance.role])
        for handle in handles
        for gpu in handle.instance.spec.gpus
    )


def deploy_on_ray(plan: DeployPlan) -> AbstractContextManager[Deployment]:
    return _disaggregated(plan) if plan.topology.kind == DISAGGREGATED else _traditional(plan)


def _started(
    settings: Settings, instances: Sequence[ClusterInstance], folder: Path, say: Callable[[str], None]
) -> list[InstanceHandle]:
    """The instances placed and started on their nodes (logs and pid files in ``folder`` on each node's disk)."""
    assert settings.ray_address is not None
    nodes = {"server": settings.server_node, "prefill": settings.prefill_node, "decode": settings.decode_node}
    handles = start_instances(RayPlacement(settings.ray_address), instances, nodes, folder, folder / "pids")
    for handle in handles:
        say(f"{handle.instance.name} starting on Ray node {handle.node.address} ({handle.node.node_id[:8]})")
    return handles


def _ready(handles: Sequence[InstanceHandle], settings: Settings, say: Callable[[str], None]) -> None:
    try:
        wait_all_ready(handles, settings.server_start_timeout_s, say)
    except ServerStartError as error:
        raise ServerStartError(f"{error}\n{START_HINT}") from None


@contextmanager
def _traditional(plan: DeployPlan) -> Iterator[Deployment]:
    """One server (``dp:N``: over N GPUs of one node) as an actor on the node ``--server-node`` names, if any."""
    topology, placement, settings = plan.topology, plan.placement, plan.settings
    hook_args = plan.role_args.get("server", ())
    model, version = model_and_version(settings)
    folder = plan.open_run(version)
    parallel = ("--data-parallel-size", str(topology.replicas)) if topology.replicas > 1 else ()
    spec = base_spec(settings, model, "server", 0, placement.server_gpus, (*hook_args, *parallel))
    name = f"{topology.log_prefix}server"
    handles: list[InstanceHandle] = []
    try:
        handles = _started(settings, [ClusterInstance("server", name, spec)], folder, plan.say)
        served = handles[0].instance.spec
        plan.record({"mode": "started", "ray_address": settings.ray_address, "url": served.url, "model": model,
                "gpus": list(served.gpus), "command": servers.command(served), "log": f"{name}.log",
                "node": node_entry(handles[0])})  # fmt: skip
        _ready(handles, settings, plan.say)
        endpoint = Endpoint(served.url, served_model(served.url), vocab_range(model), placement.roles,
                            model_dir=model, node_gpus=node_gpus(handles),
                            warmup_requests=warmup_requests(topology, placement))  # fmt: skip
        yield Deployment(endpoint, (RayProcess(handles[0], folder / f"{name}.log"),))
    finally:
        stop_all(handles)


@contextmanager
def _disaggregated(plan: DeployPlan) -> Iterator[Deployment]:
    """Prefill and decode instances on their nodes, the proxy here. The ``example`` connector's KV folder must be
    one that every node sees (one machine, or a shared file system); ``nixl`` needs none."""
    topology, placement, settings = plan.topology, plan.placement, plan.settings
    role_args = plan.role_args
    model, version = model_and_version(settings)
    folder = plan.open_run(version)
    store = folder / f"{topology.log_prefix}kv_store"
    handles: list[InstanceHandle] = []
    proxy_process: ManagedProcess | None = None
    try:
        base = base_spec(settings, model, "prefill", 0, ())
        instances = cluster_instances(
            base, settings.kv_connector, placement.prefill, placement.decode, store, role_args, topology.log_prefix
        )
        handles = _started(settings, instances, folder, plan.say)
        placed = [handle.instance for handle in handles]
        proxy_port = servers.free_port()
        proxy = proxy_command(placed, settings.kv_connector, proxy_port, settings.request_timeout_s)
        proxy_name = f"{topology.log_prefix}proxy"
        entry = cluster_entry(settings.kv_connector, proxy_port, model, proxy, proxy_name, placed)
        plan.record(_with_nodes(entry, handles, settings.ray_address))
        _ready(handles, settings, plan.say)
        proxy_process = start(proxy_name, proxy, servers.environment(base), folder / f"{proxy_name}.log",
                              folder / "pids")  # fmt: skip
        url = f"http://127.0.0.1:{proxy_port}"
        wait_ready(proxy_process, f"{url}/health", 60, "What to do: read the proxy's log above.", report=plan.say)
        decode = next(handle.instance for handle in handles if handle.instance.role == "decode")
        endpoint = Endpoint(url, served_model(decode.spec.url), vocab_range(model), placement.roles,
                            metrics_url=decode.spec.url, model_dir=model, node_gpus=node_gpus(handles),
                            warmup_requests=warmup_requests(topology, placement))  # fmt: skip
        ray_processes = tuple(RayProcess(h, folder / f"{h.instance.name}.log") for h in handles)
        yield Deployment(endpoint, (*ray_processes, proxy_process))
    finally:  # the proxy first, then the instances; also on Ctrl-C while they load
        if proxy_process is not None:
            proxy_process.stop()
        stop_all(handles)
        shutil.rmtree(store, ignore_errors=True)


def _with_nodes(entry: dict[str, Any], handles: Sequence[InstanceHandle], address: str | None) -> dict[str, Any]:
    """The cluster's entry with each instance's node, and the cluster's address as given."""
    for instance, handle in zip(entry["instances"], handles, strict=True):
        instance["node"] = node_entry(handle)
    return {**entry, "ray_address": address}

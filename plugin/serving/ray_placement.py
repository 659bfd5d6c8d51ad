"""Ray placement (``--ray-address``): each vLLM instance is a Ray actor pinned to a node that has its GPUs.

Imported only when ``--ray-address`` is given (``ray`` is the ``ray`` extra). An actor owns its vLLM process
through ``plugin.serving.process``: its own process group, a log and a pid file on the actor's node (where
``cleanup_all_nodes`` finds it), and a parent-death signal. If the actor dies without ``stop()`` (``ray.kill``,
its driver gone), Ray SIGKILLs the worker's own children, the server's leader among them (else its
PR_SET_PDEATHSIG SIGTERM ends it), but not their children (vLLM's engine core): a watchdog, out of the actor's
children and in a session of its own, sees the actor gone within 0.2 s and stops the server's whole group
(SIGTERM, then SIGKILL after the grace period).
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from plugin.errors import BenchError, ServerStartError
from plugin.serving.cluster import ClusterInstance
from plugin.serving.process import ManagedProcess, http_ok, log_tail, start
from plugin.serving.servers import ServerSpec, command, environment, free_port

# Forks out of the actor's children (Ray SIGKILLs a dead worker's children, not theirs), then polls the actor (by
# pid and start time) and the server's group; SIGTERM is ignored: a plain stop ends the group, and with it this.
_WATCHDOG = """
import os, signal, sys, time
from plugin.serving.process import group_alive, kill_group
def born(pid):
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rsplit(")", 1)[1].split()[19]
    except OSError:
        return None
parent, pgid, grace_s = int(sys.argv[1]), int(sys.argv[2]), float(sys.argv[3])
birth = born(parent)
if os.fork():
    os._exit(0)
signal.signal(signal.SIGTERM, signal.SIG_IGN)
while group_alive(pgid):
    if born(parent) != birth:
        kill_group(pgid, grace_s)
        break
    time.sleep(0.2)
"""


@dataclass(frozen=True, slots=True)
class RayNode:
    """An alive node of the Ray cluster, as ``ray.nodes()`` describes it."""

    node_id: str
    address: str
    resources: Mapping[str, float]
    labels: Mapping[str, str]

    @property
    def gpus(self) -> int:
        return int(self.resources.get("GPU", 0))

    def describe(self, gpus_taken: float = 0) -> str:
        custom = sorted(k for k in self.resources if k not in ("CPU", "GPU", "memory", "object_store_memory"))
        labels = ",".join(f"{k}={v}" for k, v in sorted(self.labels.items()) if not k.startswith("ray.io/"))
        return (
            f"{self.address} (id {self.node_id[:8]}, GPUs {self.gpus}, free {self.gpus - gpus_taken:g}"
            f"{', resources ' + ','.join(r for r in custom if not r.startswith('node:')) if custom else ''}"
            f"{', labels ' + labels if labels else ''})"
        )

    def matches(self, selector: str) -> bool:
        """By IP, node id (or its first 8+ characters), ``key=value`` label, or a custom resource it has."""
        key, _, value = selector.partition("=")
        if value:
            return self.labels.get(key) == value
        by_id = len(selector) >= 8 and self.node_id.startswith(selector)
        return selector in (self.address, f"node:{self.address}") or by_id or self.resources.get(selector, 0) > 0


def alive_nodes(raw: Sequence[Mapping[str, Any]]) -> list[RayNode]:
    return [
        RayNode(n["NodeID"], n["NodeManagerAddress"], dict(n.get("Resources", {})), dict(n.get("Labels", {})))
        for n in raw
        if n.get("Alive")
    ]


def choose_node(
    nodes: Sequence[RayNode],
    name: str,
    gpus: int,
    selector: str | None,
    taken: Mapping[str, float],
    placed: Mapping[str, int] | None = None,
) -> RayNode:
    """The node for one instance: among those ``selector`` names (all without one), the first with ``gpus`` free
    GPUs (``taken``: GPUs handed out per node id), or for CPU-only instances the one with the fewest ``placed``;
    a ``BenchError`` that lists the nodes otherwise."""
    candidates = [node for node in nodes if selector is None or node.matches(selector)]
    fits = [node for node in candidates if node.gpus - taken.get(node.node_id, 0) >= gpus]
    if fits:
        return fits[0] if gpus else min(fits, key=lambda node: (placed or {}).get(node.node_id, 0))
    listing = "; ".join(node.describe(taken.get(node.node_id, 0)) for node in nodes) or "none alive"
    where = f" named by {selector!r}" if selector else ""
    raise BenchError(
        f"no Ray node{where} has {gpus} free GPU(s) for {name}. Nodes: {listing}. Name a node by IP, id, "
        "label (key=value) or custom resource with --prefill-node/--decode-node, or ask for fewer GPUs."
    )


class RayPlacement:
    """A connection to a running Ray cluster and the GPUs handed out on it so far."""

    def __init__(self, address: str) -> None:
        import ray

        self._owns_connection = not ray.is_initialized()
        if self._owns_connection:
            ray.init(address=address, namespace="pd-energy-bench", log_to_driver=False, include_dashboard=False)
        self.address = address
        self._taken: dict[str, float] = {}
        self._placed: dict[str, int] = {}

    def nodes(self) -> list[RayNode]:
        import ray

        return alive_nodes(ray.nodes())  # type: ignore[no-untyped-call]

    def node_for(self, name: str, gpus: int, selector: str | None = None) -> RayNode:
        node = choose_node(self.nodes(), name, gpus, selector, self._taken, self._placed)
        self._taken[node.node_id] = self._taken.get(node.node_id, 0) + gpus
        self._placed[node.node_id] = self._placed.get(node.node_id, 0) + 1
        return node

    def close(self) -> None:
        import ray

        if self._owns_connection and ray.is_initialized():
            ray.shutdown()


class InstanceActor:
    """Runs on the chosen node (as ``ray.remote(InstanceActor)``): serves ``spec`` on the node's IP and a port
    free there, on the GPUs Ray assigned; every method returns at once, so ``stop()`` never waits in a queue."""

    def __init__(self, name: str, spec: ServerSpec, log_dir: str, pid_dir: str, grace_s: float = 20.0) -> None:
        import ray

        host: str = ray.util.get_node_ip_address()  # type: ignore[no-untyped-call]
        gpus = tuple(int(gpu) for gpu in ray.get_gpu_ids()) if spec.gpus else ()
        env = spec.extra_env
        if any(key == "VLLM_NIXL_SIDE_CHANNEL_PORT" for key, _ in env):
            env += (("VLLM_NIXL_SIDE_CHANNEL_HOST", host),)
        self.spec = replace(spec, host=host, port=free_port(host), gpus=gpus, extra_env=env)
        self.grace_s = grace_s
        log, pids = Path(log_dir), Path(pid_dir)
        self.process = start(name, command(self.spec), environment(self.spec), log / f"{name}.log", pids)
        root = str(Path(__file__).resolve().parents[2])
        watch = [sys.executable, "-c", _WATCHDOG, str(os.getpid()), str(self.process.pid), str(grace_s)]
        self.watchdog: ManagedProcess = start(
            f"{name}-watchdog", watch, {**os.environ, "PYTHONPATH": root}, log / f"{name}-watchdog.log", pids
        )
        self.watchdog.popen.wait(timeout=30)  # forked out of our children: armed before the actor is ready

    def served_spec(self) -> ServerSpec:
        return self.spec

    def pids(self) -> tuple[int, int]:
        """The process group ids of the server and of the watchdog."""
        return self.process.pid, self.watchdog.pid

    def exit_code(self) -> int | None:
        return self.process.exit_code()

    def log_tail(self, lines: int = 30) -> str:
        return log_tail(self.process.log_path, lines)

    def stop(self) -> int | None:
        """SIGTERM, then SIGKILL, the server's group; then the watchdog. Safe to call twice; the exit code."""
        self.process.stop(self.grace_s)
        self.watchdog.stop(5.0)
        return self.process.exit_code()


@dataclass(frozen=True)
class InstanceHandle:
    """A started instance: where it serves (``instance.spec`` has the node's IP and port), on which node."""

    instance: ClusterInstance
    node: RayNode
    actor: Any

    @property
    def url(self) -> str:
        return self.instance.spec.url


def _pinned(node: RayNode, gpus: int) -> dict[str, Any]:
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    strategy = NodeAffinitySchedulingStrategy(node_id=node.node_id, soft=False)
    return {"num_cpus": 0, "num_gpus": gpus, "scheduling_strategy": strategy}


def start_instances(
    placement: RayPlacement,
    instances: Sequence[ClusterInstance],
    node_for_role: Mapping[str, str | None],
    log_dir: Path,
    pid_dir: Path,
    grace_s: float = 20.0,
) -> list[InstanceHandle]:
    """Place and start every instance at once (not ready yet: ``wait_all_ready``); on a failure, stop those
    started. ``log_dir`` and ``pid_dir`` are absolute paths that each node writes to on its own disk."""
    import ray

    actor_class = ray.remote(max_restarts=0, max_task_retries=0)(InstanceActor)
    handles: list[InstanceHandle] = []
    try:
        for instance in instances:
            if instance.kv_address is not None:
                raise BenchError(f"--kv-connector p2pnccl is not supported with --ray-address ({instance.name})")
            gpus = len(instance.spec.gpus)
            node = placement.node_for(instance.name, gpus, node_for_role.get(instance.role))
            actor = actor_class.options(**_pinned(node, gpus)).remote(
                instance.name, instance.spec, str(log_dir), str(pid_dir), grace_s
            )
            handles.append(InstanceHandle(instance, node, actor))
        specs = ray.get([handle.actor.served_spec.remote() for handle in handles])
    except BaseException:
        stop_all(handles)
        raise
    return [replace(h, instance=replace(h.instance, spec=s)) for h, s in zip(handles, specs, strict=True)]


def wait_all_ready(
    handles: Sequence[InstanceHandle],
    timeout_s: float,
    report: Callable[[str], None] = lambda text: None,
    probe: Callable[[str], bool] = http_ok,
) -> None:
    """Poll each instance's ``/health`` from here (as the proxy will reach it); fail at once, with its log tail,
    when one exits."""
    import ray

    started = time.monotonic()
    waiting = list(handles)
    while waiting:
        for handle in list(waiting):
            code = ray.get(handle.actor.exit_code.remote())
            if code is not None:
                tail = ray.get(handle.actor.log_tail.remote())
                raise ServerStartError(
                    f"{handle.instance.name} on Ray node {handle.node.address} exited with code {code} before it "
                    f"was ready.\nLast lines of its log:\n{tail}"
                )
            if probe(f"{handle.url}/health"):
                elapsed_s = time.monotonic() - started
                report(f"{handle.instance.name} ready on {handle.node.address} after {elapsed_s:.0f} s")
                waiting.remove(handle)
        if waiting and time.monotonic() - started > timeout_s:
            names = ", ".join(f"{h.instance.name} ({h.url})" for h in waiting)
            raise ServerStartError(f"not ready after {timeout_s:.0f} s: {names}")
        time.sleep(0.5)


def stop_all(handles: Sequence[InstanceHandle], timeout_s: float = 40.0) -> list[int | None]:
    """Stop every instance at once, then end its actor; an actor that does not answer is killed, and its
    watchdog ends the server. The exit codes, ``None`` where unknown."""
    import ray

    refs = [handle.actor.stop.remote() for handle in handles]
    codes: list[int | None] = []
    for handle, ref in zip(handles, refs, strict=True):
        try:
            codes.append(ray.get(ref, timeout=timeout_s))
        except (ray.exceptions.RayError, TimeoutError):
            codes.append(None)
        ray.kill(handle.actor, no_restart=True)
    return codes


def _cleanup_here(reports_dir: str) -> list[str]:
    from plugin.serving.cleanup import cleanup

    return cleanup(Path(reports_dir))


def cleanup_all_nodes(address: str, reports_dir: Path) -> list[str]:
    """``plugin.serving.cleanup`` on every host of the cluster (one task pinned to one node of each IP: nodes of
    one host share its disk); what each did, by host. A crashed driver's actors are ended by Ray, and their
    watchdogs end the servers: this is for what even that missed."""
    import ray

    placement = RayPlacement(address)
    try:
        task = ray.remote(_cleanup_here)
        hosts = list({node.address: node for node in placement.nodes()}.values())
        refs = [task.options(**_pinned(node, 0)).remote(str(reports_dir.resolve())) for node in hosts]
        pairs = zip(hosts, ray.get(refs), strict=True)
        return [f"{node.address}: {line}" for node, lines in pairs for line in lines]
    finally:
        placement.close()

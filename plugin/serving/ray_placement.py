"""Node choice on a Ray cluster (``--ray-address``): its alive nodes with the resources free on each now, the node
for each instance (named by ``--prefill-node`` / ``--decode-node`` / ``--server-node``, with free GPUs: another
job's actors hold theirs), and the connection the run holds. Ray itself is imported only inside functions (``ray``
is the ``ray`` extra).
"""

from __future__ import annotations

import socket
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from plugin.errors import BenchError


@dataclass(frozen=True, slots=True)
class RayNode:
    """An alive node of the Ray cluster, as ``ray.nodes()`` describes it."""

    node_id: str
    address: str
    resources: Mapping[str, float]
    labels: Mapping[str, str]
    available: Mapping[str, float] | None = None
    """The resources free on it when it was listed (``None``: not known, taken as all of them)."""

    @property
    def gpus(self) -> int:
        return int(self.resources.get("GPU", 0))

    @property
    def free_gpus(self) -> float:
        """GPUs no actor or task holds (Ray leaves a resource that is all taken out of ``available``)."""
        return self.gpus if self.available is None else self.available.get("GPU", 0.0)

    def describe(self, gpus_taken: float = 0) -> str:
        custom = sorted(k for k in self.resources if k not in ("CPU", "GPU", "memory", "object_store_memory"))
        labels = ",".join(f"{k}={v}" for k, v in sorted(self.labels.items()) if not k.startswith("ray.io/"))
        return (
            f"{self.address} (id {self.node_id[:8]}, GPUs {self.gpus}, free {self.free_gpus - gpus_taken:g}"
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


def alive_nodes(
    raw: Sequence[Mapping[str, Any]], available: Mapping[str, Mapping[str, float]] | None = None
) -> list[RayNode]:
    """``ray.nodes()``'s alive ones, each with its free resources from ``available`` (node id -> resources)."""
    return [
        RayNode(n["NodeID"], n["NodeManagerAddress"], dict(n.get("Resources", {})), dict(n.get("Labels", {})),
                None if available is None else dict(available.get(n["NodeID"], {})))
        for n in raw
        if n.get("Alive")
    ]  # fmt: skip


def choose_node(
    nodes: Sequence[RayNode],
    name: str,
    gpus: int,
    selector: str | None,
    taken: Mapping[str, float],
    placed: Mapping[str, int] | None = None,
) -> RayNode:
    """The node for one instance: among those ``selector`` names (all without one), the first with ``gpus`` GPUs
    free now (``taken``: GPUs handed out since the nodes were listed, per node id), else the first with that many
    at all (the instance then waits for another job to free them: ``RayLauncher`` bounds the wait), or for CPU-only
    instances the one with the fewest ``placed``; a ``BenchError`` that lists the nodes otherwise."""
    candidates = [node for node in nodes if selector is None or node.matches(selector)]
    free = [node for node in candidates if node.free_gpus - taken.get(node.node_id, 0) >= gpus]
    if free:
        return free[0] if gpus else min(free, key=lambda node: (placed or {}).get(node.node_id, 0))
    busy = [node for node in candidates if node.gpus - taken.get(node.node_id, 0) >= gpus]
    if busy:
        return busy[0]
    listing = "; ".join(node.describe(taken.get(node.node_id, 0)) for node in nodes) or "none alive"
    where = f" named by {selector!r}" if selector else ""
    raise BenchError(
        f"no Ray node{where} has {gpus} free GPU(s) for {name}. Nodes: {listing}. Name a node by IP, id, "
        "label (key=value) or custom resource with --prefill-node/--decode-node, or ask for fewer GPUs."
    )


def require_reachable(address: str, timeout_s: float = 3.0) -> None:
    """A TCP connect to ``HOST:PORT`` (or ``ray://HOST:PORT``) within ``timeout_s``: ``ray.init`` retries an address
    where nothing listens for about 14 minutes without a word. ``auto`` and other forms are left to Ray."""
    host, colon, port = address.removeprefix("ray://").rpartition(":")
    if not colon or not port.isdigit():
        return
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=timeout_s).close()
    except OSError as error:
        raise BenchError(
            f"--ray-address {address}: nothing answers there within {timeout_s:g} s ({error}). What to do: start "
            "the cluster (ray start --head) and give the address `ray status` prints on its head node, or leave "
            "--ray-address out to run here"
        ) from None


class RayPlacement:
    """The run's connection to a running Ray cluster (one for the session: deployments and samplers share it)."""

    def __init__(self, address: str) -> None:
        import ray

        self._owns_connection = not ray.is_initialized()
        if self._owns_connection:
            ray.init(address=address, namespace="pd-energy-bench", log_to_driver=False, include_dashboard=False)
        self.address = address

    def nodes(self) -> list[RayNode]:
        """The alive nodes, each with what is free on it now (other jobs' actors hold the rest)."""
        import ray
        from ray._private.state import available_resources_per_node  # a DeveloperAPI: Ray's own TPU code uses it

        return alive_nodes(ray.nodes(), available_resources_per_node())  # type: ignore[no-untyped-call]

    def nodes_for(self, wanted: Sequence[tuple[str, int, str | None]]) -> list[RayNode]:
        """A node for each ``(name, gpus, selector)``, chosen together from one listing of the nodes: Ray counts
        an actor's GPUs as taken only once it is placed, so the ones chosen here are counted here."""
        nodes = self.nodes()
        taken: dict[str, float] = {}
        placed: dict[str, int] = {}
        chosen = []
        for name, gpus, selector in wanted:
            node = choose_node(nodes, name, gpus, selector, taken, placed)
            taken[node.node_id] = taken.get(node.node_id, 0) + gpus
            placed[node.node_id] = placed.get(node.node_id, 0) + 1
            chosen.append(node)
        return chosen

    def close(self) -> None:
        import ray

        if self._owns_connection and ray.is_initialized():
            ray.shutdown()


def pinned(node: RayNode, gpus: int) -> dict[str, Any]:
    """Ray options that run an actor or task on ``node``, with ``gpus`` GPUs of it."""
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    strategy = NodeAffinitySchedulingStrategy(node_id=node.node_id, soft=False)
    return {"num_cpus": 0, "num_gpus": gpus, "scheduling_strategy": strategy}

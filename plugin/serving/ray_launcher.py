"""Instances as Ray actors (``InstanceActor``) on a running cluster's nodes (``--ray-address``): each on the node
``ray_placement`` chooses for its role, serving on that node's address, its log and pid file on that node's
disk. Ray itself is imported only inside functions.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from plugin.errors import BenchError, ServerStartError
from plugin.option_values import RAY_PLACEMENT_TIMEOUT_S
from plugin.serving.cluster import ClusterInstance
from plugin.serving.instance_actor import InstanceActor
from plugin.serving.launcher import START_HINT, Node, PlacedInstance
from plugin.serving.process import http_ok
from plugin.serving.ray_placement import RayNode, RayPlacement, pinned

ACTOR_TIMEOUT_S = 10.0
STOP_TIMEOUT_S = 40.0


@dataclass(frozen=True)
class RayProcess:
    """An instance on a Ray node as the server checks see a process (``plugin.outcome``): its exit code and log
    tail come from its actor; ``log_path`` is on that node's disk."""

    name: str
    actor: Any
    node: RayNode
    log_path: Path

    def exit_code(self) -> int | None:
        """The server's exit code; -1 when its actor is gone (its watchdog has then ended the server)."""
        import ray

        try:
            code: int | None = ray.get(self.actor.exit_code.remote(), timeout=ACTOR_TIMEOUT_S)
        except (ray.exceptions.RayError, TimeoutError):
            return -1
        return code

    def tail(self, lines: int = 30) -> str:
        import ray

        try:
            return str(ray.get(self.actor.log_tail.remote(lines), timeout=ACTOR_TIMEOUT_S))
        except (ray.exceptions.RayError, TimeoutError) as error:
            return f"(its Ray actor on {self.node.address} is gone: {type(error).__name__})"

    def stop(self) -> None:
        stop_actors([self.actor])


class RayLauncher:
    """Places each instance on a node (``nodes``: role -> ``--prefill-node`` etc.) of the run's connection
    (``placement``, the session's), as an actor that starts its server when told; stops them all at once."""

    def __init__(
        self,
        placement: RayPlacement,
        nodes: Mapping[str, str | None],
        folder: Path,
        say: Callable[[str], None] = lambda text: None,
        grace_s: float = 20.0,
        placement_timeout_s: float = RAY_PLACEMENT_TIMEOUT_S,
    ) -> None:
        self.placement = placement
        self.nodes, self.folder, self.say, self.grace_s = nodes, folder, say, grace_s
        self.placement_timeout_s = placement_timeout_s
        self._actors: dict[str, tuple[Any, RayNode]] = {}

    def place(self, instances: Sequence[ClusterInstance]) -> list[PlacedInstance]:
        """An actor per instance on its node, placed within ``placement_timeout_s``; a ``BenchError`` listing the
        nodes when one has no room, or naming the node and the GPUs an instance still waits for."""
        import ray

        actor_class = ray.remote(max_restarts=0, max_task_retries=0)(InstanceActor)
        for instance in instances:
            if instance.kv_address is not None:
                raise BenchError(f"--kv-connector p2pnccl is not supported with --ray-address ({instance.name})")
        wanted = [(i.name, len(i.spec.gpus), self.nodes.get(i.role)) for i in instances]
        for instance, node in zip(instances, self.placement.nodes_for(wanted), strict=True):
            actor = actor_class.options(**pinned(node, len(instance.spec.gpus))).remote(
                instance.name, instance.spec, str(self.folder), str(self.folder / "pids"), self.grace_s
            )
            self._actors[instance.name] = (actor, node)
        refs = [self._actors[instance.name][0].served_spec.remote() for instance in instances]
        _, waiting = ray.wait(refs, num_returns=len(refs), timeout=self.placement_timeout_s)
        if waiting:
            stuck = [instance for instance, ref in zip(instances, refs, strict=True) if ref in waiting]
            error = BenchError(self._waiting(stuck))
            for instance in instances:  # none has a server yet: nothing for stop() to wait on
                ray.kill(self._actors.pop(instance.name)[0], no_restart=True)
            raise error
        specs = ray.get(refs)
        nodes = [self._actors[instance.name][1] for instance in instances]
        return [
            PlacedInstance(replace(instance, spec=spec), Node(node.node_id, node.address))
            for instance, spec, node in zip(instances, specs, nodes, strict=True)
        ]

    def _waiting(self, stuck: Sequence[ClusterInstance]) -> str:
        """Which instances still wait for their node's GPUs, with each node as it is now."""
        now = {node.node_id: node for node in self.placement.nodes()}
        parts = []
        for instance in stuck:
            node = self._actors[instance.name][1]
            parts.append(f"{instance.name} waits for {len(instance.spec.gpus)} GPU(s) on Ray node "
                         f"{now.get(node.node_id, node).describe()}")  # fmt: skip
        return (
            f"not placed within {self.placement_timeout_s:g} s: {'; '.join(parts)}. Another job holds those GPUs "
            "(ray status, ray list actors): free them, name another node with --prefill-node/--decode-node/"
            "--server-node, or ask for fewer GPUs"
        )

    def start(self, placed: PlacedInstance) -> RayProcess:
        import ray

        actor, node = self._actors[placed.name]
        ray.get(actor.start.remote())
        self.say(f"{placed.name} starting on Ray node {node.address} ({node.node_id[:8]})")
        return RayProcess(placed.name, actor, node, self.folder / f"{placed.name}.log")

    def wait_ready(self, placed: Sequence[PlacedInstance], timeout_s: float) -> None:
        """Poll each instance's ``/health`` from here (as the proxy will reach it); fail at once, with its log
        tail, when one exits."""
        import ray

        started = time.monotonic()
        waiting = list(placed)
        while waiting:
            for instance in list(waiting):
                actor, node = self._actors[instance.name]
                code = ray.get(actor.exit_code.remote())
                if code is not None:
                    tail = ray.get(actor.log_tail.remote())
                    raise ServerStartError(
                        f"{instance.name} on Ray node {node.address} exited with code {code} before it was ready."
                        f"\nLast lines of its log:\n{tail}\n{START_HINT}"
                    )
                if http_ok(f"{instance.url}/health"):
                    elapsed_s = time.monotonic() - started
                    self.say(f"{instance.name} ready on {node.address} after {elapsed_s:.0f} s")
                    waiting.remove(instance)
            if waiting and time.monotonic() - started > timeout_s:
                names = ", ".join(f"{i.name} ({i.url})" for i in waiting)
                raise ServerStartError(f"not ready after {timeout_s:.0f} s: {names}\n{START_HINT}")
            time.sleep(0.5)

    def stop(self) -> None:
        actors, self._actors = [actor for actor, _ in self._actors.values()], {}
        stop_actors(actors)


def stop_actors(actors: Sequence[Any], timeout_s: float = STOP_TIMEOUT_S) -> None:
    """Stop every instance at once, then end its actor; an actor that does not answer is killed, and its
    watchdog ends the server."""
    import ray

    refs = [actor.stop.remote() for actor in actors]
    for actor, ref in zip(actors, refs, strict=True):
        try:
            ray.get(ref, timeout=timeout_s)
        except (ray.exceptions.RayError, TimeoutError):
            pass
        ray.kill(actor, no_restart=True)

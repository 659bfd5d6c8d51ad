"""Instances as processes on this machine (``plugin.serving.process``): each in its own process group, with its
log and pid file in the run folder."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

from plugin.serving import servers
from plugin.serving.cluster import ClusterInstance
from plugin.serving.launcher import START_HINT, PlacedInstance
from plugin.serving.process import ManagedProcess, shielded, start, wait_ready


class LocalLauncher:
    """Starts instances here, as placed (their ports were chosen free here); stops the last started first."""

    def __init__(self, folder: Path, say: Callable[[str], None] = lambda text: None) -> None:
        self.folder = folder
        self.say = say
        self._started: dict[str, ManagedProcess] = {}

    def place(self, instances: Sequence[ClusterInstance]) -> list[PlacedInstance]:
        return [PlacedInstance(instance) for instance in instances]

    def start(self, placed: PlacedInstance) -> ManagedProcess:
        spec = placed.instance.spec
        log = self.folder / f"{placed.name}.log"
        process = start(placed.name, servers.command(spec), servers.environment(spec), log, self.folder / "pids")
        self._started[placed.name] = process
        return process

    def wait_ready(self, placed: Sequence[PlacedInstance], timeout_s: float) -> None:
        for instance in placed:
            wait_ready(self._started[instance.name], f"{instance.url}/health", timeout_s, START_HINT, report=self.say)

    def stop(self) -> None:
        with shielded():  # a second Ctrl-C must not leave the later ones running
            for process in reversed(list(self._started.values())):
                process.stop()

"""One run: its id and folder under ``reports/``, its environment record and its results file.

The folder is made only when a benchmark first needs a server, so ``pytest --help`` or the suite's own tests
leave no empty runs behind.
"""

from __future__ import annotations

import platform
import random
import secrets
import socket
import sys
import time
from collections.abc import Callable
from dataclasses import asdict
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import Any

import pytest

from plugin.clock import now_s
from plugin.options import Settings
from plugin.power.devices import Inventory, cpu_count, cpu_model
from plugin.results.redaction import redact_command_line
from plugin.results.store import ResultsFile
from plugin.serving.process import ManagedProcess

DISTRIBUTION = "pd-energy-bench"


def new_run_id(now: datetime) -> str:
    return f"{now:%Y%m%d-%H%M%S}-{secrets.token_hex(2)}"


def package_version(name: str) -> str | None:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


class RunSession:
    def __init__(self, settings: Settings, inventory: Inventory, args: list[str]) -> None:
        self.settings = settings
        self.inventory = inventory
        self.args = args
        self.started_at = datetime.now(UTC)
        self.run_id = new_run_id(self.started_at)
        self.folder = settings.reports_dir / self.run_id
        # Random per run unless --seed: prompts differ from any earlier run's, so a reused server's prefix cache
        # cannot hit (with --seed it can; the recorded hit rate shows it).
        self.prompt_seed = settings.seed if settings.seed is not None else secrets.randbits(32)
        self.results: ResultsFile | None = None
        # architecture -> stops its servers: the next architecture must not share the CPU or GPU with idle ones.
        self.server_stoppers: dict[str, Callable[[], None]] = {}
        # architecture -> its server processes, and why an architecture's servers are gone (it is skipped then).
        self.server_processes: dict[str, list[ManagedProcess]] = {}
        self.dead_architectures: dict[str, str] = {}
        # (architecture, dataset) -> a sweep's measured ends: "sync" and "max" request throughput (requests/s).
        self.sweep_rps: dict[tuple[str, str], dict[str, float | None]] = {}

    def start(self, server: dict[str, Any] | None, vllm_version: str | None) -> ResultsFile:
        """Create the run folder and its results file (once); ``server`` is the traditional server, if any."""
        if self.results is None:
            self.folder.mkdir(parents=True, exist_ok=True)
            self.results = ResultsFile(self.folder / "results.json", self._header(server, vllm_version))
        elif server is not None:
            self.results.update(server=server)
        return self.results

    def rng_for(self, benchmark_id: str) -> random.Random:
        return random.Random(f"{self.prompt_seed}:{benchmark_id}")

    def _header(self, server: dict[str, Any] | None, vllm_version: str | None) -> dict[str, Any]:
        return {
            "run_id": self.run_id,
            "started_at": self.started_at.isoformat(),
            "command_line": redact_command_line([Path(sys.argv[0]).name, *self.args]),
            "prompt_seed": self.prompt_seed,
            # Anchors the monotonic timestamps of records and power samples to wall-clock time.
            "clock": {"monotonic_s": now_s(), "unix_s": time.time()},
            "environment": {
                "hostname": socket.gethostname(),
                "platform": platform.platform(),
                "python": platform.python_version(),
                "suite_version": package_version(DISTRIBUTION),
                "vllm_version": vllm_version,
                "pytest_benchmark_version": package_version("pytest-benchmark"),
                "cpu": cpu_model(),
                "cpu_count": cpu_count(),
                "gpus": [asdict(gpu) for gpu in self.inventory.gpus],
                "driver_version": self.inventory.driver_version,
                "nvml_error": self.inventory.nvml_error,
            },
            "settings": {
                "rounds": self.settings.rounds,
                "request_timeout_s": self.settings.request_timeout_s,
                "sizes": asdict(self.settings.sizes),
            },
            "server": server,
        }


SESSION_KEY = pytest.StashKey[RunSession]()
"""Where the plugin keeps the run in ``config.stash`` (no module-level mutable state)."""

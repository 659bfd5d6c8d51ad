"""One run: its id and folder under ``reports/``, its environment record and its results file.

The folder is made only when a benchmark first needs a server (its power sampler starts just before the first
one), so ``pytest --help`` or the suite's own tests leave no empty runs behind.
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
from plugin.load.schedule import SweepEnds
from plugin.options import Settings
from plugin.power.devices import Inventory, cpu_count, cpu_model
from plugin.power.window import IdleBaseline
from plugin.records.topology import DISAGGREGATED, TRADITIONAL, Topology
from plugin.results.redaction import redact_command_line
from plugin.results.store import RESULTS_FILE, ResultsFile, keep_earlier_files
from plugin.serving.endpoint import Endpoint
from plugin.serving.process import ServerProcess
from plugin.serving.topology import budget_of, budget_size

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
        self._earlier_kept = settings.resume is None
        if settings.resume is not None:  # the same run goes on: its folder, its benchmarks and its seed
            self.folder, self.run_id = settings.resume, settings.resume.name
            self.results = ResultsFile.reopen(settings.resume / RESULTS_FILE)
            self.prompt_seed = int(self.results.data["prompt_seed"])
        # The topologies among the collected benchmarks (set at collection): their GPUs are the run's budget.
        self.topologies: tuple[Topology, ...] = settings.topologies
        # topology -> its ready servers' endpoint, and what stops them: the next topology must not share the CPU or
        # GPU with idle ones.
        self.endpoints: dict[str, Endpoint] = {}
        self.server_stoppers: dict[str, Callable[[], None]] = {}
        # topology -> its server processes, and why a topology's servers are gone (it is skipped then).
        self.server_processes: dict[str, list[ServerProcess]] = {}
        self.dead_topologies: dict[str, str] = {}
        # dataset -> its sweep's ends, measured by the first topology that ran both and shared by every topology.
        self.sweep_ends: dict[str, SweepEnds] = {}
        # The idle baselines windows subtract: the one measured before any server started, and per (topology, DVFS
        # setting or None without a sweep) the one measured with its servers loaded, on its first benchmark.
        self.idle_no_context: IdleBaseline | None = None
        self.idle_loaded: dict[tuple[str, str | None], IdleBaseline] = {}

    @property
    def budget(self) -> tuple[int, ...]:
        """The run's GPUs: every GPU of its topologies; each benchmark's windows cover all of them."""
        return budget_of(self.topologies, self.settings)

    @property
    def gpu_budget(self) -> int:
        """What the per-GPU figures divide by (``plugin.serving.topology.budget_size``)."""
        return budget_size(self.topologies, self.settings)

    def open_run(self, vllm_version: str | None) -> Path:
        """The run folder, made with its results file (once) when the power sampler or a topology's servers first
        need it; the vLLM version is filled in when the first deployment knows it."""
        if not self._earlier_kept:  # a resumed run: the samplers and servers about to start write the same names
            self._earlier_kept = True
            keep_earlier_files(self.folder)
        if self.results is None:
            self.folder.mkdir(parents=True, exist_ok=True)
            self.results = ResultsFile(self.folder / RESULTS_FILE, self._header(vllm_version))
        environment = self.results.data["environment"]
        if vllm_version is not None and environment["vllm_version"] is None:
            self.results.update(environment={**environment, "vllm_version": vllm_version})
        return self.folder

    def record_deployment(self, topology: Topology, entry: dict[str, Any]) -> None:
        """What a topology runs where: the default pair under ``server`` / ``disaggregated`` as before
        topologies, the others under ``topologies``."""
        assert self.results is not None, "open_run comes first"
        if topology.name == TRADITIONAL:
            self.results.update(server=entry)
        elif topology.name == DISAGGREGATED:
            self.results.update(disaggregated=entry)
        else:
            self.results.update(topologies={**self.results.data.get("topologies", {}), topology.name: entry})

    def rng_for(self, load_id: str) -> random.Random:
        """Prompts, arrivals and dataset draws of one load; a load with the same id gets the same ones (every
        topology of a run meets the same requests at the same times)."""
        return random.Random(f"{self.prompt_seed}:{load_id}")

    def _header(self, vllm_version: str | None) -> dict[str, Any]:
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
                "serving_rounds": self.settings.serving_rounds,
                "request_timeout_s": self.settings.request_timeout_s,
                "sizes": asdict(self.settings.sizes),
                # The report judges the topologies by the run's own threshold, not by the one in force when it runs.
                "slo_attainment_pct": self.settings.slo_attainment_pct,
                # The steady state's measured stretch and arrivals, so that plugin.reanalyse counts the same requests.
                "warmup_s": self.settings.warmup_s,
                "cooldown_s": self.settings.cooldown_s,
                "arrival_scaling": self.settings.arrival_scaling,
                # A capacity search's stopping rule, so that plugin.reanalyse rebuilds the same answer.
                "capacity_resolution_rps": self.settings.capacity_resolution_rps,
                "capacity_resolution_pct": self.settings.capacity_resolution_pct,
                "max_probes": self.settings.max_probes,
            },
            "gpu_budget": {"gpus": list(self.budget), "size": self.gpu_budget},
            "server": None,
        }


SESSION_KEY = pytest.StashKey[RunSession]()
"""Where the plugin keeps the run in ``config.stash`` (no module-level mutable state)."""

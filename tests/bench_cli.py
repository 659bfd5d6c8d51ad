"""How the end-to-end tests start the real benchmarks: ``python -m pytest benchmarks`` in a subprocess."""

from __future__ import annotations

import json
import signal
import sys
from pathlib import Path
from typing import Any

from plugin.serving.process import command_line
from tests.conftest import ROOT

SMALL_SIZES = [
    "--input-lens=200,300",
    "--output-lens=8,24",
    "--decode-prompt-len=16",
    "--e2e-input-len=200",
    "--e2e-output-len=16",
    "--concurrency=1,3",
    "--num-requests=4",
]


def benchmark_command(reports: Path, model_cache: Path, *args: str) -> list[str]:
    return [
        sys.executable, "-m", "pytest", str(ROOT / "benchmarks"), "-p", "no:cacheprovider",
        f"--reports-dir={reports}", f"--model-cache-dir={model_cache}", *args,
    ]  # fmt: skip


def only_run(reports: Path) -> Path:
    runs = sorted(path for path in reports.iterdir() if path.is_dir())
    assert len(runs) == 1, runs
    return runs[0]


def load_results(run_folder: Path) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((run_folder / "results.json").read_text())
    return data


def requests_of(run_folder: Path, entry: dict[str, Any], warmup: bool = False) -> list[dict[str, Any]]:
    """A benchmark's request records from its JSONL file: the measured ones, or the warm-up's."""
    lines = (run_folder / entry["requests_file"]).read_text().splitlines()
    stored = [json.loads(line) for line in lines if line.strip()]
    return [line["record"] for line in stored if (line["round"] is None) == warmup]


def processes_using_port(port: int) -> list[int]:
    """Processes whose command line serves on ``port``: none may outlive the run."""
    return [
        int(proc.name)
        for proc in Path("/proc").iterdir()
        if proc.name.isdigit() and f"--port {port}" in command_line(int(proc.name))
    ]


def sigint_default() -> None:
    """``preexec_fn`` for a run the test will interrupt: a shell that starts the tests in the background makes them
    ignore SIGINT, children inherit that, and Python then never turns SIGINT into KeyboardInterrupt."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)

"""Ctrl-C (SIGINT) or SIGTERM in the middle of a run: no vLLM process survives, finished results stay intact."""

from __future__ import annotations

import json
import signal
import subprocess
import time
from pathlib import Path

import pytest

from plugin.serving.process import group_pids
from tests.bench_cli import (
    SMALL_SIZES,
    benchmark_command,
    load_results,
    processes_using_port,
    requests_of,
    sigint_default,
)
from tests.conftest import ROOT


def wait_for_first_benchmark(reports: Path, run: subprocess.Popen[str], timeout_s: float) -> Path:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        assert run.poll() is None, "the run ended before it could be interrupted"
        for results_path in reports.glob("*/results.json"):
            try:
                if json.loads(results_path.read_text())["benchmarks"]:
                    return results_path.parent
            except (ValueError, KeyError):
                pass  # never happens with atomic writes; tolerated while polling
        time.sleep(0.2)
    raise AssertionError("no benchmark finished in time")


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_interrupted_run_leaves_no_server_and_keeps_results(
    tmp_path: Path, model_cache_dir: Path, signum: signal.Signals
) -> None:
    reports = tmp_path / "reports"
    # Many decode benchmarks, so that the run is still going when the first one is written.
    command = benchmark_command(reports, model_cache_dir, "-m", "decode", *SMALL_SIZES, "--output-lens=8,64,96,128")
    run = subprocess.Popen(
        command, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, preexec_fn=sigint_default
    )
    try:
        run_folder = wait_for_first_benchmark(reports, run, timeout_s=600)
        server_group = int((run_folder / "pids" / "server.pid").read_text())
        run.send_signal(signum)
        output, _ = run.communicate(timeout=120)
    finally:
        if run.poll() is None:
            run.kill()
            run.wait()
    assert run.returncode == pytest.ExitCode.INTERRUPTED, output[-3000:]
    results = load_results(run_folder)
    assert results["status"] == "interrupted"
    assert 1 <= len(results["benchmarks"]) < 8
    for entry in results["benchmarks"]:
        assert entry["summary"]["failed"] == 0
        assert len(requests_of(run_folder, entry)) == entry["workload"]["num_requests"]
    assert group_pids(server_group) == []
    port = int(results["server"]["url"].rsplit(":", 1)[1])
    assert processes_using_port(port) == []

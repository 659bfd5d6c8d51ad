"""Prefill, decode and end-to-end benchmarks. The plugin runs each on both architectures (``architecture``,
marked ``traditional``: one vLLM server; ``disaggregated``: prefill and decode instances behind the proxy) and
parametrizes ``workload`` from the phase marker and the sizes in the options (``--input-lens``,
``--output-lens``, ``--concurrency`` ...), so the two architectures run exactly the same workloads."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from plugin.records.results import BenchmarkResult
from plugin.records.workload import Workload

RunWorkload = Callable[[Workload], BenchmarkResult]


@pytest.mark.prefill
def test_prefill(run_workload: RunWorkload, workload: Workload) -> None:
    run_workload(workload)


@pytest.mark.decode
def test_decode(run_workload: RunWorkload, workload: Workload) -> None:
    run_workload(workload)


@pytest.mark.e2e
def test_e2e(run_workload: RunWorkload, workload: Workload) -> None:
    run_workload(workload)

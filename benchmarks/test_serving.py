"""Serving benchmarks: traffic like production. Requests of a dataset (``--dataset``) arrive open-loop at each
``--request-rate`` (or a sweep), on both architectures; each benchmark reports throughput, latency, SLO
attainment and goodput against ``--goodput`` targets, and energy per request, per token and per good request."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from plugin.records.results import BenchmarkResult
from plugin.records.workload import Workload

RunWorkload = Callable[[Workload], BenchmarkResult]


@pytest.mark.serving
def test_serving(run_workload: RunWorkload, workload: Workload) -> None:
    run_workload(workload)

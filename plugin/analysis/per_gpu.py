"""The per-GPU figures: a benchmark's throughput and goodput over its GPU budget (every GPU its topology's run
names, ``plugin.serving.topology.budget_size``), so topologies of one budget compare on the same ground. Defined
here once; the report and the verdict read them from the stored summaries."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any


def per_gpu(summary: Mapping[str, Any], gpu_budget: int) -> dict[str, float | None]:
    """Throughput and goodput per GPU of the budget."""

    def per(key: str) -> float | None:
        value = summary.get(key)
        return None if value is None else value / gpu_budget

    figures = {
        "request_throughput_per_gpu_rps": per("request_throughput"),
        "output_throughput_per_gpu": per("output_throughput"),
    }
    if "goodput_rps" in summary:
        figures["goodput_per_gpu_rps"] = per("goodput_rps")
    return figures

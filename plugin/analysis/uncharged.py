"""The GPUs a run read but did not charge (each benchmark's ``power.excluded_gpus``: an exporter's GPUs without
``--gpu-role``, a Ray node's GPUs no instance was given), said in one line so the terminal and the report say it
alike: a reader sees that the energy figures leave those GPUs out on purpose. Pure."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from plugin.records.results import BenchmarkResult


def uncharged_line(benchmarks: Sequence[BenchmarkResult], power_gpus: Sequence[Mapping[str, Any]]) -> str | None:
    """``None`` where every GPU read was charged; else the excluded GPUs by name (``power_gpus``, results.json's),
    and the topologies whose benchmarks left them out where not every benchmark left out the same (on a Ray
    cluster each topology's instances get GPUs of their own)."""
    names = gpu_names(power_gpus)
    by_set: dict[tuple[int, ...], list[BenchmarkResult]] = {}
    for benchmark in benchmarks:
        if benchmark.power.excluded_gpus:
            by_set.setdefault(tuple(sorted(benchmark.power.excluded_gpus)), []).append(benchmark)
    if not by_set:
        return None
    groups = [", ".join(f"GPU {names.get(gpu, str(gpu))}" for gpu in gpus) for gpus in by_set]
    if len(by_set) > 1 or len(next(iter(by_set.values()))) < len(benchmarks):
        groups = [
            f"{group} (in {', '.join(dict.fromkeys(b.topology_name for b in left_out))})"
            for group, left_out in zip(groups, by_set.values(), strict=True)
        ]
    return (
        f"not charged: {'; '.join(groups)}: read by the power source but given no role (another tenant's, or no "
        "instance's), so no energy figure includes them (power.excluded_gpus)"
    )


def gpu_names(power_gpus: Sequence[Mapping[str, Any]]) -> dict[int, str]:
    """Sampler index -> ``host:gpu`` (a DCGM exporter's labels) or ``node address:NVML index`` (a Ray node's)."""
    names = {}
    for gpu in power_gpus:
        if "host" in gpu:  # plugin.power.dcgm.DcgmGpu: ``index`` is the sampler's, ``gpu`` the exporter's label
            names[int(gpu["index"])] = f"{gpu['host']}:{gpu['gpu']}"
        elif "node_address" in gpu:  # plugin.power.ray_nodes.power_gpus: ``gpu`` global, ``index`` the node's
            names[int(gpu["gpu"])] = f"{gpu['node_address']}:{gpu['index']}"
    return names

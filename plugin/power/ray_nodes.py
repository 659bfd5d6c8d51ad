"""Power on a Ray cluster (``--ray-address``), in the runner's terms: one ``NodeSampler`` per node with GPUs behind a
``RemoteSampler``, the instances' GPUs (node, index there) mapped to the backend's global indices with their roles,
and what the results record of the nodes (each GPU's identity; each sampler's costs and clock offset).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

from plugin.power.backend import PowerError
from plugin.power.nvml_loader import STAND_IN_ENV, stand_in
from plugin.power.remote import RemoteBackend, RemoteSampler, start_node_samplers

UNUSED = "unused"
"""As ``plugin.serving.topology.UNUSED``: a GPU of a node that hosts an instance, used by none."""


def ray_sampler(nodes: Sequence[tuple[str, str]], folder: Path, period_ms: float) -> RemoteSampler:
    """Samplers on ``nodes`` (``(node id, address)``, those with GPUs). The NVML stand-in this process uses, if
    any, is handed to them (the suite's tests run every node on the fake)."""
    if not nodes:
        raise PowerError("no node of the Ray cluster has a GPU (ray start --num-gpus)")
    chosen = stand_in()
    handles = start_node_samplers(nodes, period_ms, {STAND_IN_ENV: chosen} if chosen else None)
    try:
        backend = RemoteBackend(handles)
    except BaseException:
        import ray

        for handle in handles:
            ray.kill(handle.actor, no_restart=True)
        raise
    return RemoteSampler(backend, folder, period_ms=period_ms)


def node_roles(backend: RemoteBackend, node_gpus: Sequence[tuple[str, int, str]]) -> dict[int, str]:
    """Global GPU -> role, over every GPU of each node that hosts an instance (``unused`` where none uses it); a
    GPU that two instances share does both phases."""
    hosts = {node_id for node_id, _, _ in node_gpus}
    roles = {gpu: UNUSED for gpu, device in enumerate(backend.devices) if device.node_id in hosts}
    by_place = {(device.node_id, device.index): gpu for gpu, device in enumerate(backend.devices)}
    for node_id, index, role in node_gpus:
        gpu = by_place.get((node_id, index))
        if gpu is None:
            raise PowerError(f"no power sampler reads GPU {index} of Ray node {node_id[:8]}, which an instance uses")
        roles[gpu] = role if roles[gpu] in (UNUSED, role) else "prefill+decode"
    return roles


def power_gpus(backend: RemoteBackend) -> list[dict[str, Any]]:
    """Each global GPU index with its node, address, index there and UUID."""
    return [{"gpu": gpu, **asdict(device)} for gpu, device in enumerate(backend.devices)]


def node_stats(backend: RemoteBackend) -> list[dict[str, Any]]:
    """Per node: its sampler's counts, CPU seconds and peak memory, and its clock offset as last measured."""
    stats = backend.stats()
    return [
        {"node_id": node_id, **asdict(offset), **node}
        for (node_id, offset), node in zip(backend.offsets.items(), stats, strict=True)
    ]

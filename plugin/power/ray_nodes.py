"""What the results record of a Ray cluster's power nodes: each GPU's identity (node, address, index there, UUID)
and each node sampler's costs and clock offset.
"""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

from plugin.power.remote_backend import RemoteBackend


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

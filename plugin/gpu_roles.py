"""Each GPU's role in the power sampler's indices, for the energy split (``plugin.analysis.energy``).

Where the suite places the servers, ``plugin.serving.topology.place`` decides every role and this passes them on;
a cluster's exporters take theirs from ``--gpu-role`` (``unknown`` where none is given: the time rule), and Ray
nodes from the GPUs their instances were given. The one place that picks between them.
"""

from __future__ import annotations

from collections.abc import Sequence

from plugin.options import Settings
from plugin.power import Sampler
from plugin.power.backend import PowerError
from plugin.power.dcgm import DcgmBackend
from plugin.power.remote_backend import RemoteBackend
from plugin.records.topology import UNUSED
from plugin.serving.endpoint import Endpoint


def sampled_roles(sampler: Sampler, endpoint: Endpoint, settings: Settings) -> dict[int, str]:
    """The endpoint's GPU roles in the sampler's indices: as placed here, or a cluster's exporters' GPUs
    (``--gpu-role``), or the Ray nodes' GPUs that its instances were given. A ``BenchError`` says which GPU
    cannot be found."""
    if isinstance(sampler.backend, DcgmBackend):
        return exporter_roles(sampler.backend, settings.gpu_roles)
    if isinstance(sampler.backend, RemoteBackend):
        return node_roles(sampler.backend, endpoint.node_gpus)
    return dict(endpoint.gpu_roles)


def exporter_roles(backend: DcgmBackend, given: tuple[tuple[str, int, str], ...]) -> dict[int, str]:
    """Every GPU the exporters list, with its ``--gpu-role`` (``unknown`` where none is given: the time rule)."""
    return dict.fromkeys(backend.gpus, "unknown") | {backend.index_of(host, gpu): role for host, gpu, role in given}


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

"""Each GPU's role in the power sampler's indices, for the energy split (``plugin.analysis.energy``): exactly the
GPUs a benchmark's windows charge.

Where the suite places the servers, ``plugin.serving.topology.place`` decides every role and this passes them on;
a cluster's exporters charge only the GPUs ``--gpu-role`` names (``unused`` too), and Ray nodes only the GPUs their
instances were given. Every other GPU the sampler reads (another tenant's, a node's idle GPUs) is excluded:
``excluded_gpus`` lists them for the results. The one place that picks between them.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from plugin.options import Settings
from plugin.power import Sampler
from plugin.power.backend import PowerError
from plugin.power.dcgm import DcgmBackend
from plugin.power.remote_backend import RemoteBackend
from plugin.serving.endpoint import Endpoint


def sampled_roles(sampler: Sampler, endpoint: Endpoint, settings: Settings) -> dict[int, str]:
    """The endpoint's GPU roles in the sampler's indices: as placed here, or a cluster's exporters' GPUs that
    ``--gpu-role`` names, or the Ray nodes' GPUs that its instances were given. A ``BenchError`` says which GPU
    cannot be found."""
    if isinstance(sampler.backend, DcgmBackend):
        return exporter_roles(sampler.backend, settings.gpu_roles)
    if isinstance(sampler.backend, RemoteBackend):
        return node_roles(sampler.backend, endpoint.node_gpus)
    return dict(endpoint.gpu_roles)


def excluded_gpus(sampler: Sampler, roles: Mapping[int, str]) -> tuple[int, ...]:
    """The sampler's GPUs that no window charges: read, but another tenant's or no instance's."""
    return tuple(gpu for gpu in sampler.backend.gpus if gpu not in roles)


def exporter_roles(backend: DcgmBackend, given: tuple[tuple[str, int, str], ...]) -> dict[int, str]:
    """The GPUs ``--gpu-role`` names, with their roles; the exporters' other GPUs are not charged."""
    return {backend.index_of(host, gpu): role for host, gpu, role in given}


def node_roles(backend: RemoteBackend, node_gpus: Sequence[tuple[str, int, str]]) -> dict[int, str]:
    """Global GPU -> role, over the GPUs the instances were given (a node's other GPUs may be another job's); a GPU
    that two instances share does both phases."""
    by_place = {(device.node_id, device.index): gpu for gpu, device in enumerate(backend.devices)}
    roles: dict[int, str] = {}
    for node_id, index, role in node_gpus:
        gpu = by_place.get((node_id, index))
        if gpu is None:
            raise PowerError(f"no power sampler reads GPU {index} of Ray node {node_id[:8]}, which an instance uses")
        roles[gpu] = role if roles.get(gpu, role) == role else "prefill+decode"
    return roles

"""A topology on the run's GPU budget: where its servers run, and the one place each GPU's role is decided.

The budget is every GPU the run's topologies name (``--gpus`` for ``dp:N`` and ``XpYd``, which take its GPUs in
order: prefill first, then decode). Every benchmark's windows cover the whole budget, and a GPU its topology
leaves unused is charged to it with the role ``unused`` (all its energy idle), so topologies of one budget are
compared on the same ground; per-GPU figures divide by the budget's size. Pure: no I/O. The topologies
themselves are data (``plugin.records.topology``).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from plugin.records.topology import DISAGGREGATED, TRADITIONAL, UNUSED, GpuOptions, Topology


@dataclass(frozen=True, slots=True)
class Placement:
    """Where a topology's servers run: GPUs of the traditional server, one entry per prefill and decode instance
    (``None``: an instance on CPU), and every GPU of the budget with its role."""

    server_gpus: tuple[int, ...]
    prefill: tuple[int | None, ...]
    decode: tuple[int | None, ...]
    roles: dict[int, str]


def warmup_requests(topology: Topology, placement: Placement) -> int:
    """Requests, sent together, that reach every server of the topology (``Endpoint.warmup_requests``): one per
    engine of ``dp:N``; behind the proxy, whose two round-robins pair request i with prefill i mod P and decode
    i mod D, the lcm(P, D) requests of one period, which hold every pair of instances that will ever meet."""
    if topology.kind == DISAGGREGATED:
        return math.lcm(len(placement.prefill), len(placement.decode))
    return max(1, topology.replicas)


def budget_of(topologies: Sequence[Topology], options: GpuOptions) -> tuple[int, ...]:
    """Every GPU the topologies name, each once, in order."""
    gpus: list[int] = []
    for topology in topologies:
        if topology.name == DISAGGREGATED:
            gpus += [*options.prefill_gpus, *options.decode_gpus]
        elif topology.name == TRADITIONAL:
            gpus += options.gpus
        else:
            gpus += options.gpus[: topology.size]
    return tuple(dict.fromkeys(gpus))


def budget_size(topologies: Sequence[Topology], options: GpuOptions) -> int:
    """How many GPUs the per-GPU figures divide by: the budget's; on CPU, the largest topology's instance slots."""
    return len(budget_of(topologies, options)) or max(topology.size for topology in topologies)


def place(topology: Topology, options: GpuOptions, budget: Sequence[int]) -> Placement:
    """The topology's servers on the budget's GPUs; a budget GPU it does not use gets the role ``unused``."""
    if topology.name == TRADITIONAL:
        used = dict.fromkeys(options.gpus, "prefill+decode")
        placement = Placement(options.gpus, (), (), used)
    elif topology.name == DISAGGREGATED:
        used = {**dict.fromkeys(options.prefill_gpus, "prefill"), **dict.fromkeys(options.decode_gpus, "decode")}
        used |= dict.fromkeys(set(options.prefill_gpus) & set(options.decode_gpus), "prefill+decode")
        placement = Placement((), options.prefill_gpus or (None,), options.decode_gpus or (None,), used)
    elif topology.kind == TRADITIONAL:
        gpus = options.gpus[: topology.replicas]
        placement = Placement(gpus, (), (), dict.fromkeys(gpus, "prefill+decode"))
    else:
        prefill_gpus = options.gpus[: topology.prefill]
        decode_gpus = options.gpus[topology.prefill : topology.size]
        used = {**dict.fromkeys(prefill_gpus, "prefill"), **dict.fromkeys(decode_gpus, "decode")}
        prefill: tuple[int | None, ...] = prefill_gpus or (None,) * topology.prefill
        decode: tuple[int | None, ...] = decode_gpus or (None,) * topology.decode
        placement = Placement((), prefill, decode, used)
    roles = {gpu: placement.roles.get(gpu, UNUSED) for gpu in budget}
    return Placement(placement.server_gpus, placement.prefill, placement.decode, roles | placement.roles)


def cpu_engines(topology: Topology, options: GpuOptions) -> int:
    """Engine processes the topology starts on CPU: one per instance, N for ``dp:N``."""
    if topology.kind == DISAGGREGATED:
        placement = place(topology, options, ())
        return len(placement.prefill) + len(placement.decode)
    return max(1, topology.replicas)


def too_many_engines(topologies: Sequence[Topology], options: GpuOptions, cores: int) -> str | None:
    """A one-line warning when a topology starts more engines on CPU than the machine has cores: they load for
    minutes and then measure contention, not the topology (``dp:8`` on 2 cores: 187 s to load, 0.73 req/s)."""
    crowded = [f"{t.name} ({cpu_engines(t, options)})" for t in topologies if cpu_engines(t, options) > cores]
    if not crowded:
        return None
    return (
        f"{', '.join(crowded)} start(s) more engines than this machine's {cores} cores: they load slowly and "
        "measure CPU contention; use smaller topologies on CPU"
    )

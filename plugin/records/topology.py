"""Topologies as data: their names on the command line (``--topologies dp:4,2p2d,1p3d``), parsed and checked
against ``--gpus``. Where a topology's servers run and which GPU does what is the serving stage's
(``plugin.serving.topology.place``).

- ``dp:N``: one vLLM server, data parallel over N GPUs (vLLM's own ``--data-parallel-size``, with its own load
  balancer over the N engines); on CPU, N engines on the cores.
- ``XpYd``: X prefill and Y decode instances, a GPU each, behind the proxy (on CPU a process each).
- ``traditional`` and ``disaggregated``: the default pair, as before topologies: one server on ``--gpus``, and
  instances on ``--prefill-gpus`` / ``--decode-gpus`` (which may share one GPU).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

TRADITIONAL = "traditional"
DISAGGREGATED = "disaggregated"
ARCHITECTURES = (TRADITIONAL, DISAGGREGATED)
UNUSED = "unused"
"""The role of a budget GPU that the topology leaves idle: charged, all of its energy idle."""

_DP = re.compile(r"dp:([1-9][0-9]*)")
_XPYD = re.compile(r"([1-9][0-9]*)p([1-9][0-9]*)d")


@dataclass(frozen=True, slots=True)
class Topology:
    """One way to serve the model: its name, its kind (``traditional`` or ``disaggregated``) and its GPUs per role.

    ``replicas``, ``prefill`` and ``decode`` count GPUs (instances on CPU); all zero for the default pair, whose
    GPUs come from ``--gpus`` / ``--prefill-gpus`` / ``--decode-gpus``."""

    name: str
    kind: str
    replicas: int = 0
    prefill: int = 0
    decode: int = 0

    @property
    def is_default(self) -> bool:
        return self.name in ARCHITECTURES

    @property
    def size(self) -> int:
        """GPUs it takes from ``--gpus`` (the default pair: one slot, whatever GPUs its options name)."""
        return max(1, self.replicas + self.prefill + self.decode)

    @property
    def log_prefix(self) -> str:
        """Its servers' log names begin with this, so that several topologies of a run keep apart."""
        return "" if self.is_default else self.name.replace(":", "") + "-"


DEFAULT_TOPOLOGIES = (Topology(TRADITIONAL, TRADITIONAL), Topology(DISAGGREGATED, DISAGGREGATED))


def parse_topology(text: str) -> Topology:
    name = text.strip().lower()
    if name in ARCHITECTURES:
        return Topology(name, name)
    if match := _DP.fullmatch(name):
        return Topology(name, TRADITIONAL, replicas=int(match[1]))
    if match := _XPYD.fullmatch(name):
        return Topology(name, DISAGGREGATED, prefill=int(match[1]), decode=int(match[2]))
    raise ValueError(
        f"{text.strip()!r} is not a topology: use dp:N (data parallel over N GPUs), XpYd (X prefill and Y decode "
        "GPUs, e.g. 1p1d or 2p2d), traditional or disaggregated"
    )


def parse_topologies(text: str) -> tuple[Topology, ...]:
    """``dp:2,1p1d``: each once, in the order given (the order they run in)."""
    topologies = tuple(parse_topology(item) for item in text.split(",") if item.strip())
    if not topologies:
        raise ValueError("expected topologies such as dp:2,1p1d")
    names = [topology.name for topology in topologies]
    if len(set(names)) != len(names):
        raise ValueError(f"a topology is named twice in {','.join(names)}")
    return topologies


class GpuOptions(Protocol):
    """The GPU options a placement reads (``plugin.options.Settings`` has them)."""

    @property
    def gpus(self) -> tuple[int, ...]: ...
    @property
    def prefill_gpus(self) -> tuple[int, ...]: ...
    @property
    def decode_gpus(self) -> tuple[int, ...]: ...


def check_fits(topologies: Sequence[Topology], options: GpuOptions) -> None:
    """A ``ValueError`` saying what to give when a topology needs more GPUs than ``--gpus`` lists (GPUs only)."""
    if not options.gpus:
        return
    for topology in topologies:
        if not topology.is_default and topology.size > len(options.gpus):
            listed = ",".join(str(gpu) for gpu in options.gpus)
            wanted = ",".join(str(gpu) for gpu in range(topology.size))
            raise ValueError(
                f"{topology.name} needs {topology.size} GPUs, and --gpus lists {len(options.gpus)} ({listed}): "
                f"give the budget with --gpus, e.g. --gpus {wanted}, or choose smaller topologies"
            )

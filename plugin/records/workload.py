"""One benchmark's load as data, and its one name (``workload_id``) in test ids, results and the report."""

from __future__ import annotations

from dataclasses import dataclass

SERVING = "serving"
"""The phase of the serving benchmarks (datasets and arrival rates), beside ``prefill``, ``decode`` and ``e2e``."""
PROBE, GRID = "probe", "grid"
"""A capacity search's points (``sweep`` ``probe1``.. and ``grid1``..): each topology's probes, then the shared grid."""


@dataclass(frozen=True, slots=True)
class Workload:
    """One benchmark's load: ``num_requests`` prompts of ``input_len`` tokens, ``output_len`` tokens each, at most
    ``concurrency`` in flight (0: no cap). A serving workload also names its dataset (whose lengths replace
    ``input_len``/``output_len`` unless it is ``random``) and its arrivals: ``request_rate`` requests/s (``None``:
    all at once), gamma ``burstiness``, or a point of a sweep (``sweep``: ``sync``, ``max`` or ``1``..``N``, whose
    rate is known only once ``sync`` and ``max`` are measured, or a capacity search's ``probeK`` or ``gridK``, whose
    rates are chosen as the search goes); ``duration_s`` replaces ``num_requests``."""

    phase: str
    input_len: int
    output_len: int
    concurrency: int
    num_requests: int
    dataset: str | None = None
    request_rate: float | None = None
    burstiness: float | None = None
    sweep: str | None = None
    duration_s: float | None = None

    @property
    def id(self) -> str:
        return workload_id(self)


def workload_id(workload: Workload) -> str:
    """``in512-out1-c4`` or ``sharegpt-tiny-r2`` (``-rinf``, ``-sweep-max``, ``-c8`` with a cap): the one name of a
    workload, in test ids, results and the report."""
    if workload.phase != SERVING:
        return f"in{workload.input_len}-out{workload.output_len}-c{workload.concurrency}"
    if workload.sweep is not None and workload.sweep.startswith((PROBE, GRID)):
        arrivals = workload.sweep
    elif workload.sweep is not None:
        arrivals = f"sweep-{workload.sweep}"
    else:
        arrivals = f"r{'inf' if workload.request_rate is None else f'{workload.request_rate:g}'}"
    cap = f"-c{workload.concurrency}" if workload.concurrency else ""
    return f"{workload.dataset}-{arrivals}{cap}"

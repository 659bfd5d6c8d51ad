"""One benchmark's load as data, and its one name (``workload_id``) in test ids, results and the report."""

from __future__ import annotations

from dataclasses import dataclass, replace

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
    rates are chosen as the search goes); ``duration_s`` replaces ``num_requests``. A trace (``replay``) brings its
    own arrivals (``plugin.load.traces``): one workload per trace, whatever the rates."""

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
    replay: bool = False
    cache_defeated: bool = False
    """A control (``--prefix-cache-control``): the same load, every request salted so none reuses a cached prefix."""
    ramp_up: tuple[str, float, float] | None = None
    """``(strategy, start_rps, end_rps)``: arrivals whose rate ramps over the round (vLLM's ``--ramp-up-*``)."""

    @property
    def id(self) -> str:
        return workload_id(self)


def workload_id(workload: Workload) -> str:
    """``in512-out1-c4`` or ``sharegpt-tiny-r2`` (``-rinf``, ``-sweep-max``, ``-probe1``, ``-c8`` with a cap,
    ``mooncake-x-replay`` for a trace, ``-nocache`` for a control): the one name of a workload, in test ids, results
    and the report."""
    if workload.phase != SERVING:
        return f"in{workload.input_len}-out{workload.output_len}-c{workload.concurrency}"
    if workload.replay:
        arrivals = "replay"
    elif workload.ramp_up is not None:
        strategy, start_rps, end_rps = workload.ramp_up
        arrivals = f"ramp-{strategy}{start_rps:g}-{end_rps:g}"
    elif workload.sweep is not None and workload.sweep.startswith((PROBE, GRID)):
        arrivals = workload.sweep
    elif workload.sweep is not None:
        arrivals = f"sweep-{workload.sweep}"
    else:
        arrivals = f"r{'inf' if workload.request_rate is None else f'{workload.request_rate:g}'}"
    cap = f"-c{workload.concurrency}" if workload.concurrency else ""
    return f"{workload.dataset}-{arrivals}{cap}{'-nocache' if workload.cache_defeated else ''}"


def load_id(workload: Workload) -> str:
    """The id that seeds a workload's requests: a control's is its benchmark's, so both send the same load."""
    return workload_id(replace(workload, cache_defeated=False))

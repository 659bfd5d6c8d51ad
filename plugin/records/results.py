"""The typed results of a run (docs/results-schema.md), shared by the writer, the DVFS analysis and the report.

``results.json`` holds the run's header and one ``BenchmarkResult`` per benchmark: summaries, one power window
per round, never per-request data. Every benchmark's request records go to its own JSONL file beside it (one
``StoredRequest`` a line), so the summary file stays small at GPU sizes and across long sweeps. A figure that was
not measured is ``None`` (``null``), never 0.0.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from dataclasses import dataclass
from typing import Any, TypeVar, Union, get_args, get_origin, get_type_hints

from plugin.records.requests import RequestRecord
from plugin.records.windows import GpuWindow
from plugin.records.workload import Workload

SCHEMA_VERSION = 2
T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class PhaseSplit:
    """Energy of one window (or a benchmark's rounds together) split into prefill, decode and idle; the three add
    up to the counter's energy (``plugin.analysis.energy``)."""

    prefill_j: float | None
    decode_j: float | None
    idle_j: float | None
    prefill_above_idle_j: float | None
    decode_above_idle_j: float | None
    prefill_s: float
    decode_s: float
    overlap_s: float
    idle_s: float
    requests: int
    prompt_tokens: int
    output_tokens: int
    integral_j: float | None
    """The power samples' energy before anchoring to the counter."""
    j_per_prompt_token: float | None
    j_per_output_token: float | None
    j_per_request: float | None

    @property
    def total_j(self) -> float | None:
        parts = (self.prefill_j, self.decode_j, self.idle_j)
        return None if any(part is None for part in parts) else sum(part or 0.0 for part in parts)


@dataclass(frozen=True, slots=True)
class GpuEnergy:
    """One GPU over one window: the sampler's figures, its role, and its own phase split."""

    role: str
    """``prefill``, ``decode`` or ``prefill+decode``."""
    window: GpuWindow
    phases: PhaseSplit | None
    method: str = "time rule"
    """How ``phases`` was charged: ``role`` (a GPU of one phase: its phase's slices to it, the rest idle),
    ``time rule (shared GPU)``, ``time rule (role unknown)``; ``time rule`` in files from before roles counted."""
    idle_baseline_j: float | None = None
    """Idle power x the window's duration (what the GPU would have used doing nothing); ``None`` without one."""
    kv_handoff_s: float | None = None
    """Time with at least one KV hand-off under way (disaggregated; ``None`` without hand-off times)."""
    kv_handoff_j: float | None = None
    """This GPU's energy over ``kv_handoff_s``: a figure apart, already inside ``phases``."""
    residency: dict[str, dict[str, dict[str, float]]] = dataclasses.field(default_factory=dict)
    """Phase (``prefill``, ``decode``, ``both``, ``idle``) -> ``sm_clock_mhz`` / ``throttle`` -> clock or reason
    -> share of that phase's time on this GPU."""


@dataclass(frozen=True, slots=True)
class PowerWindow:
    """One round's power window over every GPU of the benchmark's architecture."""

    round: int
    start_s: float
    end_s: float
    energy_j: float | None
    """The counters' energy of every GPU together (the samples' where a GPU has no counter)."""
    gpus: dict[str, GpuEnergy]
    phases: PhaseSplit | None
    """All GPUs together."""
    notes: tuple[str, ...]
    sensor_updates: float | None = None
    """The window's duration over its GPUs' sensor update interval (the slowest GPU's); ``None`` when unknown.
    Under ``plugin.analysis.uncertainty.MIN_SENSOR_UPDATES`` the window is short (``BenchmarkPower.short_window``)."""

    @property
    def duration_s(self) -> float:
        return self.end_s - self.start_s


@dataclass(frozen=True, slots=True)
class BenchmarkPower:
    """A benchmark's energy: its rounds' windows and their totals; ``measured`` is false (with the reason) when no
    power source served this benchmark."""

    measured: bool
    backend: str
    unmeasured_reason: str | None
    gpu_roles: dict[str, str]
    energy_j: float | None
    energy_per_prompt_token_j: float | None
    energy_per_output_token_j: float | None
    energy_per_request_j: float | None
    phases: PhaseSplit | None
    windows: tuple[PowerWindow, ...]
    notes: tuple[str, ...]
    uncertainty: dict[str, float | None] = dataclasses.field(default_factory=dict)
    """Figure name (``energy_j``, ``energy_per_prompt_token_j``, ``prefill_j``...) -> the ± half-width of its 95 %
    interval, in the figure's unit (``plugin.analysis.uncertainty``); empty when power was not measured."""
    uncertainty_parts: dict[str, float | None] = dataclasses.field(default_factory=dict)
    """``energy_j``'s uncertainty in parts, in J: ``rounds``, ``edges``, ``disagreement`` (``None``: unknown)."""
    uncertainty_sources: dict[str, list[str]] = dataclasses.field(default_factory=dict)
    """Figure name -> the parts its ± contains (``rounds``, ``edges``, ``disagreement``, ``good_count``), so a
    verdict can say what its interval covers; empty in files from before it."""
    sensor_updates_min: float | None = None
    """The fewest sensor updates any of the windows rests on; ``None`` when the update interval is unknown."""
    short_window: bool = False
    """A window rests on fewer than ``MIN_SENSOR_UPDATES`` sensor updates: its figures are flagged."""
    excluded_gpus: tuple[int, ...] = ()
    """The power source's GPUs (``power_gpus`` indices) that no window charged: an exporter's GPUs without
    ``--gpu-role``, a Ray node's GPUs no instance was given. Only ``gpu_roles``' GPUs are charged."""


@dataclass(frozen=True, slots=True)
class BenchmarkResult:
    """One benchmark: what ran, its summary over every measured round (``plugin.analysis.stats``), each round's
    summary, its power, the DVFS setting it ran under, and where its request records are."""

    id: str
    name: str
    architecture: str
    phase: str
    workload: Workload
    summary: dict[str, Any]
    rounds: tuple[dict[str, Any], ...]
    power: BenchmarkPower
    dvfs: dict[str, Any] | None
    requests_file: str
    """The JSONL file of this benchmark's request records, in the run folder. Fields that conftest hooks add
    (``pytest_pd_energy_bench_update_benchmark_entry``) stay in the JSON entry and are not read back here."""
    topology: str = ""
    """The topology it ran on (``dp:2``, ``1p1d``, or the default pair's ``traditional`` / ``disaggregated``);
    empty in files from before topologies, where ``architecture`` names it."""
    gpu_budget: int = 1
    """The GPUs every window of this benchmark charged, unused ones included (on CPU: the topology's instance
    slots); the per-GPU figures in ``summary`` divide by it."""

    @property
    def topology_name(self) -> str:
        return self.topology or self.architecture


@dataclass(frozen=True, slots=True)
class StoredRequest:
    """One line of a benchmark's JSONL file: a request record and the round it belongs to (``None``: warm-up)."""

    round: int | None
    record: RequestRecord


def to_json(value: Any) -> Any:
    """A dataclass (nested ones too) as plain JSON values."""
    return dataclasses.asdict(value) if dataclasses.is_dataclass(value) and not isinstance(value, type) else value


def from_json(cls: type[T], data: Any) -> T:
    """Rebuild a (nested) dataclass from ``to_json``'s output; keys the class does not know are ignored."""
    return typing.cast(T, _build(cls, data))


def _build(kind: Any, data: Any) -> Any:
    if data is None:
        return None
    origin = get_origin(kind)
    if origin in (Union, types.UnionType):
        options = [option for option in get_args(kind) if option is not type(None)]
        return _build(options[0], data) if len(options) == 1 else data
    if dataclasses.is_dataclass(kind) and isinstance(kind, type):
        hints = get_type_hints(kind)
        known = {f.name for f in dataclasses.fields(kind) if f.init}
        constructor: Any = kind
        return constructor(**{name: _build(hints[name], value) for name, value in data.items() if name in known})
    if origin is tuple:
        args = get_args(kind)
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(_build(args[0], item) for item in data)
        return tuple(_build(arg, item) for arg, item in zip(args, data, strict=True))
    if origin is list:
        return [_build(get_args(kind)[0], item) for item in data]
    if origin is dict:
        return {key: _build(get_args(kind)[1], value) for key, value in data.items()}
    return data

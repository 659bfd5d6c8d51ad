"""Parsers of option values, each raising ``ValueError`` (or ``BenchError``) with what was expected, and the typed
values of the options (request rates, datasets, goodput targets) shared by the options, the load and the analysis.
Beside ``plugin.options`` at the bottom of the stage order: it imports no stage."""

from __future__ import annotations

import math
import urllib.parse
from dataclasses import dataclass
from pathlib import Path

from plugin.errors import BenchError

DATASET_KINDS = ("random", "sharegpt", "jsonl", "mooncake", "azure", "sessions")
GOODPUT_KEYS = ("ttft", "tpot", "e2el")
DEFAULT_SLO_ATTAINMENT_PCT = 90.0
"""``--slo-attainment``'s default: a topology or DVFS setting meets goodput targets when at least this share of its
requests are good. DistServe's (OSDI'24) attainment goal, which keeps a few outliers from disqualifying an
otherwise fitting setting."""
COMPARISON_ROUNDS = 3
"""Rounds per rate a verdict between topologies needs to name a winner, and so the serving benchmarks' ``--rounds``
default when a run names several topologies: with fewer, energy's ± has no between-round spread (one round) or
rests on a t quantile of 12.7 (two). AIPerf's minimum for multi-run statistics too."""
RAY_PLACEMENT_TIMEOUT_S = 120.0
"""``--ray-placement-timeout-s``'s default: how long an instance may wait for its Ray node's GPUs (another job may
hold them) before the deployment fails, naming the node and what it waits for."""
_EXAMPLE_FILES = {
    "sharegpt": "conversations.json",
    "jsonl": "prompts.jsonl",
    "mooncake": "trace.jsonl",
    "azure": "AzureLLMInferenceTrace_conv.csv",
    "sessions": "sessions.jsonl",
}
POWER_BACKENDS = ("auto", "nvml", "smi", "none")
GPU_ROLES = ("prefill", "decode", "prefill+decode", "unused")
"""What a GPU does in a topology; ``unused`` (``plugin.records.topology.UNUSED``): a GPU of the budget that its
topology leaves idle, charged with all of its energy idle."""
POWER_SOURCE_EXAMPLE = "dcgm=http://HOST:9400/metrics"
DRAWN, NOMINAL = "drawn", "nominal"
ARRIVAL_SCALINGS = (DRAWN, NOMINAL)


def arrival_scaling(text: str) -> str:
    """``--arrival-scaling``'s value, checked."""
    if text not in ARRIVAL_SCALINGS:
        raise ValueError(f"expected one of {', '.join(ARRIVAL_SCALINGS)}")
    return text


KV_CONNECTORS = ("example", "nixl", "p2pnccl")


@dataclass(frozen=True, slots=True)
class RequestRates:
    """Open-loop arrival rates in requests/s (``math.inf``: all at once), or a sweep: the synchronous rate and the
    saturated throughput are measured first, then ``sweep_points`` rates spaced between them (guidellm's sweep), or
    a capacity search: each topology's goodput capacity is searched for, then every topology is measured at
    ``capacity_points`` rates up to the largest (``plugin.analysis.capacity``)."""

    rates: tuple[float, ...] = ()
    sweep_points: int | None = None
    capacity_points: int | None = None


@dataclass(frozen=True, slots=True)
class DatasetSpec:
    """Where prompts come from: ``random`` (exact-length token ids), a ShareGPT JSON file, a JSONL file, a trace
    (``mooncake``, ``azure``: ``plugin.load.traces``) or multi-turn ``sessions`` (``plugin.load.sessions``)."""

    kind: str
    path: Path | None = None

    @property
    def id(self) -> str:
        """``random``, ``sharegpt-<file stem>`` (the stem alone where it starts with the kind already)."""
        if self.path is None:
            return self.kind
        stem = self.path.stem
        return stem if stem.startswith(self.kind) else f"{self.kind}-{stem}"


@dataclass(frozen=True, slots=True)
class GoodputTargets:
    """Per-request latency targets in ms (vLLM's ``--goodput``); a request is good when it meets every one given."""

    ttft_ms: float | None = None
    tpot_ms: float | None = None
    e2el_ms: float | None = None


@dataclass(frozen=True, slots=True)
class Sizes:
    """Workload sizes: prompt and output lengths in tokens, concurrency levels, requests per round."""

    prefill_input_lens: tuple[int, ...]
    decode_output_lens: tuple[int, ...]
    decode_prompt_len: int
    e2e_input_len: int
    e2e_output_len: int
    concurrency: tuple[int, ...]
    num_requests: int


CPU_SIZES = Sizes(
    prefill_input_lens=(256, 512),
    decode_output_lens=(32, 128),
    decode_prompt_len=16,
    e2e_input_len=256,
    e2e_output_len=64,
    concurrency=(1, 4),
    num_requests=8,
)
GPU_SIZES = Sizes(
    prefill_input_lens=(128, 512, 2048, 8192),
    decode_output_lens=(128, 512, 2048),
    decode_prompt_len=32,
    e2e_input_len=1024,
    e2e_output_len=256,
    concurrency=(1, 8, 32),
    num_requests=64,
)


def positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise ValueError("expected a whole number") from None
    if value <= 0:
        raise ValueError("must be a positive whole number")
    return value


def at_least_two(text: str) -> int:
    """A capacity search's probe slots: the saturated probe and at least one open-loop probe."""
    value = positive_int(text)
    if value < 2:
        raise ValueError("a search needs at least 2 probes (the saturated one and one at a rate)")
    return value


def positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise ValueError("expected a number") from None
    if not value > 0:
        raise ValueError("must be a positive number")
    return value


def positive_int_list(text: str) -> tuple[int, ...]:
    items = [item.strip() for item in text.split(",") if item.strip()]
    if not items:
        raise ValueError("expected a comma-separated list of positive whole numbers")
    return tuple(positive_int(item) for item in items)


def gpu_list(text: str) -> tuple[int, ...]:
    items = [item.strip() for item in text.split(",") if item.strip()]
    try:
        indices = tuple(int(item) for item in items)
    except ValueError:
        raise ValueError("expected comma-separated GPU indices such as 0 or 0,1") from None
    if not indices or any(index < 0 for index in indices):
        raise ValueError("expected comma-separated GPU indices such as 0 or 0,1")
    return indices


def port_number(text: str) -> int:
    port = positive_int(text)
    if port > 65535:
        raise ValueError("a port is at most 65535")
    return port


@dataclass(frozen=True, slots=True)
class Prices:
    """The user's inputs; ``None``: not given, so the figures that need it are absent."""

    energy_usd_per_kwh: float | None = None
    gpu_usd_per_hour: float | None = None
    """Per GPU of the budget (on CPU, per instance slot of the budget)."""
    grid_g_co2e_per_kwh: float | None = None
    pue: float = 1.0
    """Power usage effectiveness: the facility's energy over the IT equipment's (1: the GPUs' energy alone)."""

    @property
    def given(self) -> bool:
        return any(v is not None for v in (self.energy_usd_per_kwh, self.gpu_usd_per_hour, self.grid_g_co2e_per_kwh))


def pue(text: str) -> float:
    """Power usage effectiveness: facility energy over IT energy, so 1 or more."""
    try:
        value = float(text)
    except ValueError:
        raise ValueError("expected a number, the facility's energy over the IT equipment's (e.g. 1.2)") from None
    if not (value >= 1 and math.isfinite(value)):
        raise ValueError("a PUE is 1 or more (the facility's energy over the IT equipment's; 1: the GPUs alone)")
    return value


def non_negative_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise ValueError("expected a number") from None
    if not value >= 0:
        raise ValueError("must be zero or more")
    return value


def power_backend(text: str) -> str:
    if text not in POWER_BACKENDS:
        raise ValueError(f"expected one of {', '.join(POWER_BACKENDS)}")
    return text


def kv_connector(text: str) -> str:
    if text not in KV_CONNECTORS:
        raise ValueError(f"expected one of {', '.join(KV_CONNECTORS)}")
    return text


def value_list(text: str) -> tuple[int, ...]:
    """``1980,1500,900``, ``900:1980:180`` (stop included when a step lands on it), or both mixed."""
    values: list[int] = []
    for item in (part.strip() for part in text.split(",")):
        if not item:
            continue
        if ":" in item:
            try:
                start, stop, step = (int(x) for x in item.split(":"))
            except ValueError:
                raise ValueError(f"{item!r}: a range is start:stop:step in whole numbers, e.g. 900:1980:180") from None
            if step <= 0 or start > stop or start <= 0:
                raise ValueError(f"{item!r}: a range needs 0 < start <= stop and a positive step")
            values += range(start, stop + 1, step)
        else:
            values.append(positive_int(item))
    if not values:
        raise ValueError("expected values such as 1980,1500 or a range such as 900:1980:180")
    return tuple(dict.fromkeys(values))  # in the order given, each once


def request_rates(text: str) -> RequestRates:
    """``2,8``, ``inf``, ``sweep:N`` or ``capacity:N``."""
    text = text.strip()
    if text.startswith("capacity:"):
        try:
            points = int(text.removeprefix("capacity:"))
        except ValueError:
            raise ValueError(
                "a capacity search is capacity:N, N shared rates measured after it, e.g. capacity:4"
            ) from None
        if points < 1:
            raise ValueError("a capacity search measures at least one shared rate after it: capacity:N with N >= 1")
        return RequestRates(capacity_points=points)
    if text.startswith("sweep:"):
        try:
            points = int(text.removeprefix("sweep:"))
        except ValueError:
            raise ValueError("a sweep is sweep:N with N a whole number of rates, e.g. sweep:5") from None
        if points < 1:
            raise ValueError("a sweep needs at least one rate between the synchronous and the saturated one")
        return RequestRates(sweep_points=points)
    rates = []
    for item in (part.strip() for part in text.split(",") if part.strip()):
        rate = math.inf if item.lower() == "inf" else positive_float(item)
        rates.append(rate)
    if not rates:
        raise ValueError("expected request rates in requests/s such as 2,8, inf (all at once), sweep:5 or capacity:4")
    return RequestRates(tuple(dict.fromkeys(rates)))


def dataset_list(text: str) -> tuple[DatasetSpec, ...]:
    """``random`` or ``KIND:PATH`` (sharegpt, jsonl, mooncake, azure, sessions), comma-separated; the files must
    exist."""
    specs = []
    for item in (part.strip() for part in text.split(",") if part.strip()):
        kind, _, path = item.partition(":")
        if kind not in DATASET_KINDS:
            raise ValueError(f"{item!r}: the dataset kind is one of {', '.join(DATASET_KINDS)} (e.g. sharegpt:FILE)")
        if kind == "random":
            if path:
                raise ValueError("'random' takes no file; its lengths come from --e2e-input-len/--e2e-output-len")
            specs.append(DatasetSpec("random"))
            continue
        if not path:
            raise ValueError(f"{item!r}: name the file, e.g. {kind}:data/{_EXAMPLE_FILES[kind]}")
        file = Path(path).expanduser()
        if not file.is_file():
            raise ValueError(f"{item!r}: no such file {file}")
        specs.append(DatasetSpec(kind, file))
    if not specs:
        raise ValueError("expected random or KIND:PATH with KIND one of sharegpt, jsonl, mooncake, azure, sessions")
    return tuple(specs)


def goodput_targets(text: str) -> GoodputTargets:
    """``ttft:200 tpot:50 e2el:2000`` (any subset, milliseconds; spaces or commas between)."""
    targets: dict[str, float] = {}
    for item in text.replace(",", " ").split():
        key, _, value = item.partition(":")
        if key not in GOODPUT_KEYS:
            raise ValueError(f"{item!r}: a goodput target is one of {', '.join(GOODPUT_KEYS)}, as KEY:MILLISECONDS")
        try:
            targets[key] = positive_float(value)
        except ValueError:
            raise ValueError(
                f"{item!r}: the target must be a positive number of milliseconds, e.g. {key}:200"
            ) from None
    if not targets:
        raise ValueError("expected targets such as ttft:200 tpot:50 e2el:2000 (milliseconds)")
    return GoodputTargets(targets.get("ttft"), targets.get("tpot"), targets.get("e2el"))


def ratio(text: str) -> float:
    value = non_negative_float(text)
    if value >= 1:
        raise ValueError("must be at least 0 and below 1")
    return value


def percentage(text: str) -> float:
    """A share in % above 0 and at most 100 (``--slo-attainment``): 0 would let every topology meet the targets."""
    try:
        value = float(text)
    except ValueError:
        raise ValueError("expected a number of percent, e.g. 90") from None
    if not 0 < value <= 100:
        raise ValueError("must be above 0 and at most 100 (percent)")
    return value


def parse_power_source(text: str) -> str:
    """``--power-source dcgm=URL`` into the exporter's URL; a URL without a path gets ``/metrics``."""
    kind, sep, url = (part.strip() for part in text.partition("="))
    if not sep or not url:
        raise BenchError(f"--power-source {text!r}: expected SOURCE=URL, such as {POWER_SOURCE_EXAMPLE}")
    if kind != "dcgm":
        known = f"the one known is dcgm ({POWER_SOURCE_EXAMPLE})"
        raise BenchError(f"--power-source {text!r}: unknown source {kind!r}; {known}")
    parts = urllib.parse.urlsplit(url)
    try:
        valid = parts.scheme in ("http", "https") and bool(parts.hostname) and parts.port != 0
    except ValueError:  # a port that is not a number, or out of range
        valid = False
    if not valid:
        raise BenchError(f"--power-source {text!r}: {url!r} is not an http(s) URL with a host: {POWER_SOURCE_EXAMPLE}")
    return urllib.parse.urlunsplit(parts._replace(path=parts.path if parts.path not in ("", "/") else "/metrics"))


def parse_gpu_role(text: str) -> tuple[str, int, str]:
    """``--gpu-role HOST:GPU=ROLE`` into ``(host, gpu, role)``; HOST and GPU as the exporter labels them."""
    target, sep, role = (part.strip() for part in text.rpartition("="))
    host, colon, gpu = target.rpartition(":")
    if not sep or not colon or not host:
        raise BenchError(f"--gpu-role {text!r}: expected HOST:GPU=ROLE, such as node-a:0=prefill")
    if not gpu.isdigit():
        raise BenchError(f"--gpu-role {text!r}: GPU {gpu!r} is not an index (the exporter's gpu label: 0, 1, ...)")
    if role not in GPU_ROLES:
        raise BenchError(f"--gpu-role {text!r}: role {role!r} is not one of {', '.join(GPU_ROLES)}")
    return host, int(gpu), role


def resolution(text: str) -> tuple[float | None, float | None]:
    """``10%`` (of the bracket's upper end) or ``0.5`` (req/s): ``(rps, pct)``, one of them ``None``."""
    text = text.strip()
    if text.endswith("%"):
        try:
            pct = float(text[:-1])
        except ValueError:
            raise ValueError("expected a percentage such as 10% or a rate in req/s such as 0.5") from None
        if not 0 < pct < 100:
            raise ValueError("a relative resolution is above 0 % and below 100 %")
        return None, pct
    try:
        return positive_float(text), None
    except ValueError:
        raise ValueError("expected a percentage such as 10% or a positive rate in req/s such as 0.5") from None


@dataclass(frozen=True, slots=True)
class TraceSlice:
    """``--trace-slice``: the stretch of trace time replayed, in seconds (``None``: from the start, to the end)."""

    start_s: float | None = None
    end_s: float | None = None

    def holds(self, arrival_s: float) -> bool:
        return (self.start_s is None or arrival_s >= self.start_s) and (self.end_s is None or arrival_s < self.end_s)

    @property
    def text(self) -> str:
        start, end = ("" if bound is None else f"{bound:g}" for bound in (self.start_s, self.end_s))
        return f"{start}:{end}"


def trace_slice(text: str) -> TraceSlice:
    """``--trace-slice``'s value: ``START:END`` in seconds of trace time, either side may be left out."""
    start, colon, end = text.partition(":")
    if not colon:
        raise ValueError("expected START:END in seconds of trace time, e.g. 0:600 or 3600: (either may be left out)")
    try:
        bounds = [None if not part.strip() else float(part) for part in (start, end)]
    except ValueError:
        raise ValueError("START and END are seconds of trace time, e.g. 0:600") from None
    low, high = bounds
    if any(b is not None and not (math.isfinite(b) and b >= 0) for b in bounds):
        raise ValueError("START and END are finite seconds of trace time, zero or more")
    if low is not None and high is not None and high <= low:
        raise ValueError(f"END ({high:g}) must be after START ({low:g})")
    return TraceSlice(low, high)


RAMP_UP_STRATEGIES = ("linear", "exponential")


def ramp_up_strategy(text: str) -> str:
    """``--ramp-up-strategy``'s value, checked."""
    if text not in RAMP_UP_STRATEGIES:
        raise ValueError(f"expected one of {', '.join(RAMP_UP_STRATEGIES)}")
    return text

"""Command-line options and their ini twins, parsed once into one frozen settings object.

Every option has an ini key of the same name with underscores (``--max-model-len`` -> ``max_model_len``); the
command line wins over the ini file, which wins over the suite's default. Defaults that depend on the device
(short lengths on CPU, real ones on GPU) are filled in by ``resolve_settings``.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import os
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import pytest

from plugin.errors import BenchError
from plugin.option_values import (
    COMPARISON_ROUNDS,
    CPU_SIZES,
    DEFAULT_SLO_ATTAINMENT_PCT,
    DRAWN,
    GPU_SIZES,
    RAY_PLACEMENT_TIMEOUT_S,
    DatasetSpec,
    GoodputTargets,
    Prices,
    RequestRates,
    Sizes,
    TraceSlice,
    arrival_scaling,
    at_least_two,
    dataset_list,
    goodput_targets,
    gpu_list,
    kv_connector,
    non_negative_float,
    parse_gpu_role,
    parse_power_source,
    percentage,
    port_number,
    positive_float,
    positive_int,
    positive_int_list,
    power_backend,
    pue,
    ramp_up_strategy,
    ratio,
    request_rates,
    resolution,
    trace_slice,
    value_list,
)
from plugin.records.topology import DEFAULT_TOPOLOGIES, Topology, check_fits, parse_topologies

T = TypeVar("T")
DEFAULT_CAPACITY_RESOLUTION_PCT = 10.0
DEFAULT_MAX_PROBES = 8
MIN_WINDOW_S = 5.0
"""50 updates of a 100 ms power sensor: a window's edges then cost about 2 % (docs/energy-uncertainty.md)."""
SHIPPED_SHAREGPT = Path(__file__).resolve().parent / "load" / "data" / "sharegpt-tiny.json"
"""A small ShareGPT-format file written for this project: the CPU default of the serving benchmarks."""

GROUP = "pd-energy-bench"


@dataclass(frozen=True, slots=True)
class Settings:
    model: str | None
    model_cache_dir: Path
    vllm_url: str | None
    vllm_python: str
    gpus: tuple[int, ...]
    max_model_len: int | None
    dtype: str | None
    vllm_args: tuple[str, ...]
    vllm_port: int | None
    server_start_timeout_s: float
    request_timeout_s: float
    sizes: Sizes
    rounds: int
    """Measured rounds per phase benchmark (``--rounds``, else 1)."""
    reports_dir: Path
    gpu_sample_ms: float
    power_backend: str
    idle_baseline_s: float
    min_window_s: float
    prefill_gpus: tuple[int, ...]
    decode_gpus: tuple[int, ...]
    kv_connector: str
    report_baseline: str | None
    sm_clocks: tuple[int, ...]
    mem_clocks: tuple[int, ...]
    power_limits: tuple[int, ...]
    prefill_sm_clocks: tuple[int, ...]
    decode_sm_clocks: tuple[int, ...]
    dvfs_dry_run: bool
    slo_ttft_ms: float | None
    slo_tbt_ms: float | None
    request_rates: RequestRates
    burstiness: float
    max_concurrency: int | None
    datasets: tuple[DatasetSpec, ...]
    random_range_ratio: float
    duration_s: float | None
    warmup_s: float
    cooldown_s: float
    goodput: GoodputTargets | None
    seed: int | None
    topologies: tuple[Topology, ...] = DEFAULT_TOPOLOGIES
    power_sources: tuple[str, ...] = ()
    """DCGM exporters' ``/metrics`` URLs (``--power-source dcgm=URL``): power from a cluster the suite did not start."""
    gpu_roles: tuple[tuple[str, int, str], ...] = ()
    """``(host, gpu, role)`` of the exporters' GPUs (``--gpu-role HOST:GPU=ROLE``)."""
    ray_address: str | None = None
    """A running Ray cluster (``--ray-address ADDR`` or ``auto``): each server is placed on one of its nodes."""
    prefill_node: str | None = None
    """With ``--ray-address``: the node of the prefill instances (IP, ``key=value`` label, custom resource, id)."""
    decode_node: str | None = None
    server_node: str | None = None
    ray_placement_timeout_s: float = RAY_PLACEMENT_TIMEOUT_S
    """``--ray-placement-timeout-s``: how long an instance may wait for its Ray node's GPUs."""
    serving_rounds: int = 1
    """Measured rounds per serving benchmark: ``--rounds`` where given, else ``COMPARISON_ROUNDS`` when the run names
    several topologies (a verdict between them needs them), else 1."""
    slo_attainment_pct: float = DEFAULT_SLO_ATTAINMENT_PCT
    """``--slo-attainment``: the SLO attainment (%) from which the topology verdict and the DVFS best setting count
    the targets as met."""
    arrival_scaling: str = DRAWN
    """``--arrival-scaling``: an open loop's gaps as drawn, or rescaled so the last of N is due at N / rate."""
    capacity_resolution_rps: float | None = None
    """``--capacity-resolution``: a capacity search stops once its bracket is this narrow (req/s), or ..."""
    capacity_resolution_pct: float | None = DEFAULT_CAPACITY_RESOLUTION_PCT
    """... this many % of the bracket's upper end."""
    max_probes: int = DEFAULT_MAX_PROBES
    """``--max-probes``: a capacity search's probes per topology and dataset, the saturated one included."""
    resume: Path | None = None
    """``--resume RUN_FOLDER``: measure into that run folder; benchmarks it holds already are not measured again."""
    prices: Prices | None = None
    """The user's energy price, PUE, GPU-hour price and grid carbon intensity: cost and carbon figures; ``None``
    without any of them (no price is ever assumed)."""
    vllm_results: bool = False
    """``--vllm-results``: also write each serving benchmark as ``vllm bench serve --save-result`` would."""
    mlenergy_max_num_seqs: int | None = None
    """``--mlenergy-max-num-seqs``: vLLM's batch bound B, passed to the servers, and ML.ENERGY's figures beside the
    suite's for every serving benchmark whose requests all arrive at once (``plugin.analysis.mlenergy``)."""
    trace_time_scale: float = 1.0
    """``--trace-time-scale``: a trace's timestamps multiplied by this (0.5: replayed twice as fast)."""
    trace_slice: TraceSlice = TraceSlice()
    """``--trace-slice``: the stretch of a trace replayed, in seconds of trace time."""
    think_time_s: float = 0.0
    """``--think-time-s``: in a session, the pause between an answer and the next turn."""
    ramp_up: tuple[str, float, float] | None = None
    """``--ramp-up-strategy``, ``--ramp-up-start-rps``, ``--ramp-up-end-rps`` (vLLM's): one ramp replaces the rates."""
    prefix_cache_control: bool = False
    """``--prefix-cache-control``: each trace and sessions benchmark is followed by its control, caching defeated."""
    request_cancellation_pct: float | None = None
    """``--request-cancellation-rate``: the share (%) of serving requests whose client leaves mid-answer."""
    request_cancellation_delay_s: float = 0.0
    """``--request-cancellation-delay-s``: how long after its send a cancelled request's client leaves."""

    def topology(self, name: str) -> Topology:
        return next(topology for topology in self.topologies if topology.name == name)

    @property
    def dvfs_requested(self) -> bool:
        return any((self.sm_clocks, self.mem_clocks, self.power_limits, self.prefill_sm_clocks, self.decode_sm_clocks))


# name, help, parser (None: plain string); each becomes --name and the ini key name_with_underscores.
_OPTIONS: list[tuple[str, str]] = [
    ("model", "model folder or hub name to serve; default: the suite's tiny model, built locally"),
    ("model-cache-dir", "where the tiny model is built and reused (default: ~/.cache/pd-energy-bench)"),
    ("vllm-url", "use the vLLM server already running at URL instead of starting one"),
    ("vllm-python", "Python interpreter that has vLLM installed (default: this one)"),
    ("gpus", "comma-separated GPU indices for the server (CUDA_VISIBLE_DEVICES); default: GPU 0 if any"),
    ("max-model-len", "vLLM --max-model-len (default: enough for the largest workload)"),
    ("dtype", "vLLM --dtype (default: bfloat16 on CPU, vLLM's own choice on GPU)"),
    ("vllm-port", "port for the started server (default: a free one); a busy port is an error"),
    ("server-start-timeout-s", "seconds to wait for the server's /health (default: 900)"),
    ("request-timeout-s", "seconds one request may take before it is recorded as failed (default: 600)"),
    ("input-lens", "prefill benchmark prompt lengths in tokens, e.g. 128,512,2048"),
    ("output-lens", "decode benchmark output lengths in tokens, e.g. 128,512"),
    ("decode-prompt-len", "prompt length of the decode benchmarks in tokens"),
    ("e2e-input-len", "prompt length of the end-to-end benchmark in tokens"),
    ("e2e-output-len", "output length of the end-to-end benchmark in tokens"),
    ("concurrency", "concurrency levels, e.g. 1,8,32 (requests in flight at once)"),
    ("num-requests", "requests per measured round (at least the concurrency level is sent)"),
    (
        "rounds",
        f"measured rounds per benchmark, each a full load run (default: 1; serving benchmarks, when several "
        f"topologies run: {COMPARISON_ROUNDS}, the fewest with which a verdict names a winner)",
    ),
    ("reports-dir", "where runs are written (default: reports)"),
    ("gpu-sample-ms", "power/clock sampling period per GPU in milliseconds (default: 100)"),
    ("power-backend", "where power comes from: auto (NVML, else nvidia-smi, else none), nvml, smi or none"),
    ("idle-baseline-s", "seconds of idle power measured once before the first benchmark (default: 3; 0: none)"),
    (
        "min-window-s",
        "shortest power window: a shorter round repeats its load with fresh prompts until it lasts this long "
        "(default: 5 where power is measured, 0 without)",
    ),
    ("prefill-gpus", "disaggregated: GPUs of the prefill instances, one instance each (default: GPU 0)"),
    ("decode-gpus", "disaggregated: GPUs of the decode instances, one instance each (default: GPU 1, else 0)"),
    (
        "topologies",
        "architectures to compare on one GPU budget: dp:N (data parallel over N GPUs), XpYd (X prefill, Y decode "
        "GPUs), traditional, disaggregated; comma-separated, GPUs taken from --gpus in order (default: "
        "traditional,disaggregated)",
    ),
    ("kv-connector", "disaggregated: example (files; default on CPU), nixl (default on GPU) or p2pnccl"),
    ("sm-clocks", "DVFS: SM clocks in MHz to sweep: a list (1980,1500,900) or a range start:stop:step (900:1980:180)"),
    ("mem-clocks", "DVFS: memory clocks in MHz to sweep (list or range)"),
    ("power-limits", "DVFS: power limits in W to sweep (list or range)"),
    ("prefill-sm-clocks", "DVFS, disaggregated: the prefill GPUs' SM clocks (default: --sm-clocks)"),
    (
        "decode-sm-clocks",
        "DVFS, disaggregated: the decode GPUs' SM clocks (default: --sm-clocks), crossed with prefill's",
    ),
    ("slo-ttft-ms", "latency target for TTFT: the report names the lowest-energy setting that meets it"),
    ("slo-tbt-ms", "latency target for TBT (time between tokens): as --slo-ttft-ms, for decode"),
    (
        "request-rate",
        "serving: open-loop arrival rates in requests/s, e.g. 2,8; inf (all at once); sweep:N; capacity:N (search "
        "each topology's goodput capacity, then measure all at N shared rates up to the largest)",
    ),
    (
        "capacity-resolution",
        f"capacity search: stop bisecting once the bracket is this narrow, in req/s (0.5) or percent of its upper end "
        f"(10%%; default {DEFAULT_CAPACITY_RESOLUTION_PCT:g}%%)",
    ),
    (
        "max-probes",
        f"capacity search: at most this many probes per topology, the saturated one included (default "
        f"{DEFAULT_MAX_PROBES})",
    ),
    (
        "resume",
        "measure into this run folder again (same command): benchmarks it holds already are not measured again",
    ),
    ("burstiness", "serving: gamma shape of the gaps between arrivals (1: Poisson; lower: burstier; default 1)"),
    (
        "arrival-scaling",
        "serving: drawn (the gaps as drawn, the first arrival at 0; default) or nominal (vLLM bench serve's rule: "
        "the drawn arrivals rescaled so the last of N is due at N / rate)",
    ),
    ("max-concurrency", "serving: at most this many requests in flight; later arrivals wait (default: no cap)"),
    (
        "dataset",
        "serving: random, sharegpt:PATH, jsonl:PATH, a trace (mooncake:PATH, azure:PATH) or multi-turn sessions "
        "(sessions:PATH) (comma-separated; default on CPU: a shipped file)",
    ),
    ("trace-time-scale", "serving, traces: timestamps multiplied by this (0.5 replays twice as fast; default 1)"),
    ("trace-slice", "serving, traces: replay only START:END, in seconds of trace time (e.g. 0:600; default all)"),
    ("think-time-s", "serving, sessions: seconds between an answer and the session's next turn (default 0)"),
    (
        "ramp-up-strategy",
        "serving: linear or exponential: the arrival rate ramps from --ramp-up-start-rps to --ramp-up-end-rps over "
        "a round's requests (vLLM's), in place of --request-rate; reported per stage",
    ),
    ("ramp-up-start-rps", "serving, with --ramp-up-strategy: the first request's rate (requests/s)"),
    ("ramp-up-end-rps", "serving, with --ramp-up-strategy: the last request's rate (requests/s)"),
    (
        "request-cancellation-rate",
        "serving: percent of requests whose client disconnects mid-answer, each drawn at random (AIPerf's); "
        "recorded as failed (cancelled), never good, and no reason to fail the benchmark (default: none)",
    ),
    (
        "request-cancellation-delay-s",
        "serving, with --request-cancellation-rate: seconds after its send at which such a request's client "
        "disconnects, if its answer has not ended (default 0)",
    ),
    ("random-range-ratio", "serving, random dataset: lengths drawn uniformly within mean x (1 +- ratio) (default 0)"),
    ("duration-s", "serving: requests arrive for this many seconds (instead of --num-requests); steady state"),
    ("warmup-s", "serving: seconds at the start of --duration-s left out of statistics and power (default 0)"),
    ("cooldown-s", "serving: seconds at the end of --duration-s left out likewise (default 0)"),
    ("goodput", "latency targets in ms, any of ttft:N tpot:N e2el:N: SLO attainment, goodput, J per good request"),
    (
        "slo-attainment",
        "SLO attainment (percent) at which a topology or DVFS setting meets the goodput targets "
        "(default 90, DistServe's)",
    ),
    ("seed", "seed of arrival schedules and dataset sampling (default: random per run, recorded in results)"),
    (
        "ray-address",
        "place every vLLM instance and a power sampler per node on this running Ray cluster (ADDR or auto); "
        "needs the ray extra",
    ),
    ("prefill-node", "with --ray-address: the prefill instances' node: IP, label key=value, custom resource or id"),
    ("decode-node", "with --ray-address: the decode instances' node (as --prefill-node)"),
    ("server-node", "with --ray-address: the traditional server's node (as --prefill-node)"),
    (
        "ray-placement-timeout-s",
        f"with --ray-address: seconds an instance may wait for its node's GPUs while another job holds them, then "
        f"the topology fails naming the node (default: {RAY_PLACEMENT_TIMEOUT_S:g})",
    ),
    ("energy-usd-per-kwh", "cost: your energy price in $/kWh (with --pue): energy cost per token and per good request"),
    ("pue", "cost and carbon: the data centre's PUE, facility over IT energy (default 1: the GPUs' energy alone)"),
    ("gpu-usd-per-hour", "cost: your price of one GPU-hour; every GPU of the budget is charged for the windows' time"),
    (
        "grid-gco2e-per-kwh",
        "carbon: your grid's intensity in gCO2e/kWh (published by Electricity Maps, Ember, EPA eGRID, grid "
        "operators): gCO2e per good request and per million output tokens",
    ),
    (
        "mlenergy-max-num-seqs",
        "measure as the ML.ENERGY benchmark does: vLLM --max-num-seqs B for the servers, and for serving benchmarks "
        "sent all at once (--request-rate inf) their steady state's J per token and per response beside the suite's",
    ),
    (
        "report-baseline",
        "run id or folder the report compares with (default: the last run of the same model and devices)",
    ),
]
_REPEATED: list[tuple[str, str, str]] = [
    (
        "power-source",
        "dcgm=URL",
        "read power from a DCGM exporter (its /metrics URL) instead of this machine's GPUs; repeat it per exporter",
    ),
    (
        "gpu-role",
        "HOST:GPU=ROLE",
        "the role (prefill, decode, prefill+decode, unused) of a GPU of the run's budget that a --power-source "
        "exporter lists; repeat it per GPU (the exporters' other GPUs are not charged)",
    ),
]
"""Options given once per item; their ini twins take one item a line."""


def add_options(parser: pytest.Parser) -> None:
    group = parser.getgroup(GROUP, "LLM inference phase benchmarks on vLLM")
    for name, help_text in _OPTIONS:
        nargs = "+" if name == "goodput" else None  # vLLM's syntax: --goodput ttft:200 tpot:50
        group.addoption(f"--{name}", dest=_dest(name), default=None, nargs=nargs, help=help_text)
        parser.addini(_dest(name), help=help_text.replace("%%", "%"), default=None)  # argparse alone expands %%
    group.addoption(
        "--vllm-arg",
        dest="vllm_args",
        action="append",
        default=[],
        help="extra argument passed to vLLM as is; repeat it, e.g. --vllm-arg=--enforce-eager",
    )
    parser.addini("vllm_args", help="extra vLLM arguments, one per line", type="linelist", default=[])
    for name, metavar, help_text in _REPEATED:
        group.addoption(f"--{name}", dest=_dest(name), action="append", default=[], metavar=metavar, help=help_text)
        parser.addini(_dest(name), help=help_text, type="linelist", default=[])
    vllm_help = "also write each serving benchmark as vllm bench serve --save-result does (run folder, vllm-results/)"
    group.addoption("--vllm-results", dest="vllm_results", action="store_true", default=False, help=vllm_help)
    parser.addini("vllm_results", help=vllm_help, type="bool", default=False)
    dry_run_help = "DVFS: plan the sweep and check it against the GPUs' supported values, change nothing, run nothing"
    group.addoption("--dvfs-dry-run", dest="dvfs_dry_run", action="store_true", default=False, help=dry_run_help)
    parser.addini("dvfs_dry_run", help=dry_run_help, type="bool", default=False)
    control_help = (
        "serving, traces and sessions: after each, a control benchmark of the same requests with the prefix cache "
        "defeated (a cache_salt per request), so the energy the cache saved is measured"
    )
    group.addoption(
        "--prefix-cache-control", dest="prefix_cache_control", action="store_true", default=False, help=control_help
    )
    parser.addini("prefix_cache_control", help=control_help, type="bool", default=False)


def _dest(name: str) -> str:
    return name.replace("-", "_")


def _raw(config: pytest.Config, name: str) -> str | None:
    value = config.getoption(_dest(name))
    if value is None:
        value = config.getini(_dest(name))
    if isinstance(value, list):  # an option that takes several words
        value = " ".join(value)
    return None if value in (None, "") else str(value)


def _parsed(config: pytest.Config, name: str, parse: Callable[[str], T], default: T) -> T:
    raw = _raw(config, name)
    if raw is None:
        return default
    try:
        return parse(raw)
    except ValueError as error:
        raise pytest.UsageError(f"--{name}={raw!r}: {error}") from None


def default_cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "pd-energy-bench"


def resolve_settings(config: pytest.Config, gpu_count: int) -> Settings:
    """Read every option once; raise ``pytest.UsageError`` with the fix for any bad value."""
    on_gpu = gpu_count > 0
    measures_power = on_gpu and _raw(config, "power-backend") != "none"
    device_sizes = GPU_SIZES if on_gpu else CPU_SIZES
    sizes = Sizes(
        prefill_input_lens=_parsed(config, "input-lens", positive_int_list, device_sizes.prefill_input_lens),
        decode_output_lens=_parsed(config, "output-lens", positive_int_list, device_sizes.decode_output_lens),
        decode_prompt_len=_parsed(config, "decode-prompt-len", positive_int, device_sizes.decode_prompt_len),
        e2e_input_len=_parsed(config, "e2e-input-len", positive_int, device_sizes.e2e_input_len),
        e2e_output_len=_parsed(config, "e2e-output-len", positive_int, device_sizes.e2e_output_len),
        concurrency=_parsed(config, "concurrency", positive_int_list, device_sizes.concurrency),
        num_requests=_parsed(config, "num-requests", positive_int, device_sizes.num_requests),
    )
    vllm_args = tuple(config.getoption("vllm_args") or config.getini("vllm_args"))
    rounds = _parsed(config, "rounds", positive_int, None)
    topologies: tuple[Topology, ...] = _parsed(config, "topologies", parse_topologies, DEFAULT_TOPOLOGIES)
    settings = Settings(
        model=_raw(config, "model"),
        model_cache_dir=Path(_raw(config, "model-cache-dir") or default_cache_dir()).expanduser(),
        vllm_url=(_raw(config, "vllm-url") or "").rstrip("/") or None,
        vllm_python=_raw(config, "vllm-python") or sys.executable,
        gpus=_parsed(config, "gpus", gpu_list, (0,) if on_gpu else ()),
        max_model_len=_parsed(config, "max-model-len", positive_int, None),
        dtype=_raw(config, "dtype") or (None if on_gpu else "bfloat16"),
        vllm_args=vllm_args,
        vllm_port=_parsed(config, "vllm-port", port_number, None),
        server_start_timeout_s=_parsed(config, "server-start-timeout-s", positive_float, 900.0),
        request_timeout_s=_parsed(config, "request-timeout-s", positive_float, 600.0),
        sizes=sizes,
        rounds=rounds or 1,
        reports_dir=Path(_raw(config, "reports-dir") or config.rootpath / "reports"),
        gpu_sample_ms=_parsed(config, "gpu-sample-ms", positive_float, 100.0),
        power_backend=_parsed(config, "power-backend", power_backend, "auto"),
        idle_baseline_s=_parsed(config, "idle-baseline-s", non_negative_float, 3.0),
        min_window_s=_parsed(config, "min-window-s", non_negative_float, MIN_WINDOW_S if measures_power else 0.0),
        prefill_gpus=_parsed(config, "prefill-gpus", gpu_list, (0,) if on_gpu else ()),
        decode_gpus=_parsed(config, "decode-gpus", gpu_list, ((1,) if gpu_count > 1 else (0,)) if on_gpu else ()),
        kv_connector=_parsed(config, "kv-connector", kv_connector, "nixl" if on_gpu else "example"),
        report_baseline=_raw(config, "report-baseline"),
        sm_clocks=_parsed(config, "sm-clocks", value_list, ()),
        mem_clocks=_parsed(config, "mem-clocks", value_list, ()),
        power_limits=_parsed(config, "power-limits", value_list, ()),
        prefill_sm_clocks=_parsed(config, "prefill-sm-clocks", value_list, ()),
        decode_sm_clocks=_parsed(config, "decode-sm-clocks", value_list, ()),
        dvfs_dry_run=bool(config.getoption("dvfs_dry_run") or config.getini("dvfs_dry_run")),
        slo_ttft_ms=_parsed(config, "slo-ttft-ms", positive_float, None),
        slo_tbt_ms=_parsed(config, "slo-tbt-ms", positive_float, None),
        topologies=topologies,
        serving_rounds=rounds or (COMPARISON_ROUNDS if len(topologies) > 1 else 1),
        prices=_prices(config),
        mlenergy_max_num_seqs=_parsed(config, "mlenergy-max-num-seqs", positive_int, None),
        vllm_results=bool(config.getoption("vllm_results") or config.getini("vllm_results")),
        **_load_settings(config, on_gpu),
    )
    if settings.resume is not None and _raw(config, "reports-dir") is None:  # the run's own reports folder
        settings = dataclasses.replace(settings, reports_dir=settings.resume.parent)
    settings = _with_mlenergy(settings)
    try:
        check_fits(settings.topologies, settings)
    except ValueError as error:
        raise pytest.UsageError(f"--topologies: {error}") from None
    return _with_ray(config, _with_power_sources(config, settings))


def _with_mlenergy(settings: Settings) -> Settings:
    """``--mlenergy-max-num-seqs B`` bounds the servers' batch at B (vLLM's ``--max-num-seqs``), unless a
    ``--vllm-arg`` already bounds it otherwise."""
    batch = settings.mlenergy_max_num_seqs
    if batch is None:
        return settings
    given = [arg for arg in settings.vllm_args if arg.startswith("--max-num-seqs")]
    if given and given != [f"--max-num-seqs={batch}"]:
        raise pytest.UsageError(
            f"--mlenergy-max-num-seqs {batch} sets vLLM's --max-num-seqs, and --vllm-arg gives {given[0]!r}: "
            "give one of them"
        )
    return dataclasses.replace(
        settings, vllm_args=(*settings.vllm_args, *([] if given else [f"--max-num-seqs={batch}"]))
    )


def _prices(config: pytest.Config) -> Prices | None:
    """The user's prices and carbon intensity; ``None`` without any (``--pue`` alone prices nothing: refused)."""
    prices = Prices(
        energy_usd_per_kwh=_parsed(config, "energy-usd-per-kwh", non_negative_float, None),
        gpu_usd_per_hour=_parsed(config, "gpu-usd-per-hour", non_negative_float, None),
        grid_g_co2e_per_kwh=_parsed(config, "grid-gco2e-per-kwh", non_negative_float, None),
        pue=_parsed(config, "pue", pue, 1.0),
    )
    if not prices.given and _raw(config, "pue") is not None:
        raise pytest.UsageError(
            "--pue scales the energy's cost and carbon: give --energy-usd-per-kwh or --grid-gco2e-per-kwh with it"
        )
    return prices if prices.given else None


def _with_ray(config: pytest.Config, settings: Settings) -> Settings:
    """``--ray-address`` and the node selectors: a selector needs the address, and the address starts its own
    servers, so it does not go with ``--vllm-url``."""
    address = _raw(config, "ray-address")
    nodes = {name: _raw(config, f"{name}-node") for name in ("prefill", "decode", "server")}
    timeout_s = _parsed(config, "ray-placement-timeout-s", positive_float, RAY_PLACEMENT_TIMEOUT_S)
    if address is None:
        given = [f"--{name}-node" for name, value in nodes.items() if value is not None]
        if given:
            raise pytest.UsageError(f"{', '.join(given)} names a Ray node: give the cluster with --ray-address")
        if _raw(config, "ray-placement-timeout-s") is not None:
            raise pytest.UsageError(
                "--ray-placement-timeout-s bounds the wait for a Ray node's GPUs: give the cluster with --ray-address"
            )
        return settings
    if importlib.util.find_spec("ray") is None:
        raise pytest.UsageError("--ray-address needs Ray, an extra of the suite: pip install '.[ray]'")
    if settings.vllm_url:
        raise pytest.UsageError(
            "--vllm-url measures a server that is already running, --ray-address starts servers on a Ray cluster: "
            "give one of them"
        )
    return dataclasses.replace(
        settings,
        ray_address=address,
        prefill_node=nodes["prefill"],
        decode_node=nodes["decode"],
        server_node=nodes["server"],
        ray_placement_timeout_s=timeout_s,
    )


def _with_power_sources(config: pytest.Config, settings: Settings) -> Settings:
    """``--power-source`` and ``--gpu-role``, each item parsed (a ``UsageError`` naming a bad one)."""
    sources = config.getoption("power_source") or config.getini("power_source")
    roles = config.getoption("gpu_role") or config.getini("gpu_role")
    try:
        urls = tuple(parse_power_source(source) for source in sources)
        gpu_roles = tuple(parse_gpu_role(role) for role in roles)
    except BenchError as error:
        raise pytest.UsageError(str(error)) from None
    if gpu_roles and not urls:
        raise pytest.UsageError("--gpu-role names GPUs of a DCGM exporter: give the exporter with --power-source")
    if urls and not gpu_roles:
        raise pytest.UsageError(
            "--power-source charges only the GPUs of the run's budget: name each with --gpu-role HOST:GPU=ROLE "
            "(prefill, decode, prefill+decode, or unused), as the exporter labels it; its other GPUs are not charged"
        )
    return dataclasses.replace(settings, power_sources=urls, gpu_roles=gpu_roles)


def _load_settings(config: pytest.Config, on_gpu: bool) -> dict[str, Any]:
    """The serving benchmarks' load: rates, arrivals, datasets, steady-state windows, goodput targets and the
    attainment at which they count as met."""
    default_rates = RequestRates(sweep_points=5) if on_gpu else RequestRates((1.0, 4.0))
    default_datasets: tuple[DatasetSpec, ...] = (
        (DatasetSpec("random"),) if on_gpu else (DatasetSpec("sharegpt", SHIPPED_SHAREGPT),)
    )
    seed = _parsed(config, "seed", int, None)
    default_resolution: tuple[float | None, float | None] = (None, DEFAULT_CAPACITY_RESOLUTION_PCT)
    resolution_rps, resolution_pct = _parsed(config, "capacity-resolution", resolution, default_resolution)
    resume = _raw(config, "resume")
    if resume is not None and not (Path(resume) / "results.json").is_file():
        raise pytest.UsageError(
            f"--resume {resume}: no results.json there; give a run folder of an earlier run (reports/<run id>)"
        )
    rates = _parsed(config, "request-rate", request_rates, default_rates)
    goodput = _parsed(config, "goodput", goodput_targets, None)
    attainment_pct = _parsed(config, "slo-attainment", percentage, DEFAULT_SLO_ATTAINMENT_PCT)
    if rates.capacity_points is not None and attainment_pct >= 100:
        raise pytest.UsageError(
            "--slo-attainment 100 with a capacity search: no finite number of requests shows 100 % with 95 % "
            "confidence, so no rate would ever meet it; give 99 or less"
        )
    if rates.capacity_points is not None and goodput is None:
        raise pytest.UsageError(
            "--request-rate capacity:N searches the highest rate that meets latency targets: give them with "
            "--goodput, e.g. --goodput ttft:200 tpot:20"
        )
    datasets = _parsed(config, "dataset", dataset_list, default_datasets)
    strategy = _parsed(config, "ramp-up-strategy", ramp_up_strategy, None)
    ramp_rates = [_parsed(config, f"ramp-up-{end}-rps", positive_float, None) for end in ("start", "end")]
    if (strategy is None) != (ramp_rates[0] is None) or (strategy is None) != (ramp_rates[1] is None):
        raise pytest.UsageError(
            "--ramp-up-strategy, --ramp-up-start-rps and --ramp-up-end-rps go together: give all three or none"
        )
    time_scale = _parsed(config, "trace-time-scale", positive_float, 1.0)
    window = _parsed(config, "trace-slice", trace_slice, TraceSlice())
    return {
        "capacity_resolution_rps": resolution_rps,
        "capacity_resolution_pct": resolution_pct,
        "max_probes": _parsed(config, "max-probes", at_least_two, DEFAULT_MAX_PROBES),
        "resume": None if resume is None else Path(resume),
        "request_rates": rates,
        "burstiness": _parsed(config, "burstiness", positive_float, 1.0),
        "arrival_scaling": _parsed(config, "arrival-scaling", arrival_scaling, DRAWN),
        "max_concurrency": _parsed(config, "max-concurrency", positive_int, None),
        "datasets": datasets,
        "trace_time_scale": time_scale,
        "trace_slice": window,
        "think_time_s": _parsed(config, "think-time-s", non_negative_float, 0.0),
        "ramp_up": None if strategy is None else (strategy, ramp_rates[0], ramp_rates[1]),
        "prefix_cache_control": bool(config.getoption("prefix_cache_control") or config.getini("prefix_cache_control")),
        "random_range_ratio": _parsed(config, "random-range-ratio", ratio, 0.0),
        "goodput": goodput,
        "seed": seed,
        "slo_attainment_pct": attainment_pct,
        **_steady_state_settings(config),
        **_cancellation_settings(config),
    }


def _steady_state_settings(config: pytest.Config) -> dict[str, Any]:
    """A steady-state run's length and the stretches cut off its ends, checked to leave something to measure."""
    duration_s = _parsed(config, "duration-s", positive_float, None)
    warmup_s = _parsed(config, "warmup-s", non_negative_float, 0.0)
    cooldown_s = _parsed(config, "cooldown-s", non_negative_float, 0.0)
    if duration_s is not None and warmup_s + cooldown_s >= duration_s:
        raise pytest.UsageError(
            f"--duration-s {duration_s:g} is not longer than --warmup-s {warmup_s:g} plus --cooldown-s "
            f"{cooldown_s:g}: nothing would be measured; lengthen the duration or shorten the warm-up and cool-down"
        )
    if duration_s is None and (warmup_s or cooldown_s):
        raise pytest.UsageError("--warmup-s and --cooldown-s cut a steady-state run: give --duration-s too")
    return {"duration_s": duration_s, "warmup_s": warmup_s, "cooldown_s": cooldown_s}


def _cancellation_settings(config: pytest.Config) -> dict[str, Any]:
    """Which share of the requests have their client leave on purpose, and when (AIPerf's request cancellation)."""
    cancellation_pct = _parsed(config, "request-cancellation-rate", percentage, None)
    if cancellation_pct is None and _raw(config, "request-cancellation-delay-s") is not None:
        raise pytest.UsageError(
            "--request-cancellation-delay-s says when a cancelled request's client leaves: give "
            "--request-cancellation-rate too"
        )
    return {
        "request_cancellation_pct": cancellation_pct,
        "request_cancellation_delay_s": _parsed(config, "request-cancellation-delay-s", non_negative_float, 0.0),
    }

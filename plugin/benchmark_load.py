"""What one benchmark sends through the runner: fresh exact-length prompts per round for a phase benchmark, or a
serving benchmark's schedules (its dataset's requests on its arrivals; a sweep point's rate from the sweep's
measured ends, the same for every topology)."""

from __future__ import annotations

import math
import random
from dataclasses import asdict, replace
from typing import Any

from plugin import capacity_run
from plugin.load.plan import ServingPlan, dataset_of, serving_plan, tokenizer_for
from plugin.load.schedule import arrivals_of, sweep_rate
from plugin.load.workload import DATASET_MAX_LEN, default_max_model_len, make_prompts
from plugin.measurement import Measurement
from plugin.records.workload import SERVING, Workload
from plugin.runner import Runner
from plugin.serving.endpoint import Endpoint
from plugin.session import RunSession


def measure_workload(
    bench_session: RunSession, runner: Runner, name: str, workload: Workload, rng: random.Random
) -> tuple[Measurement, dict[str, Any]]:
    """A phase benchmark's rounds of fresh exact-length prompts, or a serving benchmark's schedules."""
    settings, endpoint = bench_session.settings, runner.endpoint
    if workload.phase == SERVING:
        plan, extra = serving_plan_for(bench_session, workload, endpoint, rng)
        stop = capacity_run.stop_when(settings) if capacity_run.is_open_loop_probe(workload) else None
        return runner.measure_schedules(name, plan.rounds, plan.warmup, stop), extra

    def prompts_for(count: int) -> list[list[int]]:
        return make_prompts(count, workload.input_len, endpoint.vocab, rng)

    measurement = runner.measure(
        name, settings.rounds, prompts_for, workload.num_requests, workload.output_len, workload.concurrency,
        settings.min_window_s,
    )  # fmt: skip
    return measurement, {}


def serving_plan_for(
    bench_session: RunSession, workload: Workload, endpoint: Endpoint, rng: random.Random
) -> tuple[ServingPlan, dict[str, Any]]:
    """The schedules of a serving benchmark; a sweep point's rate comes from its dataset's sweep ends, the same for
    every topology, and its entry names the topology that measured them."""
    settings = bench_session.settings
    rate = workload.request_rate
    extra: dict[str, Any] = {}
    if workload.sweep is not None and workload.sweep.isdigit():
        ends = bench_session.sweep_ends.get(str(workload.dataset))
        points = settings.request_rates.sweep_points or 0
        rate = sweep_rate(str(workload.sweep), points, ends)
        assert ends is not None  # sweep_rate refuses a point without its ends
        extra["sweep_ends"] = asdict(ends)
    arrivals = arrivals_of(workload, rate, settings.warmup_s, settings.cooldown_s, settings.arrival_scaling)
    spec = dataset_of(workload, settings)
    tokenizer = tokenizer_for(spec, endpoint.model_dir or endpoint.model, endpoint.metrics_url or endpoint.url)
    max_model_len = settings.max_model_len or (
        default_max_model_len(settings) if endpoint.model_dir else DATASET_MAX_LEN
    )
    if capacity_run.is_probe_point(workload):  # a probe is judged on its requests' interval: one round
        settings = replace(settings, serving_rounds=1)
    plan = serving_plan(
        workload, arrivals, settings, rng, tokenizer, endpoint.vocab, max_model_len, endpoint.warmup_requests
    )
    offered = arrivals.rate if arrivals.rate is not None and math.isfinite(arrivals.rate) else None
    if offered is not None:  # an open loop: its gaps as drawn, or rescaled to the nominal span
        extra["arrival_scaling"] = arrivals.scaling
    return plan, {"offered_rate_rps": offered, "dataset": plan.dataset, **extra}

"""What one serving benchmark sends: its dataset's requests laid on its arrival schedules, a warm-up request, and
what the results record of the dataset (how many pairs were filtered and why)."""

from __future__ import annotations

import math
import random
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from plugin.load.datasets import Dataset, Tokenizer, load_dataset, local_tokenizer, server_tokenizer
from plugin.load.replay_plan import session_schedules, trace_schedules
from plugin.load.schedule import Arrivals, Schedule, schedules
from plugin.load.traces import TRACE_KINDS
from plugin.load.workload import UNIQUE_PREFIX_TOKENS
from plugin.option_values import DatasetSpec
from plugin.options import Settings
from plugin.records.workload import Workload

SPARE = 1.3
"""Requests drawn per expected arrival in steady state: Poisson arrivals can run ahead of the mean rate."""


@dataclass(frozen=True, slots=True)
class ServingPlan:
    warmup: Schedule
    rounds: tuple[Schedule, ...]
    dataset: dict[str, Any]
    """The dataset's source and filter counts, for the results."""


def dataset_of(workload: Workload, settings: Settings) -> DatasetSpec:
    return next(spec for spec in settings.datasets if spec.id == workload.dataset)


def tokenizer_for(spec: DatasetSpec, model: str, url: str) -> Tokenizer | None:
    """The model folder's own tokenizer, else the server's ``/tokenize`` (an external server, a hub name); none for
    random token ids (``random`` and the traces)."""
    if spec.kind == "random" or spec.kind in TRACE_KINDS:
        return None
    return local_tokenizer(model) if Path(model).expanduser().is_dir() else server_tokenizer(url, model)


def serving_plan(
    workload: Workload,
    arrivals: Arrivals,
    settings: Settings,
    rng: random.Random,
    tokenizer: Tokenizer | None,
    vocab: tuple[int, int],
    max_model_len: int,
    warmup_requests: int = 1,
) -> ServingPlan:
    """Draw enough requests for every round once (each request is used once), then lay them on the schedules. The
    warm-up sends the first request ``warmup_requests`` times at once (``Endpoint.warmup_requests``): whatever
    the topology, the same requests are drawn and measured."""
    spec = dataset_of(workload, settings)
    if spec.kind in TRACE_KINDS or spec.kind == "sessions":
        return _replayed_plan(spec, workload, arrivals, settings, rng, tokenizer, vocab, max_model_len, warmup_requests)
    per_round = workload.num_requests
    if arrivals.duration_s is not None and arrivals.rate is not None and math.isfinite(arrivals.rate):
        per_round = math.ceil(arrivals.rate * arrivals.duration_s * SPARE) + 16
    dataset = load_dataset(
        spec, 1 + settings.serving_rounds * per_round, rng, tokenizer=tokenizer, input_len=workload.input_len,
        output_len=workload.output_len, range_ratio=settings.random_range_ratio, vocab=vocab,
        max_model_len=max_model_len,
    )  # fmt: skip
    pool = [(list(request.prompt), request.output_len) for request in dataset.requests]
    taken = 1  # the first request is the warm-up's

    def requests_for(count: int) -> list[tuple[list[int], int]]:
        nonlocal taken
        chosen = [pool[(taken + i) % len(pool)] for i in range(count)]
        taken += count
        return chosen

    rounds = schedules(arrivals, settings.serving_rounds, workload.num_requests, settings.burstiness, rng, requests_for)
    warmup = Schedule((pool[0],) * warmup_requests, (0.0,) * warmup_requests, None)
    return ServingPlan(warmup, tuple(rounds), _dataset_entry(dataset))


def _replayed_plan(
    spec: DatasetSpec,
    workload: Workload,
    arrivals: Arrivals,
    settings: Settings,
    rng: random.Random,
    tokenizer: Tokenizer | None,
    vocab: tuple[int, int],
    max_model_len: int,
    warmup_requests: int,
) -> ServingPlan:
    """A trace at its own timestamps, or sessions (``--num-requests`` of them per round, or open-loop for
    ``--duration-s``)."""
    rounds = settings.serving_rounds
    if spec.kind in TRACE_KINDS:
        warmup, schedules, entry = trace_schedules(
            spec, arrivals, rounds, settings.trace_time_scale, settings.trace_slice, rng, vocab, max_model_len,
            warmup_requests,
        )  # fmt: skip
    else:
        warmup, schedules, entry = session_schedules(
            spec, arrivals, rounds, workload.num_requests, settings.burstiness, settings.think_time_s, rng, tokenizer,
            vocab, max_model_len, UNIQUE_PREFIX_TOKENS, warmup_requests,
        )  # fmt: skip
    if workload.cache_defeated:
        schedules = tuple(replace(schedule, cache_salted=True) for schedule in schedules)
    return ServingPlan(warmup, schedules, {**entry, "prefix_cache_defeated": workload.cache_defeated})


def _dataset_entry(dataset: Dataset) -> dict[str, Any]:
    lengths = [len(request.prompt) for request in dataset.requests]
    outputs = [request.output_len for request in dataset.requests]
    return {
        "source": dataset.source,
        "requests_drawn": len(dataset.requests),
        "skipped_by_length": dataset.skipped_by_length,
        "too_long_for_model": dataset.too_long_for_model,
        "unreadable_entries": dataset.unreadable,
        "mean_prompt_tokens": sum(lengths) / len(lengths) if lengths else None,
        "mean_output_tokens": sum(outputs) / len(outputs) if outputs else None,
    }

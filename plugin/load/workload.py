"""What a benchmark sends: workload shapes per phase, the serving benchmarks' cases, and unique prompts of an exact
token length.

Prompts are token ids, not text, so their length is exact; each is unique within a run and random across runs,
so vLLM's prefix cache cannot skip the prefill being measured.
"""

from __future__ import annotations

import json
import math
import random
from dataclasses import replace
from pathlib import Path

from plugin.load.traces import TRACE_KINDS
from plugin.option_values import Sizes
from plugin.options import Settings
from plugin.records.workload import GRID, PROBE, SERVING, Workload

PHASES = ("prefill", "decode", "e2e")
SWEEP_SYNC, SWEEP_MAX = "sync", "max"
DATASET_MAX_LEN = 2048
"""vLLM's ShareGPT filter keeps prompt + output within 2048 tokens: a server for file datasets must hold that."""
UNIQUE_PREFIX_TOKENS = 4
"""Random token ids in front of every dataset prompt, so that no request hits a cached prefix (PEERS trap 1)."""
# Token ids used when the model's vocabulary cannot be read (a remote server): every real tokenizer has these.
FALLBACK_VOCAB = (100, 30000)


def workloads_for(phase: str, sizes: Sizes) -> list[Workload]:
    """Prefill: ``max_tokens=1`` over input lengths; decode: a short prompt over output lengths; e2e: one shape."""
    if phase == "prefill":
        shapes = [(n, 1) for n in sizes.prefill_input_lens]
    elif phase == "decode":
        shapes = [(sizes.decode_prompt_len, n) for n in sizes.decode_output_lens]
    elif phase == "e2e":
        shapes = [(sizes.e2e_input_len, sizes.e2e_output_len)]
    else:
        raise ValueError(f"unknown phase {phase!r}; expected one of {PHASES}")
    return [
        Workload(phase, input_len, output_len, concurrency, max(sizes.num_requests, concurrency))
        for input_len, output_len in shapes
        for concurrency in sizes.concurrency
    ]


def serving_workloads(settings: Settings) -> list[Workload]:
    """Dataset x arrival rate (or sweep point, or capacity search point); ``random`` prompts take the end-to-end
    lengths; a trace is replayed once, at its own timestamps; with ``--prefix-cache-control`` each trace and sessions
    workload is followed by its control."""
    sizes, rates = settings.sizes, settings.request_rates
    arrivals: list[tuple[float | None, str | None, bool]]
    if rates.capacity_points is not None:
        probes = [f"{PROBE}{k}" for k in range(1, settings.max_probes + 1)]
        grid = [f"{GRID}{k}" for k in range(1, rates.capacity_points + 1)]
        arrivals = [(None, point, False) for point in (*probes, *grid)]
    elif rates.sweep_points is not None:
        points = [SWEEP_SYNC, SWEEP_MAX, *(str(k) for k in range(1, rates.sweep_points + 1))]
        arrivals = [(None, point, False) for point in points]
    else:
        arrivals = [(None if math.isinf(rate) else rate, None, False) for rate in rates.rates]
    if settings.ramp_up is not None:
        arrivals = [(None, None, False)]  # the ramp's rates replace --request-rate
    workloads = [
        Workload(
            SERVING,
            sizes.e2e_input_len,
            sizes.e2e_output_len,
            settings.max_concurrency or 0,
            sizes.num_requests,
            dataset.id,
            rate,
            settings.burstiness,
            sweep,
            None if replay or settings.ramp_up else settings.duration_s,
            replay,
            ramp_up=None if replay else settings.ramp_up,
        )  # fmt: skip
        for dataset in settings.datasets
        for rate, sweep, replay in ([(None, None, True)] if dataset.kind in TRACE_KINDS else arrivals)
    ]
    if not settings.prefix_cache_control:
        return workloads
    reuse = {dataset.id for dataset in settings.datasets if dataset.kind in (*TRACE_KINDS, "sessions")}
    return [
        variant
        for workload in workloads
        for variant in (workload, replace(workload, cache_defeated=True))[: 2 if workload.dataset in reuse else 1]
    ]


def longest_sequence(settings: Settings) -> int:
    """Prompt plus output tokens of the largest workload of fixed length (phases, random datasets with their range):
    ``--max-model-len`` must hold it."""
    sizes = settings.sizes
    phases = max(w.input_len + w.output_len for phase in PHASES for w in workloads_for(phase, sizes))
    if not any(dataset.kind == "random" for dataset in settings.datasets):
        return phases
    spread = 1 + settings.random_range_ratio
    return max(phases, math.ceil((sizes.e2e_input_len + sizes.e2e_output_len) * spread) + UNIQUE_PREFIX_TOKENS)


def default_max_model_len(settings: Settings) -> int:
    """The started server's max-model-len: the longest fixed workload, and vLLM's 2048 for file datasets (pairs
    longer than a user's ``--max-model-len`` are dropped from them, with a count)."""
    files = any(dataset.kind != "random" for dataset in settings.datasets)
    return max(longest_sequence(settings), DATASET_MAX_LEN if files else 0)


def vocab_range(model: str) -> tuple[int, int]:
    """Token ids safe to send: skip the low ids where most tokenizers keep special tokens, stay in the vocab of
    both the model and its tokenizer (a ``plugin.serving.shape_model`` folder pairs a big model with a tiny
    tokenizer)."""
    folder = Path(model).expanduser()
    try:
        vocab_size = int(json.loads((folder / "config.json").read_text())["vocab_size"])
    except (OSError, ValueError, KeyError, TypeError):
        return FALLBACK_VOCAB
    try:
        tokenizer = json.loads((folder / "tokenizer.json").read_text())
        vocab_size = min(vocab_size, len(tokenizer["model"]["vocab"]))
    except (OSError, ValueError, KeyError, TypeError):
        pass  # no tokenizer.json (or another format): the model's vocabulary it is
    if vocab_size <= 2000:  # the tiny model: ids 0 and 1 are <s> and </s>
        return (2, vocab_size)
    return (FALLBACK_VOCAB[0], min(vocab_size, FALLBACK_VOCAB[1]))


def make_prompts(count: int, length: int, vocab: tuple[int, int], rng: random.Random) -> list[list[int]]:
    """``count`` distinct prompts of exactly ``length`` token ids."""
    low, high = vocab
    if (high - low) ** length < count:
        raise ValueError(f"cannot make {count} distinct prompts of {length} tokens from {high - low} token ids")
    prompts: list[list[int]] = []
    seen: set[tuple[int, ...]] = set()
    while len(prompts) < count:
        prompt = [rng.randrange(low, high) for _ in range(length)]
        if tuple(prompt) not in seen:
            seen.add(tuple(prompt))
            prompts.append(prompt)
    return prompts

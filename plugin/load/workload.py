"""What a benchmark sends: workload shapes per phase and unique prompts of an exact token length.

Prompts are token ids, not text, so their length is exact; each is unique within a run and random across runs,
so vLLM's prefix cache cannot skip the prefill being measured.
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass
from pathlib import Path

from plugin.options import Sizes

PHASES = ("prefill", "decode", "e2e")
# Token ids used when the model's vocabulary cannot be read (a remote server): every real tokenizer has these.
FALLBACK_VOCAB = (100, 30000)


@dataclass(frozen=True, slots=True)
class Workload:
    """One benchmark's load: ``num_requests`` prompts of ``input_len`` tokens, ``output_len`` tokens each."""

    phase: str
    input_len: int
    output_len: int
    concurrency: int
    num_requests: int

    @property
    def id(self) -> str:
        return workload_id(self)


def workload_id(workload: Workload) -> str:
    """``in512-out1-c4``: the one name of a workload shape, in test ids, results and the report."""
    return f"in{workload.input_len}-out{workload.output_len}-c{workload.concurrency}"


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


def longest_sequence(sizes: Sizes) -> int:
    """Prompt plus output tokens of the largest workload: the server's max-model-len must hold it."""
    return max(w.input_len + w.output_len for phase in PHASES for w in workloads_for(phase, sizes))


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

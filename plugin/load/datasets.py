"""Datasets turned into requests: (prompt token ids, output length) pairs whose token counts are exact for the
served model, because text is tokenized by the model's own tokenizer (its folder through ``transformers``, or
vLLM's ``/tokenize`` for a ``--vllm-url`` server) and sent as token ids. Nothing is downloaded.

- ``random``: random token ids (vLLM's ``--random-range-ratio``: each length drawn uniformly from the integers in
  [floor(len x (1 - r)), ceil(len x (1 + r))], output at least 1, as vLLM's ``RandomDataset``).
- ``sharegpt:PATH``: a JSON list of ``{"conversations": [{"from": "human"|"gpt", "value": TEXT}, ...]}``; the
  prompt is the first human turn, the output length the token count of the reply after it. vLLM's ShareGPT filter
  drops pairs with a prompt or reply under 4 tokens, a prompt over 1024 or both over 2048 tokens.
- ``jsonl:PATH``: one ``{"prompt": TEXT or [token ids], "output_len": N}`` per line.

An entry that cannot be read (a broken line, a conversation without a reply) is skipped and counted, as vLLM's
loaders skip it (``Skipped``); a file none of whose entries can be read is an error naming the first problem.
Files are read when the options are parsed (``plugin.load.validate``), before any server starts.

Prefix cache (PEERS trap 1): file prompts repeat across rounds, rates and cycles through a short file, and a warm
prefix cache would skip the prefill being measured. So every file request starts with ``unique_prefix`` random
token ids, distinct per request of a dataset: no two requests share a first block. Counts stay exact (prefix plus
tokenized prompt). Prompts differ across calls only as far as ``rng`` moves on: load a dataset for each round from
the run's one ``rng`` (the tokenizers here memoize, so that costs no second tokenization). ``random`` prompts are
random throughout and get no prefix, so their lengths stay the ones asked for.
"""

from __future__ import annotations

import json
import math
import random
import urllib.error
import urllib.request
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Protocol

from plugin.errors import BenchError
from plugin.option_values import DatasetSpec

# vLLM's is_valid_sequence defaults (benchmarks/datasets.py), applied to ShareGPT pairs.
MIN_LEN = 4
MAX_PROMPT_LEN = 1024
MAX_TOTAL_LEN = 2048
Pair = tuple[str | list[int], str | int]
"""A file's request before tokenizing: prompt (text or token ids), output (the reply's text or its length)."""
HUMAN_ROLES = ("human", "user")
REPLY_ROLES = ("gpt", "assistant")
_VLLM_FILTER = (
    f"vLLM's ShareGPT filter: prompt or reply under {MIN_LEN} tokens, prompt over {MAX_PROMPT_LEN} "
    f"or prompt + reply over {MAX_TOTAL_LEN} tokens"
)


@dataclass(frozen=True, slots=True)
class DatasetRequest:
    """One request: the prompt as token ids, and ``max_tokens`` (``ignore_eos`` makes it the exact output)."""

    prompt: tuple[int, ...]
    output_len: int


@dataclass(frozen=True, slots=True)
class Skipped:
    """Entries of a user's file left out because they cannot be read: how many, and the first one's problem."""

    count: int = 0
    first: str | None = None

    def add(self, problem: str) -> Skipped:
        return Skipped(self.count + 1, self.first or problem)

    def note(self, path: Path) -> str | None:
        """The one line the terminal shows for the file; ``None`` when nothing was skipped."""
        return None if not self.count else f"{path}: {self.count} unreadable entries skipped; first: {self.first}"

    def none_left(self, path: Path, problem: str) -> BenchError:
        """The error for a file with no usable entry: ``problem``, and the first skipped entry's where there was one."""
        if not self.count:
            return BenchError(problem)
        return BenchError(f"{path}: none of its entries can be used ({self.count} skipped); first: {self.first}")


@dataclass(frozen=True, slots=True)
class Dataset:
    """The requests of one dataset, and how many pairs of the file were left out and why (of those read)."""

    source: str
    requests: tuple[DatasetRequest, ...]
    skipped_by_length: int
    too_long_for_model: int
    unreadable: int = 0


class Tokenizer(Protocol):
    def encode(self, text: str) -> list[int]: ...


class _LocalTokenizer:
    """The model folder's tokenizer without special tokens: the ids sent are the ids counted."""

    def __init__(self, tokenizer: Any) -> None:
        self._tokenizer = tokenizer
        self._cache: dict[str, list[int]] = {}

    def encode(self, text: str) -> list[int]:
        if text not in self._cache:
            self._cache[text] = [int(token) for token in self._tokenizer.encode(text, add_special_tokens=False)]
        return list(self._cache[text])


class _ServerTokenizer:
    """vLLM's ``/tokenize``: the served model's own tokenizer when no model folder is at hand."""

    def __init__(self, url: str, model: str, timeout_s: float) -> None:
        self._url = url.rstrip("/") + "/tokenize"
        self._model = model
        self._timeout_s = timeout_s
        self._cache: dict[str, list[int]] = {}

    def encode(self, text: str) -> list[int]:
        if text not in self._cache:
            self._cache[text] = self._request(text)
        return list(self._cache[text])

    def _request(self, text: str) -> list[int]:
        body = json.dumps({"model": self._model, "prompt": text, "add_special_tokens": False}).encode()
        request = urllib.request.Request(
            self._url, data=body, headers={"Content-Type": "application/json"}, method="POST"
        )
        hint = "a vLLM server serves POST /tokenize; give --model a local model folder to tokenize here instead"
        try:
            with urllib.request.urlopen(request, timeout=self._timeout_s) as response:
                answer = json.loads(response.read())
        except urllib.error.HTTPError as error:
            detail = error.read()[:200].decode(errors="replace")
            raise BenchError(
                f"{self._url} answered HTTP {error.code} to a tokenize request ({detail}); {hint}"
            ) from None
        except (urllib.error.URLError, OSError) as error:
            reason = getattr(error, "reason", error)
            raise BenchError(f"cannot reach {self._url} to tokenize a prompt: {reason}") from None
        except ValueError:
            raise BenchError(
                f"{self._url} answered a tokenize request with something other than JSON; {hint}"
            ) from None
        tokens = answer.get("tokens") if isinstance(answer, dict) else None
        if not isinstance(tokens, list) or not all(isinstance(t, int) and not isinstance(t, bool) for t in tokens):
            raise BenchError(f"{self._url} answered a tokenize request without a 'tokens' list of ids; {hint}")
        return tokens


def local_tokenizer(model_dir: str) -> Tokenizer:
    """The tokenizer of a local model folder (or a hub name already in the local cache), never downloaded."""
    folder = Path(model_dir).expanduser()
    if model_dir.startswith(("/", ".", "~")) and not folder.is_dir():
        raise BenchError(f"no model folder at {model_dir}: a dataset other than random needs the model's tokenizer")
    try:
        import transformers
    except ImportError:
        raise BenchError(
            "tokenizing a dataset needs the transformers package: install it, or use --dataset random"
        ) from None
    try:
        tokenizer = transformers.AutoTokenizer.from_pretrained(str(folder), local_files_only=True)
    except Exception as error:  # transformers raises OSError, ValueError and others for a folder it cannot read
        first_line = str(error).strip().splitlines()[0] if str(error).strip() else ""
        raise BenchError(
            f"cannot load the tokenizer of {model_dir} ({type(error).__name__}: {first_line}); a dataset other than "
            "random needs the model's tokenizer files (tokenizer.json and tokenizer_config.json) in its folder"
        ) from None
    return _LocalTokenizer(tokenizer)


def server_tokenizer(url: str, model: str, timeout_s: float = 30.0) -> Tokenizer:
    """The served model's tokenizer through vLLM's ``/tokenize`` (for ``--vllm-url``); errors name the URL."""
    return _ServerTokenizer(url, model, timeout_s)


def load_dataset(
    spec: DatasetSpec,
    count: int,
    rng: random.Random,
    *,
    tokenizer: Tokenizer | None,
    input_len: int,
    output_len: int,
    range_ratio: float,
    vocab: tuple[int, int],
    max_model_len: int,
    unique_prefix: int = 4,
) -> Dataset:
    """``count`` requests of ``spec``: lengths from ``input_len``/``output_len``/``range_ratio`` (random) or the
    file (tokenized by ``tokenizer``); token ids drawn within ``vocab`` (low inclusive, high exclusive)."""
    if count < 1:
        raise ValueError(f"count must be positive, not {count}")
    if unique_prefix < 0:
        raise ValueError(f"unique_prefix must be zero or more, not {unique_prefix}")
    if spec.kind == "random":
        return _random_dataset(spec, count, rng, input_len, output_len, range_ratio, vocab, max_model_len)
    if spec.path is None:
        raise BenchError(f"the {spec.kind} dataset needs a file: --dataset {spec.kind}:PATH")
    pairs, skipped = read_pairs(spec.kind, spec.path)
    dataset = _file_dataset(
        spec,
        pairs,
        count,
        rng,
        tokenizer,
        vocab,
        max_model_len,
        unique_prefix,
        apply_vllm_filter=spec.kind == "sharegpt",
    )
    return replace(dataset, unreadable=skipped.count)


def read_pairs(kind: str, path: Path) -> tuple[list[Pair], Skipped]:
    """(prompt, output) pairs of a ``sharegpt`` or ``jsonl`` file, and the entries skipped as unreadable."""
    if kind == "sharegpt":
        return _read_sharegpt(path)
    if kind == "jsonl":
        return _read_jsonl(path)
    raise BenchError(f"unknown dataset kind {kind!r}: random, sharegpt:PATH or jsonl:PATH")


def length_range(length: int, range_ratio: float) -> tuple[int, int]:
    """vLLM's ``RandomDataset`` bounds: floor(len x (1 - r)) to ceil(len x (1 + r)), both included, at least 1."""
    if not 0 <= range_ratio < 1:
        raise ValueError(f"range_ratio must be at least 0 and below 1, not {range_ratio}")
    low = max(1, math.floor(length * (1 - range_ratio)))
    high = max(1, math.ceil(length * (1 + range_ratio)))
    return low, high


def _random_dataset(
    spec: DatasetSpec,
    count: int,
    rng: random.Random,
    input_len: int,
    output_len: int,
    range_ratio: float,
    vocab: tuple[int, int],
    max_model_len: int,
) -> Dataset:
    input_low, input_high = length_range(input_len, range_ratio)
    output_low, output_high = length_range(output_len, range_ratio)
    if input_high + output_high > max_model_len:
        raise BenchError(
            f"random requests reach {input_high} + {output_high} tokens, over the model's max_model_len "
            f"{max_model_len}: lower --e2e-input-len, --e2e-output-len or --random-range-ratio, "
            "or raise --max-model-len"
        )
    low, high = vocab
    requests: list[DatasetRequest] = []
    seen: set[tuple[int, ...]] = set()
    while len(requests) < count:
        length = rng.randint(input_low, input_high)
        max_tokens = rng.randint(output_low, output_high)
        prompt = tuple(rng.randrange(low, high) for _ in range(length))
        if prompt in seen:  # only possible with a tiny vocab and length; a repeat would hit the prefix cache
            if len(seen) >= sum((high - low) ** n for n in range(input_low, input_high + 1)):
                raise BenchError(f"cannot make {count} distinct random prompts of {input_low}-{input_high} tokens")
            continue
        seen.add(prompt)
        requests.append(DatasetRequest(prompt, max_tokens))
    return Dataset(spec.id, tuple(requests), skipped_by_length=0, too_long_for_model=0)


def _file_dataset(
    spec: DatasetSpec,
    pairs: Sequence[Pair],
    count: int,
    rng: random.Random,
    tokenizer: Tokenizer | None,
    vocab: tuple[int, int],
    max_model_len: int,
    unique_prefix: int,
    *,
    apply_vllm_filter: bool,
) -> Dataset:
    """Pairs read in a shuffled order until ``count`` fit (as vLLM's sampler stops), then cycled if too few."""
    path = spec.path
    order = list(range(len(pairs)))
    rng.shuffle(order)
    kept: list[tuple[list[int], int]] = []
    skipped = too_long = 0
    for index in order:
        if len(kept) == count:
            break
        prompt, output = pairs[index]
        prompt_ids = prompt if isinstance(prompt, list) else _encode(tokenizer, prompt, path)
        output_len = output if isinstance(output, int) else len(_encode(tokenizer, output, path))
        if apply_vllm_filter and not _vllm_keeps(len(prompt_ids), output_len):
            skipped += 1
        elif unique_prefix + len(prompt_ids) + output_len > max_model_len:
            too_long += 1
        else:
            kept.append((prompt_ids, output_len))
    if not kept:
        reasons = [f"{skipped} left out by {_VLLM_FILTER}"] if apply_vllm_filter else []
        reasons.append(
            f"{too_long} longer than the model's max_model_len {max_model_len} "
            f"({unique_prefix} prefix tokens + prompt + output)"
        )
        raise BenchError(
            f"no request of {path} fits: {'; '.join(reasons)}. Raise --max-model-len or use a file with shorter "
            "prompts and outputs"
        )
    prefixes = _unique_prefixes(count, unique_prefix, vocab, rng, path)
    requests = tuple(
        DatasetRequest(prefix + tuple(kept[i % len(kept)][0]), kept[i % len(kept)][1])
        for i, prefix in enumerate(prefixes)
    )
    return Dataset(spec.id, requests, skipped_by_length=skipped, too_long_for_model=too_long)


def _vllm_keeps(prompt_len: int, output_len: int) -> bool:
    return (
        prompt_len >= MIN_LEN
        and output_len >= MIN_LEN
        and prompt_len <= MAX_PROMPT_LEN
        and prompt_len + output_len <= MAX_TOTAL_LEN
    )


def _encode(tokenizer: Tokenizer | None, text: str, path: Path | None) -> list[int]:
    if tokenizer is None:
        raise BenchError(f"{path} holds text prompts: tokenizing them needs the model's tokenizer")
    return tokenizer.encode(text)


def _unique_prefixes(
    count: int, length: int, vocab: tuple[int, int], rng: random.Random, path: Path | None
) -> list[tuple[int, ...]]:
    low, high = vocab
    if length == 0:
        return [()] * count
    if (high - low) ** length < count:
        raise BenchError(
            f"{path}: {count} requests need more distinct {length}-token prefixes than {high - low} token ids allow"
        )
    prefixes: list[tuple[int, ...]] = []
    seen: set[tuple[int, ...]] = set()
    while len(prefixes) < count:
        prefix = tuple(rng.randrange(low, high) for _ in range(length))
        if prefix not in seen:
            seen.add(prefix)
            prefixes.append(prefix)
    return prefixes


def sharegpt_turns(path: Path, number: int, entry: object, shape: str) -> list[dict[str, str]]:
    """A ShareGPT entry's ``conversations``: from/value turns, or an error naming the entry and the expected shape."""
    turns = entry.get("conversations") if isinstance(entry, dict) else None
    if not isinstance(turns, list) or not all(
        isinstance(turn, dict) and isinstance(turn.get("from"), str) and isinstance(turn.get("value"), str)
        for turn in turns
    ):
        raise BenchError(f"{path}: entry {number} has no 'conversations' list of from/value turns; {shape}")
    return turns


SHAREGPT_SHAPE = 'a ShareGPT file is a JSON list of {"conversations": [{"from": "human", "value": TEXT}, ...]}'


def sharegpt_entries(path: Path, text: str) -> list[object]:
    """A ShareGPT file's entries (its JSON list), or an error naming the file and the shape expected."""
    try:
        data = json.loads(text)
    except json.JSONDecodeError as error:
        raise BenchError(
            f"{path} is not valid JSON (line {error.lineno}, column {error.colno}: {error.msg}); {SHAREGPT_SHAPE}"
        ) from None
    if not isinstance(data, list):
        raise BenchError(f"{path} holds a JSON {type(data).__name__}, not a list; {SHAREGPT_SHAPE}")
    return data


def json_line(line: str, where: str, shape: str) -> object:
    """One line of a JSONL file, or an error naming ``where`` it is and the shape expected."""
    try:
        return json.loads(line)
    except json.JSONDecodeError as error:
        raise BenchError(f"{where}: not valid JSON ({error.msg}); {shape}") from None


def read_text(path: Path, what: str = "dataset file") -> str:
    """A user's file (a dataset, a trace, sessions) as UTF-8 text, or an error naming ``what`` and why."""
    try:
        return path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise BenchError(f"{what} {path} does not exist") from None
    except UnicodeDecodeError as error:
        raise BenchError(f"{what} {path} is not UTF-8 text (byte {error.start})") from None
    except OSError as error:
        raise BenchError(f"cannot read {what} {path}: {error.strerror or error}") from None


def _read_sharegpt(path: Path) -> tuple[list[Pair], Skipped]:
    """(first human turn, the reply after it) of every conversation that has such a pair; an entry that is not a
    conversation, or one without a human turn and its reply (vLLM leaves those out unsaid), is counted skipped."""
    pairs: list[Pair] = []
    skipped = Skipped()
    for number, entry in enumerate(sharegpt_entries(path, read_text(path))):
        try:
            turns = sharegpt_turns(path, number, entry, SHAREGPT_SHAPE)
        except BenchError as error:
            skipped = skipped.add(str(error))
            continue
        human = next((i for i, turn in enumerate(turns) if turn["from"] in HUMAN_ROLES), None)
        if human is not None and human + 1 < len(turns) and turns[human + 1]["from"] in REPLY_ROLES:
            pairs.append((turns[human]["value"], turns[human + 1]["value"]))
        else:
            skipped = skipped.add(f"{path}: entry {number} has no human turn followed by a reply")
    if not pairs:
        problem = f"{path} has no conversation with a human turn followed by a reply; {SHAREGPT_SHAPE}"
        raise skipped.none_left(path, problem)
    return pairs, skipped


def _read_jsonl(path: Path) -> tuple[list[Pair], Skipped]:
    shape = 'each line is {"prompt": TEXT or [token ids], "output_len": N} with N a positive whole number'
    pairs: list[Pair] = []
    skipped = Skipped()
    for number, line in enumerate(read_text(path).splitlines(), start=1):
        if not line.strip():
            continue
        try:
            pairs.append(_jsonl_pair(line, f"{path}, line {number}", shape))
        except BenchError as error:
            skipped = skipped.add(str(error))
    if not pairs:
        raise skipped.none_left(path, f"{path} has no requests; {shape}")
    return pairs, skipped


def _jsonl_pair(line: str, where: str, shape: str) -> Pair:
    item = json_line(line, where, shape)
    prompt = item.get("prompt") if isinstance(item, dict) else None
    output_len = item.get("output_len") if isinstance(item, dict) else None
    if not isinstance(output_len, int) or isinstance(output_len, bool) or output_len <= 0:
        raise BenchError(f"{where}: {shape}")
    if isinstance(prompt, str) and prompt:
        return prompt, output_len
    if isinstance(prompt, list) and prompt and all(_is_token_id(t) for t in prompt):
        return [int(t) for t in prompt], output_len
    raise BenchError(f"{where}: {shape}")


def _is_token_id(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0

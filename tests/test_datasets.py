"""Datasets become requests with exact token counts, vLLM's ShareGPT filter, and prefixes the cache cannot reuse."""

from __future__ import annotations

import asyncio
import json
import random
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from plugin.errors import BenchError
from plugin.load.datasets import (
    Dataset,
    Tokenizer,
    length_range,
    load_dataset,
    local_tokenizer,
    read_pairs,
    server_tokenizer,
)
from plugin.option_values import DatasetSpec
from plugin.options import SHIPPED_SHAREGPT
from tests.conftest import ROOT

VOCAB = (2, 512)


class ByteTokenizer:
    """One token per UTF-8 byte, so a test controls token counts exactly through text lengths."""

    def __init__(self) -> None:
        self.calls = 0

    def encode(self, text: str) -> list[int]:
        self.calls += 1
        return [2 + byte % 500 for byte in text.encode()]


def load(spec: DatasetSpec, count: int, seed: int = 0, **overrides: Any) -> Dataset:
    arguments: dict[str, Any] = {
        "tokenizer": ByteTokenizer(),
        "input_len": 16,
        "output_len": 8,
        "range_ratio": 0.0,
        "vocab": VOCAB,
        "max_model_len": 4096,
    }
    arguments.update(overrides)
    return load_dataset(spec, count, random.Random(seed), **arguments)


def conversation(*turns: tuple[str, str]) -> dict[str, Any]:
    return {"conversations": [{"from": role, "value": value} for role, value in turns]}


def write_sharegpt(path: Path, pairs: list[tuple[int, int]]) -> Path:
    """Conversations whose prompt and reply have the given byte (= token) lengths; prompts distinct by content."""
    entries = [
        conversation(("human", chr(ord("a") + i % 26) * prompt_len), ("gpt", "r" * reply_len))
        for i, (prompt_len, reply_len) in enumerate(pairs)
    ]
    path.write_text(json.dumps(entries))
    return path


# --- random -----------------------------------------------------------------------------------------------------


def test_random_lengths_cover_the_range_ratio_like_vllm() -> None:
    dataset = load(DatasetSpec("random"), 2000, input_len=10, output_len=4, range_ratio=0.5)
    assert {len(r.prompt) for r in dataset.requests} == set(range(5, 16))  # floor(5.0) .. ceil(15.0)
    assert {r.output_len for r in dataset.requests} == set(range(2, 7))
    assert all(VOCAB[0] <= token < VOCAB[1] for r in dataset.requests for token in r.prompt)
    assert len({r.prompt for r in dataset.requests}) == 2000
    assert (dataset.source, dataset.skipped_by_length, dataset.too_long_for_model) == ("random", 0, 0)


def test_random_without_range_ratio_is_exact_and_needs_no_tokenizer() -> None:
    dataset = load(DatasetSpec("random"), 30, tokenizer=None, input_len=12, output_len=3)
    assert {(len(r.prompt), r.output_len) for r in dataset.requests} == {(12, 3)}


def test_length_range_bounds_and_output_of_at_least_one() -> None:
    assert length_range(100, 0.25) == (75, 125)
    assert length_range(7, 0.1) == (6, 8)  # floor(6.3), ceil(7.7)
    assert length_range(7, 0.05) == (6, 8)  # floor(6.65), ceil(7.35): not rounded
    assert length_range(1, 0.9) == (1, 2)
    with pytest.raises(ValueError, match="below 1"):
        length_range(10, 1.0)


def test_random_longer_than_the_model_is_an_error() -> None:
    with pytest.raises(BenchError, match=r"reach 15 \+ 6 tokens, over the model's max_model_len 20"):
        load(DatasetSpec("random"), 4, input_len=10, output_len=4, range_ratio=0.5, max_model_len=20)
    assert len(load(DatasetSpec("random"), 4, input_len=10, output_len=4, range_ratio=0.5, max_model_len=21).requests)


# --- ShareGPT ---------------------------------------------------------------------------------------------------


def test_sharegpt_applies_vllms_length_filter_and_counts_what_it_skipped(tmp_path: Path) -> None:
    path = write_sharegpt(
        tmp_path / "chats.json",
        [
            (3, 10),  # prompt under 4 tokens
            (10, 3),  # reply under 4 tokens
            (1025, 4),  # prompt over 1024
            (1000, 1049),  # prompt + reply 2049, over 2048
            (4, 4),  # kept: the lower bounds
            (1024, 1024),  # kept: the upper bounds (prompt 1024, total 2048)
        ],
    )
    dataset = load(DatasetSpec("sharegpt", path), 6, unique_prefix=0)
    assert dataset.source == "sharegpt-chats"
    assert (dataset.skipped_by_length, dataset.too_long_for_model) == (4, 0)
    assert sorted((len(r.prompt), r.output_len) for r in dataset.requests) == [(4, 4)] * 3 + [(1024, 1024)] * 3


def test_sharegpt_takes_the_first_human_turn_and_the_reply_after_it(tmp_path: Path) -> None:
    path = tmp_path / "chats.json"
    entries = [
        conversation(
            ("gpt", "Welcome, ask me anything."), ("human", "What is tea?"), ("gpt", "A drink."), ("human", "x")
        ),
        conversation(("human", "only a question, never answered")),
        conversation(("human", "Hello?"), ("human", "Anyone?")),
    ]
    path.write_text(json.dumps(entries))
    tokenizer = ByteTokenizer()
    dataset = load(DatasetSpec("sharegpt", path), 3, tokenizer=tokenizer, unique_prefix=0)
    expected = (tuple(tokenizer.encode("What is tea?")), len(tokenizer.encode("A drink.")))
    assert [(r.prompt, r.output_len) for r in dataset.requests] == [expected] * 3  # the one pair, cycled
    assert dataset.skipped_by_length == 0


def test_pairs_longer_than_the_model_are_dropped_and_counted(tmp_path: Path) -> None:
    path = write_sharegpt(tmp_path / "chats.json", [(20, 10), (40, 10), (60, 10), (2, 10)])
    dataset = load(DatasetSpec("sharegpt", path), 10, max_model_len=54)  # 4 prefix + 40 + 10 fits exactly
    assert (dataset.skipped_by_length, dataset.too_long_for_model) == (1, 1)
    assert sorted({len(r.prompt) for r in dataset.requests}) == [24, 44]
    assert max(len(r.prompt) + r.output_len for r in dataset.requests) == 54


def test_no_request_left_is_an_error_saying_what_to_do(tmp_path: Path) -> None:
    path = write_sharegpt(tmp_path / "chats.json", [(20, 10), (40, 10), (2, 10)])
    with pytest.raises(BenchError) as raised:
        load(DatasetSpec("sharegpt", path), 5, max_model_len=30)
    message = str(raised.value)
    assert str(path) in message
    assert "1 left out by vLLM's ShareGPT filter" in message
    assert "2 longer than the model's max_model_len 30" in message
    assert "--max-model-len" in message


def test_few_pairs_are_cycled_to_the_count_with_every_pair_used(tmp_path: Path) -> None:
    path = write_sharegpt(tmp_path / "chats.json", [(5, 5), (6, 6), (7, 7)])
    dataset = load(DatasetSpec("sharegpt", path), 10, unique_prefix=0)
    lengths = [len(r.prompt) for r in dataset.requests]
    assert len(lengths) == 10
    assert sorted(lengths[:3]) == [5, 6, 7]  # a shuffled pass through all pairs before any repeats
    assert lengths[3:6] == lengths[:3]


def test_pairs_are_sampled_in_an_order_drawn_from_the_rng(tmp_path: Path) -> None:
    path = write_sharegpt(tmp_path / "chats.json", [(n, 5) for n in range(5, 25)])
    orders = {
        tuple(len(r.prompt) for r in load(DatasetSpec("sharegpt", path), 5, seed, unique_prefix=0).requests)
        for seed in range(4)
    }
    assert len(orders) == 4


def test_reading_stops_once_enough_pairs_are_found(tmp_path: Path) -> None:
    path = write_sharegpt(tmp_path / "chats.json", [(10, 10)] * 50)
    tokenizer = ByteTokenizer()
    dataset = load(DatasetSpec("sharegpt", path), 5, tokenizer=tokenizer)
    assert len(dataset.requests) == 5
    assert tokenizer.calls == 10  # prompt and reply of 5 pairs, not the whole file


# --- JSONL ------------------------------------------------------------------------------------------------------


def test_jsonl_tokenizes_text_and_keeps_token_ids(tmp_path: Path) -> None:
    path = tmp_path / "requests.jsonl"
    lines = [{"prompt": "Tell me a story.", "output_len": 7}, {"prompt": [9, 8, 7, 6, 5], "output_len": 3}]
    path.write_text("\n".join(json.dumps(line) for line in lines) + "\n\n")
    tokenizer = ByteTokenizer()
    dataset = load(DatasetSpec("jsonl", path), 2, tokenizer=tokenizer)
    assert dataset.source == "jsonl-requests"
    got = sorted((r.prompt[4:], r.output_len) for r in dataset.requests)
    assert got == sorted([(tuple(tokenizer.encode("Tell me a story.")), 7), ((9, 8, 7, 6, 5), 3)])


def test_jsonl_of_token_ids_needs_no_tokenizer_but_text_does(tmp_path: Path) -> None:
    ids = tmp_path / "ids.jsonl"
    ids.write_text('{"prompt": [3, 4, 5], "output_len": 2}\n')
    assert load(DatasetSpec("jsonl", ids), 1, tokenizer=None).requests[0].prompt[4:] == (3, 4, 5)
    text = tmp_path / "text.jsonl"
    text.write_text('{"prompt": "hello", "output_len": 2}\n')
    with pytest.raises(BenchError, match="needs the model's tokenizer"):
        load(DatasetSpec("jsonl", text), 1, tokenizer=None)


@pytest.mark.parametrize(
    "bad_line",
    [
        "{not json",
        '{"prompt": "hi"}',
        '{"prompt": "hi", "output_len": 0}',
        '{"prompt": "hi", "output_len": "8"}',
        '{"prompt": "hi", "output_len": true}',
        '{"prompt": [], "output_len": 8}',
        '{"prompt": [1, "2"], "output_len": 8}',
        '{"prompt": "", "output_len": 8}',
        '["hi", 8]',
    ],
)
def test_a_malformed_jsonl_line_is_skipped_and_counted_and_alone_is_an_error_naming_it(
    tmp_path: Path, bad_line: str
) -> None:
    path = tmp_path / "requests.jsonl"
    path.write_text('{"prompt": "fine", "output_len": 4}\n\n' + bad_line + "\n")
    dataset = load(DatasetSpec("jsonl", path), 2)
    assert dataset.unreadable == 1 and {len(request.prompt) for request in dataset.requests} == {4 + 4}
    assert read_pairs("jsonl", path)[1].note(path) == (
        f"{path}: 1 unreadable entries skipped; first: {read_pairs('jsonl', path)[1].first}"
    )
    assert str(read_pairs("jsonl", path)[1].first).startswith(f"{path}, line 3: ")
    path.write_text(bad_line + "\n")
    with pytest.raises(BenchError, match=rf"none of its entries can be used \(1 skipped\); first: {path}, line 1: "):
        load(DatasetSpec("jsonl", path), 1)


def test_sharegpt_skips_and_counts_malformed_entries_and_those_with_only_a_human_turn(tmp_path: Path) -> None:
    """vLLM's loader skips such entries; here they are counted too (an only-human one was dropped unsaid)."""
    path = tmp_path / "chats.json"
    good = conversation(("human", "hello there"), ("gpt", "general kenobi"))
    only_human = conversation(("human", "anyone?"))
    path.write_text(json.dumps([{"turns": []}, good, only_human]))
    dataset = load(DatasetSpec("sharegpt", path), 1)
    assert dataset.unreadable == 2 and len(dataset.requests) == 1
    skipped = read_pairs("sharegpt", path)[1]
    assert skipped.count == 2 and "entry 0 has no 'conversations' list" in str(skipped.first)


# --- files ------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["sharegpt", "jsonl"])
def test_a_missing_file_is_named(tmp_path: Path, kind: str) -> None:
    path = tmp_path / "gone.json"
    with pytest.raises(BenchError, match=rf"dataset file {path} does not exist"):
        load(DatasetSpec(kind, path), 1)


@pytest.mark.parametrize(
    ("content", "problem"),
    [
        ("[{]", r"is not valid JSON \(line 1, column 3"),
        ('{"conversations": []}', "holds a JSON dict, not a list"),
        (
            '[{"conversations": []}, {"turns": []}]',
            r"none of its entries can be used \(2 skipped\); first: .*entry 0 has",
        ),
        ('[{"conversations": [{"from": "human", "value": 3}]}]', "entry 0 has no 'conversations' list"),
        ('[{"conversations": [{"from": "human", "value": "hi"}]}]', "entry 0 has no human turn followed by a reply"),
        (b"\xff\xfe[]", "is not UTF-8 text"),
    ],
)
def test_a_malformed_sharegpt_file_says_what_is_wrong(tmp_path: Path, content: str | bytes, problem: str) -> None:
    path = tmp_path / "chats.json"
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        path.write_text(content)
    with pytest.raises(BenchError, match=problem) as raised:
        load(DatasetSpec("sharegpt", path), 1)
    assert str(path) in str(raised.value)


# --- prefix cache and seeds ---------------------------------------------------------------------------------------


def test_every_request_gets_a_prefix_no_other_request_shares(tmp_path: Path) -> None:
    path = write_sharegpt(tmp_path / "chats.json", [(8, 5), (9, 5)])
    tokenizer = ByteTokenizer()
    # 5 token ids give 625 prefixes: 300 random draws would repeat some, so distinctness is enforced, not luck
    dataset = load(DatasetSpec("sharegpt", path), 300, tokenizer=tokenizer, vocab=(2, 7), unique_prefix=4)
    prefixes = [r.prompt[:4] for r in dataset.requests]
    assert len(set(prefixes)) == 300
    assert all(2 <= token < 7 for prefix in prefixes for token in prefix)
    bodies = {r.prompt[4:] for r in dataset.requests}
    assert bodies == {tuple(tokenizer.encode("a" * 8)), tuple(tokenizer.encode("b" * 9))}


def test_too_few_token_ids_for_unique_prefixes_is_an_error(tmp_path: Path) -> None:
    path = write_sharegpt(tmp_path / "chats.json", [(8, 5)])
    with pytest.raises(BenchError, match="need more distinct 2-token prefixes than 3 token ids allow"):
        load(DatasetSpec("sharegpt", path), 10, vocab=(2, 5), unique_prefix=2)


@pytest.mark.parametrize("kind", ["random", "sharegpt"])
def test_the_same_seed_gives_the_same_dataset(tmp_path: Path, kind: str) -> None:
    path = write_sharegpt(tmp_path / "chats.json", [(n, n) for n in range(5, 25)])
    spec = DatasetSpec(kind, None if kind == "random" else path)
    assert load(spec, 12, seed=7, range_ratio=0.5) == load(spec, 12, seed=7, range_ratio=0.5)
    assert load(spec, 12, seed=7, range_ratio=0.5) != load(spec, 12, seed=8, range_ratio=0.5)


# --- the tiny model's tokenizer and the shipped file --------------------------------------------------------------


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The suite's tiny model, built as ``plugin.serving.tiny_model`` builds it (a few seconds, no network)."""
    done = subprocess.run(
        [sys.executable, "-m", "plugin.serving.tiny_model", str(tmp_path_factory.mktemp("tiny"))],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
        env={"HF_HUB_OFFLINE": "1", "PATH": "/usr/bin:/bin"},
    )
    return Path(done.stdout.strip().splitlines()[-1])


def shipped_pairs() -> list[tuple[str, str]]:
    entries = json.loads(SHIPPED_SHAREGPT.read_text(encoding="utf-8"))
    return [(entry["conversations"][0]["value"], entry["conversations"][1]["value"]) for entry in entries]


@pytest.mark.slow
def test_shipped_file_counts_equal_the_tiny_tokenizers(tiny_model: Path) -> None:
    from tokenizers import Tokenizer as RawTokenizer

    raw = RawTokenizer.from_file(str(tiny_model / "tokenizer.json"))  # the tokenizer itself, not through transformers

    def ids(text: str) -> tuple[int, ...]:
        return tuple(raw.encode(text, add_special_tokens=False).ids)

    expected = {ids(prompt): len(ids(reply)) for prompt, reply in shipped_pairs()}
    spec = DatasetSpec("sharegpt", SHIPPED_SHAREGPT)
    dataset = load(spec, 200, tokenizer=local_tokenizer(str(tiny_model)), vocab=(2, 512), max_model_len=1024)
    assert len(dataset.requests) == 200
    assert all(expected[r.prompt[4:]] == r.output_len for r in dataset.requests)
    used = {r.prompt[4:] for r in dataset.requests}
    assert len(used) == len(expected) - 5  # every pair but the five that vLLM's filter drops
    assert (dataset.skipped_by_length, dataset.too_long_for_model) == (5, 0)
    assert max(len(r.prompt) + r.output_len for r in dataset.requests) <= 1024


@pytest.mark.slow
def test_local_tokenizer_needs_the_folders_tokenizer(tmp_path: Path) -> None:
    with pytest.raises(BenchError, match=rf"cannot load the tokenizer of {tmp_path} \("):
        local_tokenizer(str(tmp_path))
    with pytest.raises(BenchError, match=rf"no model folder at {tmp_path / 'absent'}"):
        local_tokenizer(str(tmp_path / "absent"))


# --- vLLM's /tokenize -------------------------------------------------------------------------------------------


@dataclass
class TokenizeServer:
    """A tiny stand-in for vLLM's ``/tokenize`` at ``/ok``; ``/no-tokens`` answers without ids; others are 404."""

    base: str
    bodies: list[dict[str, Any]] = field(default_factory=list)


@pytest.fixture
def tokenize_server() -> Iterator[TokenizeServer]:
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    server = TokenizeServer(base="")

    async def tokenize(request: web.Request) -> web.Response:
        body = await request.json()
        server.bodies.append(body)
        return web.json_response({"count": 1, "tokens": ByteTokenizer().encode(body["prompt"]), "max_model_len": 64})

    async def no_tokens(request: web.Request) -> web.Response:
        return web.json_response({"count": 3})

    app = web.Application()
    app.router.add_post("/ok/tokenize", tokenize)
    app.router.add_post("/no-tokens/tokenize", no_tokens)
    runner = web.AppRunner(app)
    asyncio.run_coroutine_threadsafe(runner.setup(), loop).result()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    asyncio.run_coroutine_threadsafe(site.start(), loop).result()
    host, port = runner.addresses[0][:2]
    server.base = f"http://{host}:{port}"
    try:
        yield server
    finally:
        asyncio.run_coroutine_threadsafe(runner.cleanup(), loop).result()
        loop.call_soon_threadsafe(loop.stop)
        thread.join()
        loop.close()


def test_server_tokenizer_gives_the_same_dataset_as_the_tokenizer_it_fronts(
    tmp_path: Path, tokenize_server: TokenizeServer
) -> None:
    path = write_sharegpt(tmp_path / "chats.json", [(n, n + 3) for n in range(5, 15)])
    tokenizer: Tokenizer = server_tokenizer(tokenize_server.base + "/ok", "tiny")
    through_server = load(DatasetSpec("sharegpt", path), 25, seed=3, tokenizer=tokenizer)
    assert through_server == load(DatasetSpec("sharegpt", path), 25, seed=3, tokenizer=ByteTokenizer())
    assert tokenize_server.bodies[0] == {
        "model": "tiny",
        "prompt": tokenize_server.bodies[0]["prompt"],
        "add_special_tokens": False,
    }
    load(DatasetSpec("sharegpt", path), 25, seed=4, tokenizer=tokenizer)
    assert len(tokenize_server.bodies) == 20  # each text asked once: later rounds cost no requests


@pytest.mark.parametrize(("route", "problem"), [("/absent", "answered HTTP 404"), ("/no-tokens", "without a 'tokens'")])
def test_server_without_tokenize_is_an_error_naming_the_url(
    tokenize_server: TokenizeServer, route: str, problem: str
) -> None:
    url = tokenize_server.base + route
    with pytest.raises(BenchError, match=problem) as raised:
        server_tokenizer(url, "tiny").encode("hello")
    assert f"{url}/tokenize" in str(raised.value)


def test_unreachable_server_is_an_error_naming_the_url() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    url = f"http://127.0.0.1:{port}"
    with pytest.raises(BenchError, match=rf"cannot reach {url}/tokenize"):
        server_tokenizer(url, "tiny").encode("hello")

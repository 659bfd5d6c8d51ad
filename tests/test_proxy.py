"""The proxy against real upstream processes (``tests/stub_upstream.py``, a fast stand-in for vLLM): the KV
connector protocols, every fault the issue names, and 64 concurrent streams with clients leaving at random."""

from __future__ import annotations

import asyncio
import json
import random
import re
import socket
import sys
import time
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from plugin.load.client import run_load
from plugin.serving.process import ManagedProcess, start, wait_ready
from plugin.serving.servers import free_port
from proxy.connectors import RELEASE_MODEL, handed_off_blocks

ROOT = Path(__file__).resolve().parents[1]
Launch = Callable[..., str]
Headers = Mapping[str, str]


@pytest.fixture
def launch(tmp_path: Path) -> Iterator[Launch]:
    """Starts stubs and proxies as real processes; returns each one's URL once its port takes connections."""
    processes: list[ManagedProcess] = []

    def run(name: str, args: list[str]) -> str:
        port = free_port()
        process = start(name, [sys.executable, *args, "--port", str(port)], _env(), tmp_path / f"{name}.log", tmp_path)
        processes.append(process)
        # Not /health: a proxy in front of a broken instance answers 503 there, by design.
        wait_ready(process, f"127.0.0.1:{port}", 30, f"see {tmp_path}", poll_s=0.05, probe=_port_open)
        return f"http://127.0.0.1:{port}"

    yield run
    for process in processes:
        process.stop(grace_s=5)


def _port_open(address: str) -> bool:
    host, port = address.split(":")
    try:
        socket.create_connection((host, int(port)), timeout=1).close()
        return True
    except OSError:
        return False


def _env() -> dict[str, str]:
    import os

    return {**os.environ, "PYTHONPATH": str(ROOT)}


def stub(launch: Launch, name: str, *options: str) -> str:
    return launch(name, [str(ROOT / "tests" / "stub_upstream.py"), *options])


def proxy(launch: Launch, prefill: list[str], decode: list[str], *options: str) -> str:
    args = ["-m", "proxy", *[f"--prefill={url}" for url in prefill], *[f"--decode={url}" for url in decode]]
    return launch(f"proxy-{len(prefill)}p{len(decode)}d", [*args, *options])


def stats(url: str) -> dict[str, Any]:
    import urllib.request

    with urllib.request.urlopen(f"{url}/stats", timeout=5) as response:
        return dict(json.load(response))


def post(url: str, body: Any, path: str = "/v1/completions", raw: bytes | None = None) -> tuple[int, Headers, bytes]:
    async def go() -> tuple[int, Headers, bytes]:
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as session:
            data = raw if raw is not None else json.dumps(body).encode()
            async with session.post(f"{url}{path}", data=data) as response:
                return response.status, response.headers, await response.read()  # case-insensitive

    return asyncio.run(go())


def sse_texts(data: bytes) -> list[str]:
    """The ``text`` of every token chunk, in order; raises on an error event."""
    texts = []
    for line in data.decode().splitlines():
        if not line.startswith("data: ") or line == "data: [DONE]":
            continue
        chunk = json.loads(line[6:])
        if "error" in chunk:
            raise AssertionError(chunk["error"]["message"])
        texts += [choice["text"] for choice in chunk["choices"]]
    return texts


def streamed(prompt: str = "hello", max_tokens: int = 5) -> dict[str, Any]:
    return {"model": "m", "prompt": prompt, "max_tokens": max_tokens, "stream": True,
            "stream_options": {"include_usage": True}}  # fmt: skip


@pytest.fixture
def pair(launch: Launch) -> tuple[str, str, str]:
    """A healthy prefill stub, decode stub and the proxy in front of them."""
    prefill, decode = stub(launch, "prefill"), stub(launch, "decode")
    return prefill, decode, proxy(launch, [prefill], [decode])


def test_stream_is_relayed_after_a_one_token_prefill(pair: tuple[str, str, str]) -> None:
    prefill, decode, url = pair
    status, headers, data = post(url, streamed(max_tokens=5))
    assert status == 200
    assert sse_texts(data) == [f" t{i}" for i in range(5)]
    assert data.endswith(b"data: [DONE]\n\n")
    assert float(headers["x-pd-prefill-ms"]) > 0 and float(headers["x-pd-kv-handoff-ms"]) > 0
    assert (headers["x-pd-prefill-instance"], headers["x-pd-decode-instance"]) == (prefill, decode)
    assert "x-pd-kv-blocks" not in headers  # the example connector names no blocks: none invented
    seen_prefill, seen_decode = stats(prefill), stats(decode)
    assert seen_prefill["bodies"] == [{"model": "m", "prompt": "hello", "max_tokens": 1, "stream": False}]
    assert seen_decode["bodies"] == [streamed(max_tokens=5)]
    assert seen_prefill["request_ids"] == seen_decode["request_ids"] == [headers["x-request-id"]]


def test_chat_and_unstreamed_requests(pair: tuple[str, str, str]) -> None:
    prefill, decode, url = pair
    chat = {"model": "m", "messages": [{"role": "user", "content": "hi"}], "max_completion_tokens": 3}
    status, _, data = post(url, chat, path="/v1/chat/completions")
    assert status == 200
    assert json.loads(data)["usage"]["completion_tokens"] == 3
    assert stats(prefill)["bodies"][-1]["max_completion_tokens"] == 1
    assert stats(decode)["bodies"][-1] == chat


@pytest.mark.parametrize(
    ("raw", "path", "message"),
    [
        (b"{not json", "/v1/completions", "not valid JSON"),
        (b"[1, 2]", "/v1/completions", "must be a JSON object"),
        (b'{"model": "m"}', "/v1/completions", "has no 'prompt'"),
        (b'{"model": "m", "prompt": "x"}', "/v1/chat/completions", "has no 'messages'"),
    ],
)
def test_malformed_requests_get_400(pair: tuple[str, str, str], raw: bytes, path: str, message: str) -> None:
    prefill, _, url = pair
    status, _, data = post(url, None, path=path, raw=raw)
    assert status == 400
    assert message in json.loads(data)["error"]["message"]
    assert stats(prefill)["started"] == 0


@pytest.mark.parametrize("role", ["prefill", "decode"])
@pytest.mark.parametrize(
    ("fault", "message"),
    [
        ("unreachable", "is unreachable"),
        ("status500", "answered HTTP 500"),
        ("hang", "did not answer within 1 s"),
    ],
)
def test_failing_instance_gets_502_naming_it(launch: Launch, role: str, fault: str, message: str) -> None:
    broken = f"http://127.0.0.1:{free_port()}" if fault == "unreachable" else stub(launch, "broken", "--fault", fault)
    healthy = stub(launch, "healthy")
    prefill, decode = (broken, healthy) if role == "prefill" else (healthy, broken)
    url = proxy(launch, [prefill], [decode], "--timeout-s", "1")
    status, _, data = post(url, streamed())
    assert status == 502
    error = json.loads(data)["error"]["message"]
    assert f"{role} instance {broken}" in error and message in error


def test_hung_kv_transfer_ends_the_request_with_a_502_naming_decode_within_the_timeout(launch: Launch) -> None:
    """A decode instance waiting for KV that never comes (P2P NCCL on vLLM 0.14 and later) must not hang a run:
    the proxy's --timeout-s counts from the request, slow prefill included, so its 502 reaches the client before
    the client's own timeout would, and the client records that error."""
    prefill_s, proxy_timeout_s, client_timeout_s = 1.5, 3.0, 4.5
    prefill = stub(launch, "prefill", "--delay-ms", f"{prefill_s * 1000:g}")
    decode = stub(launch, "decode", "--fault", "hang")
    url = proxy(launch, [prefill], [decode], "--timeout-s", f"{proxy_timeout_s:g}")
    started_s = time.monotonic()
    (record,) = asyncio.run(run_load(url, "m", [[1, 2, 3]], 5, concurrency=1, timeout_s=client_timeout_s))
    elapsed_s = time.monotonic() - started_s
    # Not prefill + timeout (4.5 s): the deadline covers the prefill.
    assert proxy_timeout_s <= elapsed_s < client_timeout_s
    assert record.error is not None and record.error.startswith("HTTP 502")
    assert f"decode instance {decode} did not answer within 3 s of the request" in record.error
    answered = re.search(r"prefill answered in ([0-9.]+) s: is the KV transfer stuck\?", record.error)
    assert answered is not None and prefill_s <= float(answered[1]) < proxy_timeout_s
    assert record.first_token_s is None and record.token_times_s == ()
    assert stats(prefill)["finished"] == 1
    deadline_s = time.monotonic() + 10
    while stats(decode)["disconnected"] == 0 and time.monotonic() < deadline_s:
        time.sleep(0.05)
    assert stats(decode)["disconnected"] == 1, "the proxy left the hung decode request open"


def test_prefill_that_answers_garbage_gets_502(launch: Launch) -> None:
    url = proxy(launch, [stub(launch, "prefill", "--fault", "not-json")], [stub(launch, "decode")])
    status, _, data = post(url, streamed())
    assert status == 502
    assert "non-JSON" in json.loads(data)["error"]["message"]


def test_decode_that_dies_mid_stream_ends_the_stream_with_an_error_event(launch: Launch) -> None:
    url = proxy(launch, [stub(launch, "prefill")], [stub(launch, "decode", "--fault", "cut")])
    status, _, data = post(url, streamed(max_tokens=10))
    assert status == 200
    with pytest.raises(AssertionError, match="failed mid-stream"):
        sse_texts(data)


def test_health_names_the_instance_that_is_down(launch: Launch) -> None:
    down = f"http://127.0.0.1:{free_port()}"
    decode = stub(launch, "decode")
    healthy = proxy(launch, [stub(launch, "prefill")], [decode])
    assert post_get(healthy, "/health")[0] == 200
    broken = proxy(launch, [down], [decode])
    status, data = post_get(broken, "/health")
    assert status == 503
    assert f"prefill instance {down}" in json.loads(data)["error"]["message"]
    assert json.loads(post_get(broken, "/v1/models")[1])["data"][0]["id"] == "stub-model"


def post_get(url: str, path: str) -> tuple[int, bytes]:
    import urllib.error
    import urllib.request

    try:
        with urllib.request.urlopen(f"{url}{path}", timeout=10) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as error:
        return error.code, error.read()


def test_nixl_passes_the_prefill_kv_transfer_params_to_decode(launch: Launch) -> None:
    prefill, decode = stub(launch, "prefill", "--kv-transfer-params"), stub(launch, "decode")
    url = proxy(launch, [prefill], [decode], "--kv-connector", "nixl")
    status, headers, data = post(url, streamed())
    assert status == 200 and len(sse_texts(data)) == 5
    assert headers["x-pd-kv-blocks"] == "3"  # the blocks prefill's remote_block_ids name
    assert stats(prefill)["bodies"][0]["kv_transfer_params"]["do_remote_decode"] is True
    assert stats(decode)["bodies"][0]["kv_transfer_params"] == {
        "remote_engine_id": "stub-engine",
        "remote_block_ids": [1, 2, 3],
    }


@pytest.mark.parametrize(
    ("params", "blocks"),
    [
        ({"remote_block_ids": [4, 5, 6]}, 3),
        ({"remote_block_ids": [[4, 5, 6], [7]]}, 4),  # one list per KV cache group (hybrid allocator)
        ({"remote_block_ids": None}, None),
        (None, None),
    ],
)
def test_handed_off_blocks_counts_what_prefill_names(params: dict[str, Any] | None, blocks: int | None) -> None:
    assert handed_off_blocks({} if params is None else {"kv_transfer_params": params}) == blocks


def test_nixl_blocks_of_a_request_no_decode_got_are_released_through_another_decode(launch: Launch) -> None:
    """A decode instance that is down never got the request, so vLLM cannot free the prefill's KV blocks through it:
    the proxy hands them to the other decode instance in a request vLLM rejects (an unknown model), which frees them
    (vLLM 0.32's ``notify_kv_transfer_request_rejected``) instead of when their lease runs out."""
    prefill = stub(launch, "prefill", "--kv-transfer-params")
    down, live = f"http://127.0.0.1:{free_port()}", stub(launch, "decode", "--served-model-name", "m")
    url = proxy(launch, [prefill], [down, live], "--kv-connector", "nixl")
    status, _, data = post(url, streamed())  # round robin: the first request goes to the decode that is down
    assert status == 502
    message = json.loads(data)["error"]["message"]
    assert f"decode instance {down} is unreachable" in message and f"released through decode instance {live}" in message
    (release,) = stats(live)["bodies"]
    assert release["model"] == RELEASE_MODEL and release["stream"] is False
    assert release["kv_transfer_params"] == {"remote_engine_id": "stub-engine", "remote_block_ids": [1, 2, 3]}
    status, _, data = post(url, streamed())  # the next goes to the live one, which serves it
    assert status == 200 and len(sse_texts(data)) == 5


def test_nixl_without_kv_transfer_params_from_prefill_gets_502(launch: Launch) -> None:
    url = proxy(launch, [stub(launch, "prefill")], [stub(launch, "decode")], "--kv-connector", "nixl")
    status, _, data = post(url, streamed())
    assert status == 502
    assert "no kv_transfer_params" in json.loads(data)["error"]["message"]


def test_p2pnccl_request_id_names_both_kv_addresses(launch: Launch) -> None:
    prefill, decode = stub(launch, "prefill"), stub(launch, "decode")
    url = proxy(launch, [f"{prefill}=10.0.0.1:21001"], [f"{decode}=10.0.0.2:22001"], "--kv-connector", "p2pnccl")
    status, _, _ = post(url, streamed())
    assert status == 200
    request_id = stats(prefill)["request_ids"][0]
    assert request_id.startswith("___prefill_addr_10.0.0.1:21001___decode_addr_10.0.0.2:22001_")
    assert stats(decode)["request_ids"] == [request_id]


def test_p2pnccl_without_kv_addresses_is_refused_at_start() -> None:
    import subprocess

    done = subprocess.run(
        [sys.executable, "-m", "proxy", "--prefill", "http://a:1", "--decode", "http://b:2", "--kv-connector",
         "p2pnccl"],
        capture_output=True, text=True, cwd=ROOT,
    )  # fmt: skip
    assert done.returncode == 2
    assert "needs the instance's KV ZMQ address" in done.stderr


def test_several_instances_are_served_round_robin(launch: Launch) -> None:
    prefills = [stub(launch, f"prefill{i}") for i in range(2)]
    decodes = [stub(launch, f"decode{i}") for i in range(2)]
    url = proxy(launch, prefills, decodes)
    for _ in range(4):
        assert post(url, streamed())[0] == 200
    assert [stats(u)["started"] for u in prefills + decodes] == [2, 2, 2, 2]


def test_64_streams_in_order_and_clients_that_leave_stop_their_upstream_request(launch: Launch) -> None:
    prefill, decode = stub(launch, "prefill"), stub(launch, "decode", "--token-delay-ms", "2")
    url = proxy(launch, [prefill], [decode])
    rng = random.Random(7)
    tokens = 100
    leave_after = [rng.randrange(1, tokens // 2) if rng.random() < 0.5 else None for _ in range(64)]

    async def one(session: aiohttp.ClientSession, index: int, leave: int | None) -> list[str]:
        texts: list[str] = []
        async with session.post(f"{url}/v1/completions", json=streamed(f"p{index}", tokens)) as response:
            assert response.status == 200
            async for line in response.content:
                if line.startswith(b"data: {"):
                    chunk = json.loads(line[6:])
                    texts += [choice["text"] for choice in chunk["choices"]]
                if leave is not None and len(texts) >= leave:
                    response.close()  # the client goes away mid-stream
                    break
        return texts

    async def everyone() -> list[list[str]]:
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as session:
            return await asyncio.gather(*(one(session, i, leave) for i, leave in enumerate(leave_after)))

    results = asyncio.run(everyone())
    for texts, leave in zip(results, leave_after, strict=True):
        expected = [f" t{i}" for i in range(tokens)]
        assert texts == (expected if leave is None else expected[: len(texts)])
    left = sum(leave is not None for leave in leave_after)
    assert left > 0
    deadline = time.monotonic() + 10
    while stats(decode)["open"] and time.monotonic() < deadline:
        time.sleep(0.1)
    seen = stats(decode)
    assert seen["open"] == 0, "an upstream stream stayed open after its client left"
    assert seen["started"] == 64
    assert (seen["finished"], seen["disconnected"]) == (64 - left, left)

"""The measuring client against a real local aiohttp server that streams ``/v1/completions`` the way vLLM does.

A real socket, not a mocked session: the timestamps, the SSE line splitting and the failure paths are what the
benchmarks rely on, and only a server on the other end exercises them.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
from aiohttp import ClientSession, web

from plugin.analysis.stats import LAG_LIMIT_MS, summarize, tbt_gaps_s
from plugin.clock import now_s
from plugin.load.client import (
    CANCELLED,
    STOPPED,
    Cancellation,
    completion_body,
    run_load,
    run_schedule,
    stream_completion,
    token_times,
)
from plugin.records.requests import RequestRecord
from plugin.serving.servers import free_port
from tests.conftest import StartStub

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
GAP_S = 0.01


def sse(payload: dict[str, Any] | str) -> bytes:
    data = payload if isinstance(payload, str) else json.dumps(payload)
    return f"data: {data}\n\n".encode()


def token_chunk(text: str, token_ids: list[int] | None) -> dict[str, Any]:
    choice: dict[str, Any] = {"index": 0, "text": text, "logprobs": None, "finish_reason": None, "stop_reason": None}
    if token_ids is not None:
        choice["token_ids"] = token_ids
    return {"id": "cmpl-1", "object": "text_completion", "created": 1, "model": "m", "choices": [choice]}


def usage_chunk(prompt_tokens: int, completion_tokens: int) -> dict[str, Any]:
    total = prompt_tokens + completion_tokens
    usage = {"prompt_tokens": prompt_tokens, "total_tokens": total, "completion_tokens": completion_tokens}
    return {"id": "cmpl-1", "object": "text_completion", "created": 1, "model": "m", "choices": [], "usage": usage}


async def open_stream(request: web.Request) -> web.StreamResponse:
    response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
    await response.prepare(request)
    return response


def streaming(events: list[bytes]) -> Handler:
    """A handler that sends ``events`` with a short gap before each, so arrival times are distinct."""

    async def handler(request: web.Request) -> web.StreamResponse:
        response = await open_stream(request)
        for event in events:
            await asyncio.sleep(GAP_S)
            await response.write(event)
        return response

    return handler


@asynccontextmanager
async def serving(handler: Handler) -> AsyncIterator[str]:
    """Serve ``handler`` on a free port of 127.0.0.1; handlers still running when the client is gone are cancelled."""
    app = web.Application()
    app.router.add_post("/v1/completions", handler)
    runner = web.AppRunner(app, handler_cancellation=True, shutdown_timeout=1.0, access_log=None)
    await runner.setup()
    try:
        await web.TCPSite(runner, "127.0.0.1", 0).start()
        host, port = runner.addresses[0][:2]
        yield f"http://{host}:{port}"
    finally:
        await runner.cleanup()


async def request_once(url: str, timeout_s: float = 5.0) -> RequestRecord:
    body = completion_body("m", [11, 12, 13], max_tokens=5)
    async with ClientSession() as session:
        return await stream_completion(session, url, body, index=7, due_s=now_s(), timeout_s=timeout_s)


def complete(handler: Handler, timeout_s: float = 5.0) -> RequestRecord:
    async def main() -> RequestRecord:
        async with serving(handler) as url:
            return await request_once(url, timeout_s)

    return asyncio.run(main())


def test_normal_stream_gives_one_time_per_token_and_usage() -> None:
    events = [sse(token_chunk(f" t{i}", [100 + i])) for i in range(5)]
    record = complete(streaming([*events, sse(usage_chunk(3, 5)), sse("[DONE]")]))
    assert record.error is None and record.ok
    assert len(record.token_times_s) == 5
    assert record.first_token_s == record.token_times_s[0]
    assert record.due_s <= record.send_s <= record.first_token_s <= record.end_s
    assert list(record.token_times_s) == sorted(record.token_times_s)
    assert record.token_times_s[-1] <= record.end_s
    # Each chunk arrives GAP_S after the last; allow a little timer slack below it.
    assert record.token_times_s[-1] - record.token_times_s[0] >= 4 * GAP_S * 0.8
    assert (record.prompt_tokens, record.completion_tokens) == (3, 5)
    assert (record.index, record.prompt_len, record.max_tokens) == (7, 3, 5)


def test_chunk_with_two_token_ids_counts_two_tokens_at_one_time() -> None:
    events = [sse(token_chunk(" a", [1])), sse(token_chunk(" bc", [2, 3])), sse(token_chunk(" d", [4]))]
    record = complete(streaming([*events, sse(usage_chunk(3, 4)), sse("[DONE]")]))
    assert record.ok
    first, second, third, fourth = record.token_times_s
    assert first < second == third < fourth


def test_chunks_without_token_ids_or_usage_count_one_token_each() -> None:
    events = [sse(token_chunk(f" w{i}", None)) for i in range(3)]
    record = complete(streaming([*events, sse("[DONE]")]))
    assert record.ok
    assert len(record.token_times_s) == 3
    assert len(set(record.token_times_s)) == 3


def test_chunks_without_token_ids_count_the_usage_spread_over_them() -> None:
    """A router's stream: several tokens a chunk, no ids; the usage's count is the truth, ITL is per chunk."""
    events = [sse(token_chunk(f" w{i}", None)) for i in range(3)]
    record = complete(streaming([*events, sse(usage_chunk(3, 7)), sse("[DONE]")]))
    assert record.ok and record.completion_tokens == 7
    times = record.token_times_s
    assert len(times) == 7 and record.first_token_s == times[0]
    assert times[0] == times[1] == times[2] < times[3] == times[4] < times[5] == times[6]  # 3, 2, 2
    assert len(tbt_gaps_s(record)) == 2 and min(tbt_gaps_s(record)) > 0
    summary = summarize([record])
    assert summary["total_output_tokens"] == 7 and summary["output_length_ignored"] == 1  # 5 were asked for


def test_listed_token_ids_are_kept_and_unlisted_chunks_take_what_usage_leaves() -> None:
    assert token_times([(1.0, 2), (2.0, None), (3.0, None)], 7) == (1.0, 1.0, 2.0, 2.0, 2.0, 3.0, 3.0)
    assert token_times([(1.0, 2), (2.0, None)], None) == (1.0, 1.0, 2.0)  # no usage: one a chunk
    assert token_times([(1.0, 2), (2.0, None)], 1) == (1.0, 1.0)  # usage below the listed ids: none more


def test_http_500_becomes_an_error_record() -> None:
    async def handler(request: web.Request) -> web.StreamResponse:
        return web.Response(status=500, text="engine dead")

    record = complete(handler)
    assert not record.ok
    assert record.error is not None and "HTTP 500" in record.error and "engine dead" in record.error
    assert record.token_times_s == () and record.first_token_s is None
    assert record.completion_tokens is None


def test_connection_refused_becomes_an_error_record() -> None:
    record = asyncio.run(request_once(f"http://127.0.0.1:{free_port()}"))
    assert not record.ok
    assert record.error is not None and "ClientConnectorError" in record.error
    assert record.first_token_s is None


def test_stalled_server_times_out_within_timeout() -> None:
    async def handler(request: web.Request) -> web.StreamResponse:
        response = await open_stream(request)
        await response.write(sse(token_chunk(" a", [1])))
        await asyncio.sleep(30)
        return response

    timeout_s = 0.3
    record = complete(handler, timeout_s=timeout_s)
    assert record.error is not None and "timed out" in record.error
    assert timeout_s * 0.9 <= record.end_s - record.send_s < timeout_s + 0.5


def test_malformed_json_in_stream_becomes_an_error_record() -> None:
    record = complete(streaming([sse(token_chunk(" a", [1])), b"data: {not json\n\n", sse("[DONE]")]))
    assert not record.ok
    assert record.error is not None and "JSONDecodeError" in record.error


@pytest.mark.parametrize("payload", [b"data: 123\n\n", b"data: null\n\n", b'data: {"choices": ["x"]}\n\n'])
def test_json_that_is_not_a_chunk_becomes_an_error_record(payload: bytes) -> None:
    record = complete(streaming([sse(token_chunk(" a", [1])), payload, sse("[DONE]")]))
    assert record.error is not None and record.error.startswith("malformed chunk")


def test_stream_closed_without_done_is_an_error() -> None:
    record = complete(streaming([sse(token_chunk(" a", [1]))]))
    assert record.error is not None and "without [DONE]" in record.error


def test_error_object_in_stream_becomes_an_error_record() -> None:
    """vLLM reports a failure that happens mid-stream as an ``error`` chunk on a 200 response."""
    error = {"error": {"message": "KV cache exhausted", "type": "InternalServerError", "code": 500}}
    record = complete(streaming([sse(token_chunk(" a", [1])), sse(error), sse("[DONE]")]))
    assert record.error is not None and record.error.startswith("error in stream")
    assert "KV cache exhausted" in record.error


def test_run_load_caps_in_flight_and_keeps_prompt_order() -> None:
    concurrency, hold_s = 2, 0.06
    prompts = [[10 + i] * (i + 1) for i in range(6)]  # prompt i has i + 1 tokens, so records can be matched
    in_flight = [0]
    peak = [0]

    async def handler(request: web.Request) -> web.StreamResponse:
        in_flight[0] += 1
        peak[0] = max(peak[0], in_flight[0])
        body = await request.json()
        response = await open_stream(request)
        await response.write(sse(token_chunk(" a", [1])))
        await asyncio.sleep(hold_s)
        await response.write(sse(usage_chunk(len(body["prompt"]), 1)))
        # Leave before [DONE]: the client frees its slot on [DONE], so the next request comes strictly after.
        in_flight[0] -= 1
        await response.write(sse("[DONE]"))
        return response

    async def main() -> list[RequestRecord]:
        async with serving(handler) as url:
            return await run_load(url, "m", prompts, max_tokens=1, concurrency=concurrency, timeout_s=5.0)

    records = asyncio.run(main())
    assert peak[0] == concurrency
    assert [r.index for r in records] == list(range(len(prompts)))
    assert [r.prompt_len for r in records] == [len(p) for p in prompts]
    assert [r.prompt_tokens for r in records] == [len(p) for p in prompts]
    assert all(r.ok for r in records)
    assert len({r.due_s for r in records}) == 1
    assert all(r.ready_s is not None for r in records)
    queue_s = [r.send_s - r.due_s for r in records]
    # Three waves of two: the first goes at once, the last waits for two holds.
    assert max(queue_s[:2]) < min(queue_s[2:4])  # lower bounds only: a loaded machine is slower, never faster
    assert min(queue_s[2:4]) >= hold_s * 0.9
    assert min(queue_s[4:]) >= 2 * hold_s * 0.9


def test_request_body_asks_for_exact_streamed_output() -> None:
    bodies: list[dict[str, Any]] = []

    async def handler(request: web.Request) -> web.StreamResponse:
        bodies.append(await request.json())
        return await streaming([sse(token_chunk(" a", [1])), sse(usage_chunk(3, 1)), sse("[DONE]")])(request)

    async def main() -> list[RequestRecord]:
        async with serving(handler) as url:
            return await run_load(url, "tiny", [[5, 6, 7]], max_tokens=9, concurrency=1, timeout_s=5.0)

    (record,) = asyncio.run(main())
    assert record.ok
    (body,) = bodies
    assert body["model"] == "tiny"
    assert body["prompt"] == [5, 6, 7]
    assert body["max_tokens"] == 9
    assert body["ignore_eos"] is True
    assert body["stream"] is True
    assert body["stream_options"] == {"include_usage": True}
    assert body["return_token_ids"] is True


# --- open-loop schedules, against tests/stub_upstream.py as a process of its own ---------------------------------

ROOT = Path(__file__).resolve().parents[1]


def schedule(
    url: str, requests: list[tuple[list[int], int]], offsets_s: list[float], cap: int | None
) -> list[RequestRecord]:
    return asyncio.run(run_schedule(url, "m", requests, offsets_s, max_concurrency=cap, timeout_s=10.0))


def test_requests_leave_when_due_while_earlier_ones_still_stream(stub_upstream: StartStub) -> None:
    """Each stream lasts about 0.75 s; the next request is due every 0.1 s and must not wait for any answer."""
    url = stub_upstream(25.0)
    offsets_s = [0.0, 0.1, 0.2, 0.3, 0.4]
    requests = [([7] * (i + 1), 30 + i) for i in range(len(offsets_s))]  # told apart by prompt and output length
    records = schedule(url, requests, offsets_s, cap=None)
    assert all(r.ok for r in records)
    assert [r.index for r in records] == list(range(len(requests)))
    assert [(r.prompt_len, r.max_tokens, r.completion_tokens) for r in records] == [
        (i + 1, 30 + i, 30 + i) for i in range(len(requests))
    ]
    start_s = records[0].due_s
    assert [r.due_s - start_s for r in records] == pytest.approx(offsets_s, abs=1e-9)
    for r in records:
        assert r.ready_s == r.due_s  # no cap: ready when due
        assert r.first_token_s is not None
        assert r.due_s <= r.send_s <= r.first_token_s <= r.end_s
        assert r.send_s - r.due_s < 0.05  # sent on time, a tenth of a stream at most
        assert r.end_s - r.send_s >= r.max_tokens * 0.025 * 0.9  # and the streams are long
    assert records[-1].send_s < records[0].end_s  # the last left before the first had finished


def test_a_cap_makes_later_arrivals_wait_and_the_wait_is_queue_not_send_lag(stub_upstream: StartStub) -> None:
    """One slot, streams of about 0.2 s, arrivals every 0.02 s: each waits for the one before to end."""
    url = stub_upstream(20.0)
    offsets_s = [0.0, 0.02, 0.04, 0.06]
    records = schedule(url, [([1, 2, 3], 10)] * len(offsets_s), offsets_s, cap=1)
    assert all(r.ok for r in records)
    first, *later = records
    assert first.ready_s == first.due_s
    for before, r in zip(records, later, strict=False):
        assert r.ready_s is not None and r.first_token_s is not None
        assert r.ready_s >= before.end_s  # its slot was the one the request before freed
        assert r.due_s < r.ready_s <= r.send_s <= r.first_token_s <= r.end_s
        assert r.ready_s - r.due_s >= 0.1  # queued for most of a stream
        assert r.send_s - r.ready_s < 0.02  # and sent as soon as the slot was free
    summary = summarize(records)
    assert summary["median_queue_ms"] >= 100.0
    assert summary["p99_send_lag_ms"] < 20.0 < summary["median_queue_ms"]
    assert summary["client_kept_up"] is True


def test_a_cap_larger_than_the_load_delays_nothing(stub_upstream: StartStub) -> None:
    url = stub_upstream(20.0)
    offsets_s = [0.0, 0.05, 0.1]
    records = schedule(url, [([1], 10)] * 3, offsets_s, cap=8)
    assert [r.ready_s for r in records] == [r.due_s for r in records]
    assert records[-1].send_s < records[0].end_s


def test_offsets_count_from_a_given_start(stub_upstream: StartStub) -> None:
    """The runner opens its power window at a time of its choosing and needs the schedule to start there too."""
    url = stub_upstream(0.0)

    async def main() -> tuple[float, list[RequestRecord]]:
        start_s = now_s() + 0.3
        return start_s, await run_schedule(url, "m", [([1], 2)] * 2, [0.0, 0.1], None, 10.0, start_s=start_s)

    start_s, records = asyncio.run(main())
    assert [r.due_s for r in records] == [start_s, start_s + 0.1]
    assert all(r.ok and r.send_s >= r.due_s for r in records)


def test_a_stop_sends_nothing_more_and_records_the_rest_as_stopped(stub_upstream: StartStub) -> None:
    """The capacity probe's over-saturation stop: decided after the first answer, so the later ones never go."""
    url = stub_upstream(0.0)
    seen: list[int] = []

    def decided(record: RequestRecord) -> bool:
        seen.append(record.index)
        return True

    offsets_s = [0.0, 0.5, 1.0, 1.5]
    records = asyncio.run(run_schedule(url, "m", [([1], 2)] * 4, offsets_s, None, 10.0, stop_when=decided))
    assert seen == [0] and records[0].ok
    assert [r.index for r in records] == [0, 1, 2, 3]
    assert all(r.error == STOPPED and r.first_token_s is None for r in records[1:])
    assert records[-1].end_s - records[0].due_s < 0.5  # it did not wait for the later arrivals


def test_a_cancelled_request_leaves_mid_answer_and_the_server_sees_it_go(stub_upstream: StartStub) -> None:
    """AIPerf's request cancellation: the client closes the connection mid-stream; the tokens before stay."""
    url = stub_upstream(20.0)  # 30 tokens: about 0.6 s a stream

    async def main() -> tuple[list[RequestRecord], dict[str, Any]]:
        records = await run_schedule(
            url, "m", [([1], 30)] * 3, [0.0, 0.0, 0.0], None, 10.0, cancel_after_s=[None, 0.2, 5.0]
        )
        await asyncio.sleep(0.2)  # the stub notices the closed connection at its next write
        async with ClientSession() as session, session.get(f"{url}/stats") as response:
            return records, await response.json()

    records, stats = asyncio.run(main())
    kept, cancelled, late = records
    assert kept.ok and late.ok  # a delay longer than the answer cancels nothing
    assert cancelled.error == CANCELLED and cancelled.completion_tokens is None
    assert 0 < len(cancelled.token_times_s) < 30
    assert cancelled.end_s - cancelled.send_s >= 0.2
    assert stats["disconnected"] == 1


def test_cancellation_draws_its_share_the_same_way_each_time() -> None:
    cancellation = Cancellation(rate_pct=20.0, delay_s=0.5, seed=7)
    first = cancellation.after_s(2000, round_index=0)
    assert set(first) == {None, 0.5}
    assert 0.17 < first.count(0.5) / len(first) < 0.23
    assert first == cancellation.after_s(2000, round_index=0)
    assert first != cancellation.after_s(2000, round_index=1)


@pytest.mark.parametrize(
    ("offsets_s", "cap", "message"),
    [([0.0], None, "2 requests but 1"), ([0.0, -0.1], None, "zero or more"), ([0.0, 0.0], 0, "at least 1")],
)
def test_run_schedule_refuses_bad_input(offsets_s: list[float], cap: int | None, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        schedule(f"http://127.0.0.1:{free_port()}", [([1], 1)] * 2, offsets_s, cap)


def timed(due_s: float, ready_s: float | None, send_s: float) -> RequestRecord:
    return RequestRecord(
        0, 1, 1, due_s, send_s, send_s + 0.1, (send_s + 0.1,), send_s + 0.1, 1, 1, None, ready_s=ready_s
    )


def test_summary_splits_queue_from_send_lag() -> None:
    """Queue is ready - due and send lag send - ready; old records without ready_s keep queue = send - due."""
    summary = summarize([timed(0.0, 0.5, 0.501), timed(1.0, 1.0, 1.003)])
    assert summary["mean_queue_ms"] == pytest.approx(250.0)
    assert summary["mean_send_lag_ms"] == pytest.approx(2.0)
    assert summary["client_kept_up"] is True
    late = summarize([timed(0.0, 0.0, 0.001), timed(1.0, 1.0, 1.0 + 2 * LAG_LIMIT_MS / 1000)])
    assert late["client_kept_up"] is False
    old = summarize([timed(0.0, None, 0.5)])
    assert old["mean_queue_ms"] == pytest.approx(500.0)
    assert "mean_send_lag_ms" not in old and old.get("client_kept_up") is None

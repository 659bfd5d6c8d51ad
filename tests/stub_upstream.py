"""A fast stand-in for a vLLM instance, for the proxy's tests and its performance check: it answers
``/v1/completions`` and ``/v1/chat/completions`` like vLLM does (one SSE chunk per token, a usage chunk,
``[DONE]``; or one JSON answer when not streamed), and can misbehave on purpose (``--fault``).

``GET /stats`` tells what it saw: requests started and finished, streams open now, requests whose client went
away, and the last request bodies and ``X-Request-Id`` headers. Usage:
``python tests/stub_upstream.py --port 8101 [--fault hang] [--delay-ms 500] [--token-delay-ms 1]
[--kv-transfer-params] [--exit-after N] [--served-model-name NAME] [--tokens-per-chunk N]``. As a server the
suite did not start may: ``--tokens-per-chunk N`` sends N tokens a chunk without token ids, ``--fault early``
ends each answer after half the tokens asked for (``ignore_eos`` ignored). It answers only requests for its served
model name, when given one (404 otherwise, as vLLM does).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
from collections import deque
from typing import Any

from aiohttp import web

FAULTS = ("none", "status500", "hang", "cut", "not-json", "empty", "early")


class Stub:
    def __init__(
        self,
        fault: str,
        token_delay_s: float,
        kv_transfer_params: bool,
        delay_s: float = 0.0,
        exit_after: int | None = None,
        served_model_name: str | None = None,
        tokens_per_chunk: int = 1,
    ) -> None:
        self.fault = fault
        self.tokens_per_chunk = tokens_per_chunk
        self.exit_after = exit_after
        self.served_model_name = served_model_name
        self.delay_s = delay_s
        self.token_delay_s = token_delay_s
        self.kv_transfer_params = kv_transfer_params
        self.started = 0
        self.finished = 0
        self.open = 0
        self.disconnected = 0
        self.bodies: deque[dict[str, Any]] = deque(maxlen=200)
        self.request_ids: deque[str | None] = deque(maxlen=200)

    async def completion(self, request: web.Request) -> web.StreamResponse:
        body = await request.json()
        self.bodies.append(body)
        self.request_ids.append(request.headers.get("X-Request-Id"))
        self.started += 1
        if self.exit_after is not None and self.started > self.exit_after:
            os._exit(3)  # an engine that crashes: in-flight requests lose their connection
        if self.served_model_name and body.get("model") != self.served_model_name:  # as vLLM answers then
            message = f"The model `{body.get('model')}` does not exist."
            return web.json_response({"error": {"message": message}}, status=404)
        if self.fault == "status500":
            return web.json_response({"error": {"message": "the stub fails on purpose"}}, status=500)
        if self.delay_s:
            await asyncio.sleep(self.delay_s)  # a slow prefill
        if self.fault == "hang":  # a decode waiting for KV that never comes
            try:
                await asyncio.sleep(3600)
            except asyncio.CancelledError:
                self.disconnected += 1  # the proxy gave up and closed the request
                raise
        if self.fault == "not-json":
            return web.Response(text="<html>not json</html>", content_type="text/html")
        count = int(body.get("max_completion_tokens") or body.get("max_tokens") or 16)
        if self.fault == "early":
            count = max(1, count // 2)
        if not body.get("stream"):
            self.finished += 1
            return web.json_response(self._answer(count))
        return await self._stream(request, count)

    def _answer(self, count: int) -> dict[str, Any]:
        answer: dict[str, Any] = {
            "id": "cmpl-stub",
            "object": "text_completion",
            "choices": [{"index": 0, "text": "".join(f" t{i}" for i in range(count)), "finish_reason": "length"}],
            "usage": {"prompt_tokens": 4, "completion_tokens": count, "total_tokens": 4 + count},
        }
        if self.kv_transfer_params:
            answer["kv_transfer_params"] = {"remote_engine_id": "stub-engine", "remote_block_ids": [1, 2, 3]}
        return answer

    async def _stream(self, request: web.Request, count: int) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await response.prepare(request)
        self.open += 1
        try:
            if self.fault == "empty":
                return response
            for index in range(0, count, self.tokens_per_chunk):
                if self.fault == "cut" and index == count // 2:
                    assert request.transport is not None
                    request.transport.close()  # an instance that dies mid-answer
                    return response
                tokens = range(index, min(index + self.tokens_per_chunk, count))
                choice: dict[str, Any] = {"index": 0, "text": "".join(f" t{token}" for token in tokens)}
                if self.tokens_per_chunk == 1:
                    choice["token_ids"] = list(tokens)
                chunk = {"id": "cmpl-stub", "choices": [choice]}
                await response.write(f"data: {json.dumps(chunk)}\n\n".encode())
                if self.token_delay_s:
                    await asyncio.sleep(self.token_delay_s)
            usage = {"prompt_tokens": 4, "completion_tokens": count, "total_tokens": 4 + count}
            await response.write(f"data: {json.dumps({'choices': [], 'usage': usage})}\n\ndata: [DONE]\n\n".encode())
            self.finished += 1
        except (ConnectionError, asyncio.CancelledError):
            self.disconnected += 1  # the proxy closed its request: what a client leaving must cause
            raise
        finally:
            self.open -= 1
        return response

    async def stats(self, request: web.Request) -> web.Response:
        return web.json_response(
            {
                "started": self.started,
                "finished": self.finished,
                "open": self.open,
                "disconnected": self.disconnected,
                "bodies": list(self.bodies),
                "request_ids": list(self.request_ids),
            }
        )


def make_app(stub: Stub) -> web.Application:
    app = web.Application(handler_args={"handler_cancellation": True})
    app.router.add_post("/v1/completions", stub.completion)
    app.router.add_post("/v1/chat/completions", stub.completion)
    app.router.add_get("/stats", stub.stats)
    app.router.add_get("/health", lambda request: _ok())
    app.router.add_get("/v1/models", lambda request: _models(stub.served_model_name or "stub-model"))
    return app


async def _ok() -> web.Response:
    return web.json_response({})


async def _models(name: str) -> web.Response:
    return web.json_response({"object": "list", "data": [{"id": name, "object": "model"}]})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--fault", choices=FAULTS, default="none")
    parser.add_argument("--delay-ms", type=float, default=0.0, help="wait before answering a completion")
    parser.add_argument("--token-delay-ms", type=float, default=0.0)
    parser.add_argument("--kv-transfer-params", action="store_true", help="answer like a NixlConnector prefill")
    parser.add_argument("--exit-after", type=int, help="exit with code 3 when completion N + 1 arrives (a crash)")
    parser.add_argument("--served-model-name", help="the only model name it answers to (default: any)")
    parser.add_argument("--tokens-per-chunk", type=int, default=1, help="above 1: that many a chunk, no token ids")
    args = parser.parse_args()
    stub = Stub(
        args.fault,
        args.token_delay_ms / 1000.0,
        args.kv_transfer_params,
        args.delay_ms / 1000.0,
        args.exit_after,
        args.served_model_name,
        args.tokens_per_chunk,
    )
    web.run_app(make_app(stub), host=args.host, port=args.port, print=None, access_log=None)


if __name__ == "__main__":
    main()

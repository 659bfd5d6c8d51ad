"""The proxy's Quart app: ``/v1/completions`` and ``/v1/chat/completions`` go to a prefill instance (one token,
not streamed) and then to a decode instance, whose answer is relayed byte for byte; ``/health`` and
``/v1/models`` answer for the instances behind it.

Every answer to a completion carries the proxy's own timing as headers (PEERS trap 7: the KV hand-off is
measured by the proxy, not guessed from the client): ``x-pd-prefill-ms`` (the prefill request, sent to
answered) and ``x-pd-kv-handoff-ms`` (prefill answered to decode's first bytes: the KV transfer and load plus
decode's first step), ``x-pd-kv-blocks`` (the KV blocks prefill handed off, where its connector names them), and
which instances served it. Faults never hang: a bad request gets 400, an instance
that is unreachable, fails or times out gets 502 naming it, and a client that goes away mid-stream closes the
decode request, so that vLLM aborts it. ``timeout_s`` bounds the whole wait for decode's first bytes, prefill
included, so a KV transfer that never arrives (decode waits for good) ends in a 502 naming decode within it.

After a failed decode the prefill instance may hold the request's KV blocks (NixlConnector). A decode instance
that got the request frees them through vLLM when the proxy closes it (an abort before its KV was read tells the
prefill instance at once; one during the read stops its lease's heartbeats). One that never got it (unreachable)
cannot: the proxy then hands the blocks to another decode instance in a request vLLM rejects, which frees them
(``connectors.release_body``); with no other decode instance they stay until their lease runs out.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from typing import Any

import aiohttp
from quart import Quart, Response, request

from proxy.connectors import Instance, decode_body, handed_off_blocks, prefill_body, release_body, request_id

JSON = "application/json"


@dataclass(frozen=True, slots=True)
class ProxySettings:
    prefill: tuple[Instance, ...]
    decode: tuple[Instance, ...]
    connector: str = "example"
    timeout_s: float = 600.0
    """Longest wait: from the request to decode's first bytes (the prefill answer included), and then any gap
    between decode's streamed bytes."""
    connect_timeout_s: float = 10.0


class ProxyError(Exception):
    """A request the proxy answers with an error: ``status`` and a message that says what to do."""

    def __init__(self, status: int, message: str, unreached: bool = False) -> None:
        super().__init__(message)
        self.status = status
        self.unreached = unreached
        """The instance never got the request (nothing listens, or the connection failed before it was sent)."""

    def response(self) -> Response:
        body = {"error": {"message": str(self), "type": "proxy_error", "code": self.status}}
        return Response(json.dumps(body), status=self.status, content_type=JSON)


def create_app(settings: ProxySettings) -> Quart:
    if not settings.prefill or not settings.decode:
        raise ValueError("the proxy needs at least one prefill and one decode instance")
    app = Quart("pd_proxy")
    app.config["RESPONSE_TIMEOUT"] = None  # a long decode stream is not a stuck one; timeout_s guards gaps
    relay = _Relay(settings)
    app.before_serving(relay.open)
    app.after_serving(relay.close)

    @app.post("/v1/completions")
    async def completions() -> Response:
        return await relay.completion("/v1/completions", "prompt")

    @app.post("/v1/chat/completions")
    async def chat_completions() -> Response:
        return await relay.completion("/v1/chat/completions", "messages")

    @app.get("/health")
    async def health() -> Response:
        return await relay.health()

    @app.get("/v1/models")
    async def models() -> Response:
        return await relay.models()

    return app


class _Relay:
    """The upstream side: one aiohttp session, round-robin over the instances of each role."""

    def __init__(self, settings: ProxySettings) -> None:
        self.settings = settings
        self._prefill: Iterator[Instance] = itertools.cycle(settings.prefill)
        self._decode: Iterator[Instance] = itertools.cycle(settings.decode)
        self._session: aiohttp.ClientSession | None = None

    async def open(self) -> None:
        timeout = aiohttp.ClientTimeout(
            total=None, connect=self.settings.connect_timeout_s, sock_read=self.settings.timeout_s
        )
        # No pool limit: aiohttp's default of 100 would queue streams above 100 without a word.
        self._session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0), timeout=timeout)

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()

    @property
    def session(self) -> aiohttp.ClientSession:
        assert self._session is not None, "the app opens the session before serving"
        return self._session

    async def completion(self, path: str, required: str) -> Response:
        try:
            body = await _request_json(required)
            return await self._relay(path, body)
        except ProxyError as error:
            return error.response()

    async def _relay(self, path: str, body: dict[str, Any]) -> Response:
        connector = self.settings.connector
        prefill, decode = next(self._prefill), next(self._decode)
        headers = {"X-Request-Id": request_id(connector, prefill, decode)}
        if "Authorization" in request.headers:
            headers["Authorization"] = request.headers["Authorization"]
        sent_s = time.perf_counter()
        answer = await self._prefill_answer(prefill, path, prefill_body(connector, body), headers)
        prefilled_s = time.perf_counter()
        try:
            decode_request = decode_body(connector, body, answer)
        except ValueError as error:
            raise ProxyError(502, f"prefill instance {prefill.url}: {error}") from None
        try:
            upstream, first = await self._decode_start(decode, path, decode_request, headers, prefilled_s - sent_s)
        except ProxyError as error:
            if not error.unreached:
                raise
            released = await self._release(decode, path, decode_request, headers)
            raise ProxyError(error.status, f"{error}{released}") from None
        timing = {
            "x-pd-prefill-ms": f"{(prefilled_s - sent_s) * 1000:.3f}",
            "x-pd-kv-handoff-ms": f"{(time.perf_counter() - prefilled_s) * 1000:.3f}",
            "x-pd-prefill-instance": prefill.url,
            "x-pd-decode-instance": decode.url,
            "x-request-id": headers["X-Request-Id"],
        }
        blocks = handed_off_blocks(answer)
        if blocks is not None:
            timing["x-pd-kv-blocks"] = str(blocks)
        content_type = upstream.headers.get("Content-Type", JSON)
        return Response(self._stream(upstream, decode, first), status=200, content_type=content_type, headers=timing)

    async def _prefill_answer(
        self, prefill: Instance, path: str, body: dict[str, Any], headers: dict[str, str]
    ) -> dict[str, Any]:
        try:
            async with asyncio.timeout(self.settings.timeout_s):
                upstream = await self._open(prefill, "prefill", path, body, headers)
                async with upstream:
                    data = await upstream.read()
        except TimeoutError:
            raise ProxyError(502, _timed_out("prefill", prefill, self.settings.timeout_s)) from None
        except aiohttp.ClientError as error:
            raise ProxyError(502, f"prefill instance {prefill.url} failed mid-answer: {error!r}") from None
        try:
            answer = json.loads(data)
        except ValueError:
            raise ProxyError(502, f"prefill instance {prefill.url} answered with non-JSON: {data[:200]!r}") from None
        if not isinstance(answer, dict):
            kind = type(answer).__name__
            raise ProxyError(502, f"prefill instance {prefill.url} answered with a JSON {kind}, not an object")
        return answer

    async def _release(
        self, failed: Instance, path: str, decode_request: dict[str, Any], headers: dict[str, str]
    ) -> str:
        """Free the prefill instance's KV blocks of a request no decode instance got, through another decode
        instance (``connectors.release_body``); the sentence that says so for the 502, else ``""``."""
        body = release_body(self.settings.connector, decode_request)
        other = next((instance for instance in self.settings.decode if instance != failed), None)
        if body is None or other is None:
            return ""
        try:
            async with asyncio.timeout(self.settings.connect_timeout_s):
                async with self.session.post(f"{other.url}{path}", json=body, headers=headers) as answer:
                    await answer.read()  # vLLM answers 404 (no such model), having freed the blocks
        except (TimeoutError, aiohttp.ClientError):
            return ""
        return f"; the prefill instance's KV blocks of the request were released through decode instance {other.url}"

    async def _decode_start(
        self, decode: Instance, path: str, body: dict[str, Any], headers: dict[str, str], prefill_s: float
    ) -> tuple[aiohttp.ClientResponse, bytes]:
        """Decode's answer and its first bytes within what prefill left of ``timeout_s``, so a decode that waits
        for a KV transfer that never comes gets a 502 naming it ``timeout_s`` after the request, not later."""
        timeout_s = self.settings.timeout_s
        try:
            async with asyncio.timeout(timeout_s - prefill_s):
                upstream = await self._open(decode, "decode", path, body, headers)
                try:
                    return upstream, await self._first_bytes(upstream, decode)
                except BaseException:
                    upstream.close()  # vLLM aborts the request it was holding
                    raise
        except TimeoutError:
            raise ProxyError(
                502,
                f"decode instance {decode.url} did not answer within {timeout_s:g} s of the request (the proxy's "
                f"--timeout-s), though prefill answered in {prefill_s:.3f} s: is the KV transfer stuck?",
            ) from None

    async def _open(
        self, instance: Instance, role: str, path: str, body: dict[str, Any], headers: dict[str, str]
    ) -> aiohttp.ClientResponse:
        """POST to an instance; an answer other than 200 becomes a ``ProxyError`` (4xx passed on, else 502).
        A timeout is left to the caller, whose deadline covers more than this call."""
        try:
            upstream = await self.session.post(f"{instance.url}{path}", json=body, headers=headers)
        except (aiohttp.ClientConnectorError, aiohttp.ClientOSError) as error:
            raise ProxyError(502, f"{role} instance {instance.url} is unreachable: {error}", unreached=True) from None
        except TimeoutError:
            raise
        except aiohttp.ClientError as error:
            raise ProxyError(502, f"{role} instance {instance.url} failed: {error!r}") from None
        if upstream.status == 200:
            return upstream
        async with upstream:
            text = await upstream.text(errors="replace")
        status = upstream.status if 400 <= upstream.status < 500 else 502
        raise ProxyError(status, f"{role} instance {instance.url} answered HTTP {upstream.status}: {text[:500]}")

    async def _first_bytes(self, upstream: aiohttp.ClientResponse, decode: Instance) -> bytes:
        try:
            first = await upstream.content.readany()
        except TimeoutError:
            raise  # _decode_start names it
        except aiohttp.ClientError as error:
            raise ProxyError(502, f"decode instance {decode.url} failed before answering: {error!r}") from None
        if not first:
            raise ProxyError(502, f"decode instance {decode.url} closed the answer without sending anything")
        return first

    async def _stream(self, upstream: aiohttp.ClientResponse, decode: Instance, first: bytes) -> AsyncIterator[bytes]:
        """Decode's bytes as they come. A failure mid-stream ends it with an SSE error event, since the status
        has gone out already; a client that leaves cancels this generator and the upstream request with it."""
        try:
            yield first
            async for chunk in upstream.content.iter_any():
                yield chunk
        except TimeoutError:
            yield _sse_error(_timed_out("decode", decode, self.settings.timeout_s))
        except aiohttp.ClientError as error:
            yield _sse_error(f"decode instance {decode.url} failed mid-stream: {error!r}")
        finally:
            upstream.close()  # closes the connection: vLLM aborts a request whose client went away

    async def health(self) -> Response:
        instances = [("prefill", i) for i in self.settings.prefill] + [("decode", i) for i in self.settings.decode]
        problems = await asyncio.gather(*(self._health_problem(role, instance) for role, instance in instances))
        failing = [problem for problem in problems if problem]
        if failing:
            return ProxyError(503, "; ".join(failing)).response()
        return Response(json.dumps({"status": "ok", "instances": len(instances)}), content_type=JSON)

    async def _health_problem(self, role: str, instance: Instance) -> str | None:
        try:
            async with asyncio.timeout(self.settings.connect_timeout_s):
                async with self.session.get(f"{instance.url}/health") as answer:
                    return None if answer.status == 200 else f"{role} instance {instance.url}: HTTP {answer.status}"
        except TimeoutError:
            return f"{role} instance {instance.url}: no answer in {self.settings.connect_timeout_s:g} s"
        except aiohttp.ClientError as error:
            return f"{role} instance {instance.url}: {error}"

    async def models(self) -> Response:
        decode = self.settings.decode[0]
        try:
            async with asyncio.timeout(self.settings.connect_timeout_s):
                async with self.session.get(f"{decode.url}/v1/models") as answer:
                    data = await answer.read()
                    status = answer.status if answer.status == 200 else 502
        except (TimeoutError, aiohttp.ClientError) as error:
            return ProxyError(502, f"decode instance {decode.url}: {error!r}").response()
        return Response(data, status=status, content_type=JSON)


async def _request_json(required: str) -> dict[str, Any]:
    data = await request.get_data()
    try:
        body = json.loads(data)
    except ValueError as error:
        raise ProxyError(400, f"the request body is not valid JSON ({error}); send an OpenAI-style request") from None
    if not isinstance(body, dict):
        raise ProxyError(400, "the request body must be a JSON object")
    if required not in body:
        raise ProxyError(400, f"the request has no {required!r}: an OpenAI-style request needs one")
    return body


def _timed_out(role: str, instance: Instance, timeout_s: float) -> str:
    return f"{role} instance {instance.url} did not answer within {timeout_s:g} s (the proxy's --timeout-s)"


def _sse_error(message: str) -> bytes:
    body = {"error": {"message": message, "type": "proxy_error", "code": 502}}
    return f"data: {json.dumps(body)}\n\n".encode()

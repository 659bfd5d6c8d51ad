"""How the proxy speaks to the instances for each vLLM KV connector: what the prefill copy of a request carries,
what the decode request gets from the prefill answer, and which headers both need.

- ``example`` (vLLM's ``ExampleConnector``, shared storage): decode finds the KV that prefill stored by the
  prompt itself, so decode gets the original request unchanged.
- ``nixl`` (``NixlConnector``): prefill is told that a remote decode follows (``do_remote_decode``) and answers
  with ``kv_transfer_params``, which decode needs to pull the KV blocks; its ``remote_block_ids`` name the blocks
  the hand-off moves (``handed_off_blocks``). Prefill keeps those blocks until a decode instance has read them,
  or tells it it never will (``release_body``), or its lease runs out.
- ``p2pnccl`` (``P2pNcclConnector``, vLLM 0.9.2 to before 0.14): both instances find each other through the
  request id, which names the prefill and the decode instance's ZMQ addresses. From vLLM 0.14 each engine adds
  its own suffix to that id, so the KV is sent and awaited under different keys and decode waits for good.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any

CONNECTORS = ("example", "nixl", "p2pnccl")
RELEASE_MODEL = "pd-proxy-release-kv"
"""The model name of a release request: no instance serves it, so vLLM rejects the request before its engine."""


@dataclass(frozen=True, slots=True)
class Instance:
    """One vLLM instance behind the proxy: its HTTP URL and, for ``p2pnccl``, its KV ZMQ address (host:port)."""

    url: str
    kv_address: str | None = None


def request_id(connector: str, prefill: Instance, decode: Instance) -> str:
    """The id sent as ``X-Request-Id`` to both instances; ``p2pnccl`` routes the KV by it."""
    if connector == "p2pnccl":
        return f"___prefill_addr_{prefill.kv_address}___decode_addr_{decode.kv_address}_{uuid.uuid4().hex}"
    return uuid.uuid4().hex


def prefill_body(connector: str, body: dict[str, Any]) -> dict[str, Any]:
    """The prefill copy: one token, not streamed (it only has to fill and hand over the KV cache)."""
    copy = dict(body)
    copy["max_tokens"] = 1
    if "max_completion_tokens" in copy:
        copy["max_completion_tokens"] = 1
    copy["stream"] = False
    for unwanted in ("stream_options", "min_tokens", "min_completion_tokens"):  # at most 1 token: no minimum
        copy.pop(unwanted, None)
    if connector == "nixl":
        copy["kv_transfer_params"] = {
            "do_remote_decode": True,
            "do_remote_prefill": False,
            "remote_engine_id": None,
            "remote_block_ids": None,
            "remote_host": None,
            "remote_port": None,
        }
    return copy


def decode_body(connector: str, body: dict[str, Any], prefill_answer: dict[str, Any]) -> dict[str, Any]:
    """The original request, plus what decode needs from the prefill answer to find the KV."""
    if connector != "nixl":
        return body
    params = prefill_answer.get("kv_transfer_params")
    if not isinstance(params, dict):
        raise ValueError(
            "the prefill answer has no kv_transfer_params: is the prefill instance running with NixlConnector?"
        )
    return {**body, "kv_transfer_params": params}


def handed_off_blocks(prefill_answer: dict[str, Any]) -> int | None:
    """How many KV blocks the prefill answer hands to decode: its ``kv_transfer_params.remote_block_ids``, a list of
    block ids or, with several KV cache groups (vLLM's hybrid allocator), one list per group, summed; ``None`` for
    a connector that names no blocks (``example``, ``p2pnccl``)."""
    params = prefill_answer.get("kv_transfer_params")
    blocks = params.get("remote_block_ids") if isinstance(params, dict) else None
    if not isinstance(blocks, list):
        return None
    return sum(len(group) if isinstance(group, list) else 1 for group in blocks)


def release_body(connector: str, decode_request: dict[str, Any]) -> dict[str, Any] | None:
    """A request that frees the prefill instance's KV blocks of ``decode_request`` when no decode instance got it
    (``None``: the connector holds nothing for decode to pull). vLLM's OpenAI server (0.32), given
    ``kv_transfer_params`` with ``do_remote_prefill`` in a request it rejects before its engine (here: a model it
    does not serve), has its NixlConnector tell the prefill instance that the blocks will not be read, and the
    prefill instance frees them at once instead of when their lease runs out (``kv_lease_duration``, 30 s)."""
    if connector != "nixl" or not isinstance(decode_request.get("kv_transfer_params"), dict):
        return None
    return {**decode_request, "model": RELEASE_MODEL, "max_tokens": 1, "stream": False}

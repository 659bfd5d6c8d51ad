"""How much KV a disaggregated benchmark's hand-off moved against its prompts' length, per request as the proxy saw
it (``x-pd-kv-blocks``: the blocks the prefill answer's ``kv_transfer_params`` name, ``plugin.records.requests``).

Over the counted requests that succeeded and carry the figure: the blocks moved, their prompt tokens, and prompt
tokens per block moved (the KV cache's block size when the whole prompt moved; more when decode had part of it
cached). A connector that names no blocks (``example``, P2P NCCL) gives ``None``, never 0; there decode's own
cached tokens (``prefix_hit_rate``) are what it loaded or found rather than computed. Pure."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from plugin.records.requests import RequestRecord


def kv_handoff(records: Iterable[RequestRecord]) -> dict[str, Any]:
    """``requests`` (those whose blocks the proxy saw), ``blocks``, ``prompt_tokens`` and ``prompt_tokens_per_block``
    of them; the counts are 0 and the figures ``None`` where no request named its blocks."""
    named = [r for r in records if r.ok and r.kv_blocks is not None]
    blocks = sum(r.kv_blocks or 0 for r in named)
    prompt = sum(r.prompt_tokens if r.prompt_tokens is not None else r.prompt_len for r in named)
    return {
        "requests": len(named),
        "blocks": blocks if named else None,
        "prompt_tokens": prompt if named else None,
        "prompt_tokens_per_block": prompt / blocks if blocks else None,
    }

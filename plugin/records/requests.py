"""One request as the measuring client saw it: the record every later stage reads (``plugin.load.client`` makes it).

Timestamps are on ``plugin.clock.now_s``, the clock the power sampler shares."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class RequestRecord:
    """One request as the client saw it: due (its schedule says go), ready (due and, under a cap, holding a slot),
    sent, first token, end. Queue = ``ready_s - due_s``; send lag = ``send_s - ready_s``; TTFT = first token - send.
    """

    index: int
    prompt_len: int
    max_tokens: int
    due_s: float
    send_s: float
    first_token_s: float | None
    token_times_s: tuple[float, ...]
    end_s: float
    prompt_tokens: int | None
    completion_tokens: int | None
    error: str | None
    proxy_prefill_ms: float | None = None
    """Disaggregated only, from the proxy's headers: its prefill request, sent to answered."""
    kv_handoff_ms: float | None = None
    """Disaggregated only: prefill answered to decode's first bytes at the proxy (KV transfer, first step)."""
    ready_s: float | None = None
    """When it could have been sent: its due time, or when a slot was freed for it if it had to wait for one.
    ``None`` in records from before it was kept (there ``send_s - due_s`` is queue and lag together)."""
    cached_tokens: int | None = None
    """Prompt tokens the server served from its prefix cache, as it reports them; ``None`` where it does not."""
    session: int | None = None
    """In a multi-turn schedule: the index of the session's first request."""
    turn: int | None = None
    """In a multi-turn schedule: the turn's number in its session, 0 for the first."""
    kv_blocks: int | None = None
    """Disaggregated only, from the proxy's headers: the KV blocks prefill handed to decode, as its connector's
    ``kv_transfer_params`` name them (NIXL); ``None`` where the connector names none (example, P2P NCCL)."""

    @property
    def ok(self) -> bool:
        return self.error is None

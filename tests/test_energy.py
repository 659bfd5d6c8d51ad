"""Attribution of energy to prefill and decode: the slice rule on known power traces and overlapping requests."""

from __future__ import annotations

import dataclasses
import random
from dataclasses import dataclass

import pytest

from plugin.analysis.energy import attribute_energy, curves_of
from plugin.power.backend import Sample
from plugin.records.requests import RequestRecord


def power(points: list[tuple[float, float]], gpu: int = 0) -> list[Sample]:
    return [Sample(t, gpu, p, None, 1980, 2619, 100, 1024, 40, 0) for t, p in points]


def flat(power_w: float, until_s: float, gpu: int = 0) -> list[Sample]:
    return power([(t / 10, power_w) for t in range(int(until_s * 10) + 1)], gpu)


def record(
    send_s: float,
    first_token_s: float | None,
    end_s: float,
    prompt_tokens: int | None = 100,
    completion_tokens: int | None = 10,
) -> RequestRecord:
    return RequestRecord(
        index=0,
        prompt_len=64,
        max_tokens=10,
        due_s=send_s,
        send_s=send_s,
        first_token_s=first_token_s,
        token_times_s=_spread(first_token_s, end_s, completion_tokens or 0) if first_token_s is not None else (),
        end_s=end_s,
        prompt_tokens=prompt_tokens,
        completion_tokens=completion_tokens,
        error=None if first_token_s is not None else "HTTP 500",
    )


def _spread(first_s: float, end_s: float, count: int) -> tuple[float, ...]:
    """``count`` token times from the first token to the end, evenly."""
    return tuple(first_s + (end_s - first_s) * i / max(count - 1, 1) for i in range(count))


def test_one_request_splits_at_its_first_token() -> None:
    split = attribute_energy(
        curves_of(flat(100.0, 3.0)), [record(0.0, 1.0, 3.0, prompt_tokens=200, completion_tokens=40)]
    )
    assert (split.start_s, split.end_s) == (0.0, 3.0)
    assert split.prefill_j == pytest.approx(100.0)
    assert split.decode_j == pytest.approx(200.0)
    assert split.idle_j == pytest.approx(0.0)
    assert split.j_per_prompt_token == pytest.approx(0.5)
    assert split.j_per_output_token == pytest.approx(5.0)
    assert split.j_per_request == pytest.approx(300.0)
    assert (split.prefill_s, split.decode_s, split.overlap_s) == pytest.approx((1.0, 2.0, 0.0))


def test_overlapping_requests_share_slices_in_proportion() -> None:
    # A: prefill 0-2, decode 2-4. B: prefill 1-3, decode 3-5. Nothing runs from 5 to 6.
    records = [record(0.0, 2.0, 4.0), record(1.0, 3.0, 5.0)]
    split = attribute_energy(curves_of(flat(100.0, 6.0)), records, start_s=0.0, end_s=6.0)
    # Slices: 0-1 P, 1-2 PP, 2-3 P+D (half each), 3-4 DD, 4-5 D, 5-6 idle.
    assert split.prefill_j == pytest.approx(250.0)
    assert split.decode_j == pytest.approx(250.0)
    assert split.idle_j == pytest.approx(100.0)
    assert split.total_j == pytest.approx(600.0)
    assert (split.prefill_s, split.decode_s, split.overlap_s, split.idle_s) == pytest.approx((3.0, 3.0, 1.0, 1.0))
    assert (split.requests, split.prompt_tokens, split.output_tokens) == (2, 200, 20)


def test_three_requests_split_two_to_one() -> None:
    records = [record(0.0, 2.0, 2.0), record(0.0, 2.0, 2.0), record(-1.0, 0.0, 2.0)]
    split = attribute_energy(curves_of(flat(300.0, 2.0)), records, start_s=0.0, end_s=2.0)
    assert split.prefill_j == pytest.approx(400.0)
    assert split.decode_j == pytest.approx(200.0)


def test_slices_integrate_the_power_trace_not_an_average() -> None:
    trace = power([(0.0, 100.0), (1.0, 100.0), (1.0001, 500.0), (3.0, 500.0)])
    split = attribute_energy(curves_of(trace), [record(0.0, 1.0, 3.0)])
    assert split.prefill_j == pytest.approx(100.0, rel=1e-3)
    assert split.decode_j == pytest.approx(1000.0, rel=1e-3)


def test_idle_power_is_taken_off_before_splitting() -> None:
    records = [record(0.0, 2.0, 4.0), record(1.0, 3.0, 5.0)]
    split = attribute_energy(curves_of(flat(100.0, 6.0)), records, start_s=0.0, end_s=6.0, idle_power_w=40.0)
    assert split.prefill_above_idle_j == pytest.approx(250.0 * 0.6)
    assert split.decode_above_idle_j == pytest.approx(250.0 * 0.6)
    assert split.prefill_j == pytest.approx(250.0)  # the plain figures are unchanged
    assert attribute_energy(curves_of(flat(100.0, 6.0)), records).prefill_above_idle_j is None


def test_several_gpus_are_summed() -> None:
    samples = flat(100.0, 3.0, gpu=0) + flat(50.0, 3.0, gpu=1)
    split = attribute_energy(curves_of(samples), [record(0.0, 1.0, 3.0)])
    assert split.prefill_j == pytest.approx(150.0)
    assert split.decode_j == pytest.approx(300.0)


def test_requests_without_a_first_token_are_skipped_and_counted() -> None:
    split = attribute_energy(curves_of(flat(100.0, 4.0)), [record(0.0, 1.0, 2.0), record(0.0, None, 4.0)], end_s=4.0)
    assert (split.requests, split.skipped_requests) == (1, 1)
    assert split.idle_j == pytest.approx(200.0)


def test_tokens_are_counted_as_the_client_saw_them() -> None:
    """Output tokens are the streamed tokens that arrived (the window may cut a request); a prompt without the
    server's count falls back to the tokens sent."""
    seen = dataclasses.replace(record(0.0, 1.0, 2.0, completion_tokens=5), prompt_tokens=None, completion_tokens=None)
    split = attribute_energy(curves_of(flat(100.0, 2.0)), [seen])
    assert (split.prompt_tokens, split.output_tokens) == (64, 5)


def test_without_power_samples_nothing_is_zero() -> None:
    split = attribute_energy(curves_of([]), [record(0.0, 1.0, 2.0)], idle_power_w=50.0)
    assert split.prefill_j is None and split.decode_j is None and split.idle_j is None
    assert split.total_j is None and split.j_per_prompt_token is None and split.j_per_request is None
    assert split.prefill_above_idle_j is None
    assert (split.prefill_s, split.decode_s) == pytest.approx((1.0, 1.0))


def test_no_requests_is_all_idle() -> None:
    split = attribute_energy(curves_of(flat(100.0, 1.0)), [], start_s=0.0, end_s=1.0)
    assert split.idle_j == pytest.approx(100.0) and split.requests == 0
    assert split.j_per_prompt_token is None and split.j_per_request is None


@dataclass(frozen=True)
class Phases:
    """Any object with the record's fields will do (``PhaseRecord`` is a protocol)."""

    send_s: float
    first_token_s: float | None
    end_s: float
    prompt_len: int = 10
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    token_times_s: tuple[float, ...] = ()
    kv_handoff_ms: float | None = None
    ok: bool = True

    @property
    def due_s(self) -> float:
        return self.send_s


def test_energy_is_conserved_over_random_overlapping_requests() -> None:
    rng = random.Random(7)
    trace = power([(t / 100, rng.uniform(100, 700)) for t in range(1001)])
    records = []
    for _ in range(50):
        send = rng.uniform(0, 8)
        first = send + rng.uniform(0, 1)
        records.append(Phases(send, first, first + rng.uniform(0, 1)))
    split = attribute_energy(curves_of(trace), records, start_s=0.0, end_s=10.0)
    whole = attribute_energy(curves_of(trace), [], start_s=0.0, end_s=10.0)
    assert split.total_j == pytest.approx(whole.idle_j, rel=1e-9)
    assert split.prefill_s + split.decode_s - split.overlap_s + split.idle_s == pytest.approx(10.0)


@pytest.mark.parametrize("role", ["prefill", "decode", "prefill+decode"])
def test_every_role_conserves_energy_and_a_dedicated_gpu_charges_one_phase(role: str) -> None:
    rng = random.Random(11)
    trace = power([(t / 100, rng.uniform(100, 700)) for t in range(1001)])
    records = [
        record(s, s + rng.uniform(0, 1), s + 1 + rng.uniform(0, 1)) for s in (rng.uniform(0, 8) for _ in range(20))
    ]
    split = attribute_energy(curves_of(trace), records, start_s=0.0, end_s=10.0, anchor_j=5000.0, role=role)
    assert split.total_j == pytest.approx(5000.0, rel=1e-9)
    if role == "prefill":
        assert split.decode_j == 0.0 and (split.prefill_j or 0.0) > 0.0
    elif role == "decode":
        assert split.prefill_j == 0.0 and (split.decode_j or 0.0) > 0.0
    else:
        assert (split.prefill_j or 0.0) > 0.0 and (split.decode_j or 0.0) > 0.0


@pytest.mark.parametrize("wait_s", [0.0, 1.0, 3.5])
def test_a_queue_grows_without_prefill_energy_growing(wait_s: float) -> None:
    """On a shared GPU at 100 W, one request decodes from 0 to 10 s while another waits ``wait_s`` in the
    server's queue, then prefills for 0.5 s (the server's mean prefill time) up to its first token at 5 s. Its
    prefill is 0.5 s shared with the decode: 25 J however long it waited; the wait is the decode's."""
    decoding = record(0.0, 0.0, 10.0)
    waiting = record(4.5 - wait_s, 5.0, 6.0)
    split = attribute_energy(curves_of(flat(100.0, 10.0)), [decoding, waiting], 0.0, 10.0, prefill_s=0.5)
    assert split.prefill_j == pytest.approx(25.0)
    assert split.decode_j == pytest.approx(975.0)
    queued_as_prefill = attribute_energy(curves_of(flat(100.0, 10.0)), [decoding, waiting], 0.0, 10.0)
    assert queued_as_prefill.prefill_j == pytest.approx(25.0 + 50.0 * wait_s)  # the old rule: waiting charged


def test_a_prefill_time_longer_than_the_ttft_starts_at_the_send() -> None:
    split = attribute_energy(curves_of(flat(100.0, 4.0)), [record(1.0, 1.5, 3.0)], 0.0, 4.0, prefill_s=2.0)
    assert (split.prefill_j, split.prefill_s) == (pytest.approx(50.0), pytest.approx(0.5))

"""One benchmark's measurement, outside pytest: a warm-up request, then ``rounds`` rounds of load, each inside its
own power window, so that energy has a spread between rounds. Endpoint, sampler and prompts (or serving
schedules) in; a frozen ``Measurement`` out. ``plugin.analysis.benchmark`` turns it into typed results; the
fixtures and ``tools/ttft_agreement.py`` both use it.

A steady-state schedule's window opens ``measured_from_s`` after the round's start and closes at
``measured_to_s`` while requests keep arriving, so the power window holds a full batch only."""

from __future__ import annotations

import asyncio
import gc
import math
from collections.abc import Callable, Coroutine, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

from plugin.clock import now_s
from plugin.errors import BenchError
from plugin.load.client import STOPPED, Cancellation, run_load, run_schedule
from plugin.load.schedule import Schedule
from plugin.measurement import Measurement, Round
from plugin.power import Sampler
from plugin.records.requests import RequestRecord
from plugin.serving import prometheus
from plugin.serving.endpoint import Endpoint

T = TypeVar("T")
StopWhen = Callable[[Sequence[RequestRecord], int], bool]
"""Whether a round is decided already, from its answered counted records and how many it counts."""
START_LEAD_S = 0.05
"""A round's schedule starts this long after it is set up, so the first arrival is not late by the setting up."""


class WarmupFailed(BenchError):
    """The warm-up request failed: the measured rounds would meet the same fault, each after a full timeout."""


@dataclass(frozen=True)
class Runner:
    """Sends load to ``endpoint`` and measures the GPUs of ``endpoint.gpu_roles`` with ``sampler``."""

    endpoint: Endpoint
    sampler: Sampler
    timeout_s: float
    on_request_done: Callable[[int, int], None] | None = None
    """Called with (done, total) of the current round after every request."""
    cancellation: Cancellation | None = None
    """Requests of measured serving rounds whose client leaves mid-answer; never a warm-up request."""

    def measure(
        self,
        name: str,
        rounds: int,
        prompts_for: Callable[[int], list[list[int]]],
        count: int,
        output_len: int,
        concurrency: int,
        min_window_s: float = 0.0,
    ) -> Measurement:
        """Warm-up requests (not measured: one prompt, once to every server behind the endpoint), then ``rounds``
        rounds of ``count`` fresh prompts each, in a power window of their own; a round whose window would be
        shorter than ``min_window_s`` sends ``count`` more fresh prompts, again and again, until it is not.
        ``WarmupFailed`` when a warm-up request fails. One warm-up prompt whatever the servers, so that every
        topology draws the same measured prompts."""
        warm = self.endpoint.warmup_requests
        warmup_records = self._load(prompts_for(1) * warm, output_len, max(concurrency, warm), measured=False)
        failed = [record for record in warmup_records if not record.ok]
        if failed:
            raise WarmupFailed(f"the warm-up request failed, so no round was measured: {failed[0].error}")
        metrics_url = self.endpoint.metrics_url or self.endpoint.url
        before = prometheus.scrape(metrics_url)
        measured = [
            self._round(f"{name} round {i}", i, prompts_for, count, output_len, concurrency, min_window_s)
            for i in range(rounds)
        ]
        after = prometheus.scrape(metrics_url)
        return Measurement(tuple(warmup_records), tuple(measured), before, after)

    def measure_schedules(
        self, name: str, rounds: Sequence[Schedule], warmup: Schedule | None = None, stop_when: StopWhen | None = None
    ) -> Measurement:
        """As ``measure``, for serving schedules (open loop, datasets, steady state). ``stop_when(answered,
        counted)``, given a round's answered records among those it counts and how many it counts, ends the round
        early when it says so (a capacity probe already decided: ``plugin.analysis.capacity.clearly_misses``)."""
        warmup_records = _run(self._send(warmup, None)) if warmup else []
        failed = [record for record in warmup_records if not record.ok]
        if failed:
            raise WarmupFailed(f"the warm-up request failed, so no round was measured: {failed[0].error}")
        metrics_url = self.endpoint.metrics_url or self.endpoint.url
        before = prometheus.scrape(metrics_url)
        measured = [_run(self._scheduled_round(f"{name} round {i}", i, s, stop_when)) for i, s in enumerate(rounds)]
        after = prometheus.scrape(metrics_url)
        return Measurement(tuple(warmup_records), tuple(measured), before, after)

    async def _scheduled_round(
        self, window: str, index: int, schedule: Schedule, stop_when: StopWhen | None = None
    ) -> Round:
        gc.collect()
        gc.freeze()  # a full collection mid-round took 13-17 ms: late sends (docs/client-schedule.md)
        try:
            return await self._timed_round(window, index, schedule, stop_when)
        finally:
            gc.unfreeze()

    async def _timed_round(
        self, window: str, index: int, schedule: Schedule, stop_when: StopWhen | None = None
    ) -> Round:
        gpus = tuple(self.endpoint.gpu_roles)
        origin_s = now_s() + START_LEAD_S
        opens_s = origin_s + (schedule.measured_from_s or 0.0)
        stop = _stop(schedule, stop_when)
        leave_s = None if self.cancellation is None else self.cancellation.after_s(len(schedule.requests), index)
        client = asyncio.create_task(self._send(schedule, self.on_request_done, origin_s, stop, leave_s))
        await asyncio.sleep(max(0.0, opens_s - now_s()))
        await asyncio.to_thread(self.sampler.begin_window, window, gpus)  # a counter read may take milliseconds
        try:
            if schedule.measured_to_s is not None:  # the window's end, or the load's if a stop came first
                await asyncio.wait([client], timeout=max(0.0, origin_s + schedule.measured_to_s - now_s()))
            else:
                await asyncio.wait([client])
        finally:
            measurement = await asyncio.to_thread(self.sampler.end_window, window)
        records = await client
        counted_s = None
        if schedule.measured_to_s is not None:  # a stopped round counts what was due until its window closed
            stopped = any(record.error == STOPPED for record in records)
            counted_s = (opens_s, measurement.end_s if stopped else origin_s + schedule.measured_to_s)
        return Round(index, tuple(records), measurement, measurement.duration_s, counted_s)

    async def _send(
        self,
        schedule: Schedule,
        on_done: Callable[[int, int], None] | None,
        start_s: float | None = None,
        stop_when: Callable[[RequestRecord], bool] | None = None,
        cancel_after_s: Sequence[float | None] | None = None,
    ) -> list[RequestRecord]:
        url, model = self.endpoint.url, self.endpoint.model
        return await run_schedule(url, model, schedule.requests, schedule.due_offsets_s, schedule.max_concurrency,
                                  self.timeout_s, on_done, start_s=start_s, stop_when=stop_when,
                                  follows=schedule.follows, salt_cache=schedule.cache_salted,
                                  cancel_after_s=cancel_after_s)  # fmt: skip

    def _round(
        self,
        window: str,
        index: int,
        prompts_for: Callable[[int], list[list[int]]],
        count: int,
        output_len: int,
        concurrency: int,
        min_window_s: float,
    ) -> Round:
        self.sampler.begin_window(window, tuple(self.endpoint.gpu_roles))
        started_s = now_s()
        records: list[RequestRecord] = []
        repeats = 0
        try:
            while repeats == 0 or now_s() - started_s < min_window_s:
                records += self._load(prompts_for(count), output_len, concurrency)
                repeats += 1
        finally:
            ended_s = now_s()
            measurement = self.sampler.end_window(window)
        return Round(index, tuple(records), measurement, ended_s - started_s, repeats=repeats)

    def _load(
        self, prompts: list[list[int]], output_len: int, concurrency: int, measured: bool = True
    ) -> list[RequestRecord]:
        on_done = self.on_request_done if measured else None
        url, model = self.endpoint.url, self.endpoint.model
        return _run(run_load(url, model, prompts, output_len, concurrency, self.timeout_s, on_done))


def _stop(schedule: Schedule, stop_when: StopWhen | None) -> Callable[[RequestRecord], bool] | None:
    """The client's per-answer test: ``stop_when`` over the answered requests among those the round counts (in
    steady state, those due in the measured stretch)."""
    if stop_when is None:
        return None
    low_s = schedule.measured_from_s if schedule.measured_from_s is not None else -math.inf
    high_s = schedule.measured_to_s if schedule.measured_to_s is not None else math.inf
    counted = {i for i, offset_s in enumerate(schedule.due_offsets_s) if low_s <= offset_s <= high_s}
    answered: list[RequestRecord] = []

    def test(record: RequestRecord) -> bool:
        if record.index in counted:
            answered.append(record)
        return stop_when(answered, len(counted))

    return test


def _run(load: Coroutine[Any, Any, T]) -> T:
    """``asyncio.run``, but Ctrl-C surfaces as a plain ``KeyboardInterrupt`` from here: since Python 3.11 asyncio
    turns SIGINT into cancelling its task and re-raises with the loop's frames attached, one of which can lack a
    line number and crash pytest's report of the interruption (the servers are stopped either way)."""
    try:
        return asyncio.run(load)
    except KeyboardInterrupt:
        raise KeyboardInterrupt("interrupted while requests were in flight") from None

"""What one benchmark measured, as the runner hands it to the analysis: per round its requests and its power
window. Above the load and power stages, whose records and windows it holds; below the analysis, which reads it
and never the runner that made it."""

from __future__ import annotations

from dataclasses import dataclass

from plugin.power.window import WindowMeasurement
from plugin.records.requests import RequestRecord


@dataclass(frozen=True, slots=True)
class Round:
    """One round: its requests, its power window and how long it took."""

    index: int
    records: tuple[RequestRecord, ...]
    window: WindowMeasurement
    duration_s: float
    counted_s: tuple[float, float] | None = None
    """In steady state, the schedule's measured stretch on the clock: only the requests due in it count (the rest
    warmed the server up or kept the batch full). It is the schedule's, not the window's edges, which open a few
    milliseconds late by chance: every topology that met the same schedule counts the same requests."""
    repeats: int = 1
    """How many times the round's load ran in its window to make the window ``min_window_s`` long."""

    @property
    def steady_state(self) -> bool:
        return self.counted_s is not None


@dataclass(frozen=True, slots=True)
class Measurement:
    """One benchmark's measurement: its warm-up requests, its rounds, and the server's counters around them."""

    warmup: tuple[RequestRecord, ...]
    rounds: tuple[Round, ...]
    metrics_before: dict[str, float]
    """The server's ``/metrics`` counters just before the first round and just after the last."""
    metrics_after: dict[str, float]

    @property
    def records(self) -> list[RequestRecord]:
        return [record for one_round in self.rounds for record in one_round.records]

"""One accounting per round: which requests and which work every figure of a round counts, defined once.

Two sets, each for its own kind of figure (docs/results-schema.md, "One accounting"):

- **The counted requests** (latency, SLO attainment): every request of the round, or in steady state those due
  inside the schedule's measured stretch. The stretch is the schedule's, so every topology that met the same
  schedule is judged on the same requests, whatever its speed.
- **The work inside the window** (throughput, energy per unit of work): the round's power window
  ``[start_s, end_s]`` measured the energy, so its figures divide by what was done inside it: the requests that
  completed inside it, the prompt tokens of the prefills that ended inside it (first token inside), the output
  tokens that arrived inside it, and with goodput targets the good requests that completed inside it and their
  output tokens. Work done after the window closed (a saturated server draining its queue) is in no figure of it.

A closed-loop round's window spans its requests whole, so there the two sets are the same. Pure functions.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Protocol

from plugin.analysis.goodput import is_good
from plugin.measurement import Round
from plugin.option_values import GoodputTargets
from plugin.records.requests import RequestRecord


class WorkRecord(Protocol):
    """What the accounting needs of ``plugin.records.requests.RequestRecord``."""

    @property
    def due_s(self) -> float: ...
    @property
    def send_s(self) -> float: ...
    @property
    def first_token_s(self) -> float | None: ...
    @property
    def end_s(self) -> float: ...
    @property
    def prompt_len(self) -> int: ...
    @property
    def prompt_tokens(self) -> int | None: ...
    @property
    def token_times_s(self) -> tuple[float, ...]: ...
    @property
    def ok(self) -> bool: ...


@dataclass(frozen=True, slots=True)
class Work:
    """What was done inside one window (or several windows' sums)."""

    window_s: float
    completed: int
    """Requests that succeeded and ended inside the window."""
    prompt_tokens: int
    """Prompt tokens of the requests whose first token came inside the window."""
    output_tokens: int
    """Output tokens that arrived inside the window."""
    good_completed: int | None = None
    """Of ``completed``, those that met the goodput targets; ``None`` without targets."""
    good_output_tokens: int | None = None
    """Output tokens of the good requests that arrived inside the window; ``None`` without targets."""

    def __add__(self, other: Work) -> Work:
        return Work(
            self.window_s + other.window_s,
            self.completed + other.completed,
            self.prompt_tokens + other.prompt_tokens,
            self.output_tokens + other.output_tokens,
            _add(self.good_completed, other.good_completed),
            _add(self.good_output_tokens, other.good_output_tokens),
        )


def work_inside(
    records: Iterable[WorkRecord], start_s: float, end_s: float, good: Iterable[WorkRecord] | None = None
) -> Work:
    """The work of ``records`` done inside ``[start_s, end_s]``; ``good`` (a subset of ``records``, given with
    goodput targets) adds the good completions and their output tokens."""
    done = [r for r in records if r.ok and r.first_token_s is not None]

    def inside(t_s: float) -> bool:
        return start_s <= t_s <= end_s

    good_done = None if good is None else [r for r in good if r.ok and r.first_token_s is not None]
    return Work(
        window_s=end_s - start_s,
        completed=sum(1 for r in done if inside(r.end_s)),
        prompt_tokens=sum(_prompt_tokens(r) for r in done if inside(r.first_token_s or 0.0)),
        output_tokens=sum(1 for r in done for t_s in r.token_times_s if inside(t_s)),
        good_completed=None if good_done is None else sum(1 for r in good_done if inside(r.end_s)),
        good_output_tokens=(
            None if good_done is None else sum(1 for r in good_done for t_s in r.token_times_s if inside(t_s))
        ),
    )


def counted(records: Sequence[WorkRecord], stretch_s: tuple[float, float] | None) -> list[WorkRecord]:
    """The round's counted requests: all of them, or those due inside the steady-state stretch."""
    if stretch_s is None:
        return list(records)
    start_s, end_s = stretch_s
    return [record for record in records if start_s <= record.due_s < end_s]


def arrival_rate_rps(rounds: Iterable[tuple[Sequence[float], tuple[float, float] | None]]) -> float | None:
    """The load the rounds actually offered, from each round's ``(due times of its counted requests, steady-state
    stretch or None)``: arrivals over the stretch they were counted in, or for a schedule of a fixed number of
    requests, the gaps between its arrivals over their span (n arrivals make n - 1 gaps); summed over rounds.
    ``None`` where it is not defined (all at once, fewer than two arrivals)."""
    arrivals = span_s = 0.0
    for due_s, stretch_s in rounds:
        if stretch_s is not None:
            arrivals += len(due_s)
            span_s += stretch_s[1] - stretch_s[0]
        elif len(due_s) >= 2:
            arrivals += len(due_s) - 1
            span_s += max(due_s) - min(due_s)
    return arrivals / span_s if span_s > 0 else None


def rates(work: Work) -> dict[str, float | None]:
    """Throughputs of the work inside the windows: completions and tokens over the windows' time."""
    window_s = work.window_s

    def per_s(count: int | None) -> float | None:
        return None if count is None or window_s <= 0 else count / window_s

    figures = {
        "request_throughput": per_s(work.completed),
        "output_throughput": per_s(work.output_tokens),
        "total_token_throughput": per_s(work.prompt_tokens + work.output_tokens),
    }
    if work.good_completed is not None:
        figures["goodput_rps"] = per_s(work.good_completed)
    return figures


def window_keys(work: Work) -> dict[str, float | int | None]:
    """The work's counts under the summary's names (``window_*``), the denominators of its figures."""
    keys: dict[str, float | int | None] = {
        "window_s": work.window_s,
        "window_completed": work.completed,
        "window_prompt_tokens": work.prompt_tokens,
        "window_output_tokens": work.output_tokens,
    }
    if work.good_completed is not None:
        keys["window_good_completed"] = work.good_completed
        keys["window_good_output_tokens"] = work.good_output_tokens
    return keys


def _prompt_tokens(record: WorkRecord) -> int:
    return record.prompt_tokens if record.prompt_tokens is not None else record.prompt_len


def _add(a: int | None, b: int | None) -> int | None:
    return None if a is None or b is None else a + b


def per_unit(energy_j: float | None, count: int | None) -> float | None:
    """Energy over a count of work; ``None`` when either is missing or the count is 0 (never a division by 0)."""
    return None if energy_j is None or count is None or count <= 0 or not math.isfinite(energy_j) else energy_j / count


def energy_per_work(energy_j: float | None, work: Work) -> dict[str, float | None]:
    """Every figure of the window's energy over its work: the one definition of each (results schema's names)."""
    figures = {
        "energy_j": energy_j,
        "energy_per_prompt_token_j": per_unit(energy_j, work.prompt_tokens),
        "energy_per_output_token_j": per_unit(energy_j, work.output_tokens),
        "energy_per_request_j": per_unit(energy_j, work.completed),
        "output_tokens_per_j": None if energy_j is None or energy_j <= 0 else work.output_tokens / energy_j,
    }
    if work.good_completed is not None:
        figures["energy_per_good_request_j"] = per_unit(energy_j, work.good_completed)
        figures["energy_per_good_output_token_j"] = per_unit(energy_j, work.good_output_tokens)
    return figures


def round_work(one_round: Round, goodput: GoodputTargets | None) -> Work:
    """The work done inside the round's power window (with targets: which of it was good)."""
    good = None if goodput is None else [record for record in one_round.records if is_good(record, goodput)]
    return work_inside(one_round.records, one_round.window.start_s, one_round.window.end_s, good)


def counted_records(one_round: Round) -> list[RequestRecord]:
    """Every request of a round, or in steady state those due inside its schedule's measured stretch."""
    return counted(one_round.records, one_round.counted_s)  # type: ignore[return-value]


def goodput_note(records: Sequence[WorkRecord], work: Work) -> str | None:
    """Why a benchmark with goodput targets has no attainment or no goodput."""
    if not records:
        return "no request was counted: no SLO attainment"
    if not work.good_completed:
        return "no good request completed inside the power window: no goodput, energy per good request undefined"
    return None


def window_note(rounds: Sequence[Round], work: Work) -> str | None:
    """Why a steady-state benchmark has no figure per request: no request completed inside its windows."""
    if work.completed or not any(r.steady_state for r in rounds):
        return None
    return ("no request completed inside a power window: each request took longer than the window, so it has no "
            "request throughput and no figure per request (make --duration-s minus --warmup-s longer than a "
            "request's E2E; tokens per J and J per token stand)")  # fmt: skip

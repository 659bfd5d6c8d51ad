"""The ML.ENERGY benchmark's figures for a run measured the way it measures, beside the suite's own.

Their rules, read from ``mlenergy/benchmark/llm/benchmark.py`` of github.com/ml-energy/benchmark (commit c1d6557,
the ``mlenergy.benchmark`` release): every request is sent at once (``request_rate`` inf, no client cap), the
server's batch is bounded by vLLM's ``--max-num-seqs`` B, and of N requests:

- the steady state begins when B requests have received their first token (``RequestTracker``'s
  ``notify_request_started``, called on a request's first token) and ends when N - B - 1 requests have finished
  (``notify_request_finished``: the ``- 1`` ends it a little early so that no ramp-down is in it);
- ``steady_state_energy_per_token`` = the GPUs' energy over that window (Zeus's ``begin_window``/``end_window``,
  the NVML energy counter) / the output tokens streamed inside it;
- the energy of a response (``energy_per_generation``) = that J per token x its output tokens; the mean,
  "Average energy per generation", = J per token x total output tokens / completed requests.

Here the window's energy is the power curves' over that stretch, each GPU's anchored to its counter over the round
(counter / integral), as the suite's own phase split is. A round that repeated its load (``--min-window-s``) or
where N - B - 1 requests end before B first tokens has no ML.ENERGY window: the view says why. Pure functions.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from plugin.analysis.accounting import WorkRecord
from plugin.power.window import WindowMeasurement

MLENERGY_KEY = "mlenergy"
"""Where a benchmark's summary keeps the view (only with ``--mlenergy-max-num-seqs``)."""
SOURCE = "github.com/ml-energy/benchmark mlenergy/benchmark/llm/benchmark.py @ c1d6557"


def steady_state(records: Sequence[WorkRecord], max_num_seqs: int) -> tuple[float, float] | str:
    """ML.ENERGY's steady-state window of one burst of requests, or why it has none."""
    firsts = sorted(r.first_token_s for r in records if r.first_token_s is not None)
    ends = sorted(r.end_s for r in records)
    finished_needed = len(records) - max_num_seqs - 1
    if len(firsts) < max_num_seqs:
        return f"only {len(firsts)} requests got a first token, fewer than the batch of {max_num_seqs}"
    if finished_needed < 1:
        return (f"{len(records)} requests for a batch of {max_num_seqs}: the steady state needs more than "
                f"{max_num_seqs + 1} (their rule ends it when N - B - 1 have finished)")  # fmt: skip
    start_s, end_s = firsts[max_num_seqs - 1], ends[finished_needed - 1]
    if end_s <= start_s:
        return "N - B - 1 requests finished before B first tokens came: no steady state"
    return start_s, end_s


def window_energy_j(window: WindowMeasurement, start_s: float, end_s: float) -> float | None:
    """The GPUs' energy over ``[start_s, end_s]`` inside the window: each GPU's curve, scaled by its counter over
    its integral (the counter's size, the samples' shape); ``None`` without power."""
    if not window.measured:
        return None
    total = 0.0
    for gpu in window.gpus:
        curve = window.curves.get(gpu.gpu)
        part = None if not curve else curve.energy_j(start_s, end_s)
        if part is None:
            return None
        counter, samples = gpu.energy_counter_j, gpu.energy_samples_j
        total += part * (counter / samples if counter is not None and samples else 1.0)
    return total


def mlenergy_view(
    rounds: Sequence[tuple[Sequence[WorkRecord], WindowMeasurement, int]],
    max_num_seqs: int,
    suite: Mapping[str, Any],
) -> dict[str, Any]:
    """The figures by ML.ENERGY's definitions over every round (``(records, window, repeats)``), beside the suite's
    own (``suite``: the benchmark's summary, its ``energy_per_output_token_j`` and ``energy_per_request_j``)."""
    energy_j = seconds_s = 0.0
    tokens = output_tokens = completed = 0
    why = None
    for records, window, repeats in rounds:
        if repeats > 1:
            why = f"a round repeated its load {repeats} times (--min-window-s): not one burst; give --min-window-s 0"
            break
        found = steady_state(records, max_num_seqs)
        if isinstance(found, str):
            why = found
            break
        start_s, end_s = found
        part = window_energy_j(window, start_s, end_s)
        if part is None:
            why = window.unmeasured_reason or "no power samples over the steady state"
            break
        energy_j += part
        seconds_s += end_s - start_s
        tokens += sum(1 for r in records if r.ok for t_s in r.token_times_s if start_s <= t_s <= end_s)
        done = [r for r in records if r.ok]
        completed += len(done)
        output_tokens += sum(len(r.token_times_s) for r in done)
    per_token = None if why or not tokens else energy_j / tokens
    return {
        "source": SOURCE,
        "max_num_seqs": max_num_seqs,
        "steady_state_s": None if why else seconds_s,
        "steady_state_energy_j": None if why else energy_j,
        "steady_state_output_tokens": None if why else tokens,
        "steady_state_energy_per_token_j": per_token,
        "energy_per_generation_j": None
        if per_token is None or not completed
        else per_token * output_tokens / completed,
        "suite_energy_per_output_token_j": suite.get("energy_per_output_token_j"),
        "suite_energy_per_request_j": suite.get("energy_per_request_j"),
        "why_not": why,
    }


def benchmark_view(
    disaggregated: bool,
    engines: int,
    all_at_once: bool,
    rounds: Sequence[tuple[Sequence[WorkRecord], WindowMeasurement, int]],
    max_num_seqs: int,
    suite: Mapping[str, Any],
) -> dict[str, Any]:
    """The view of one serving benchmark, or why it has none: ML.ENERGY measures one vLLM server (``--max-num-seqs``
    bounds each of its ``engines``, so the batch is ``engines`` x B) under a burst of every request at once."""
    batch = max_num_seqs * engines
    if disaggregated:
        why = "ML.ENERGY measures one vLLM server, not prefill and decode instances"
    elif not all_at_once:
        why = "the requests did not all arrive at once (give --request-rate inf)"
    else:
        return {**mlenergy_view(rounds, batch, suite), "engines": engines}
    return {"source": SOURCE, "max_num_seqs": batch, "engines": engines, "why_not": why}

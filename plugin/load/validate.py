"""Trace and session files read and checked when the options are parsed, before any server starts: a file that
cannot be replayed as asked is a usage error then, not a failed benchmark after minutes of server start-up."""

from __future__ import annotations

import sys
from collections.abc import Iterable

from plugin.load.sessions import read_sessions
from plugin.load.traces import TRACE_KINDS, replay
from plugin.option_values import DatasetSpec, TraceSlice


def check_replay_files(
    datasets: Iterable[DatasetSpec], time_scale: float, window: TraceSlice, max_model_len: int | None
) -> None:
    """Read every trace (its slice too, and with a ``--max-model-len`` whether any request fits) and every sessions
    file; ``BenchError`` names the file and line of the first problem."""
    for spec in datasets:
        if spec.path is None:
            continue
        if spec.kind in TRACE_KINDS:
            replay(spec.kind, spec.path, time_scale, window, max_model_len or sys.maxsize)
        elif spec.kind == "sessions":
            read_sessions(spec.path)

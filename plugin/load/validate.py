"""Dataset, trace and session files read and checked when the options are parsed, before any server starts: a file
that cannot be used as asked is a usage error then, not a failed benchmark after minutes of server start-up; entries
that cannot be read are skipped, and each file that had some gets one line to show."""

from __future__ import annotations

import sys
from collections.abc import Iterable

from plugin.load.datasets import Skipped, read_pairs
from plugin.load.sessions import read_sessions
from plugin.load.traces import TRACE_KINDS, replay
from plugin.option_values import DatasetSpec, TraceSlice


def check_input_files(
    datasets: Iterable[DatasetSpec], time_scale: float, window: TraceSlice, max_model_len: int | None
) -> list[str]:
    """Read every dataset file (its text is tokenized later, by the served model's tokenizer), trace (its slice too,
    and with a ``--max-model-len`` whether any request fits) and sessions file; ``BenchError`` names the file and
    line of the first problem. Returns a line for each file whose unreadable entries were skipped."""
    notes = []
    for spec in datasets:
        if spec.path is None:
            continue
        skipped: Skipped
        if spec.kind in TRACE_KINDS:
            skipped = replay(spec.kind, spec.path, time_scale, window, max_model_len or sys.maxsize).skipped
        elif spec.kind == "sessions":
            skipped = read_sessions(spec.path).skipped
        else:
            skipped = read_pairs(spec.kind, spec.path)[1]
        note = skipped.note(spec.path)
        if note is not None:
            notes.append(note)
    return notes

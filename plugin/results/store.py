"""The run's results on disk: ``results.json`` (header and benchmark summaries, rewritten atomically after every
benchmark so that an interrupted run keeps what it measured) and one JSONL file of request records per benchmark
beside it, written once. ``load_run`` reads them back as typed results (``plugin.records.results``)."""

from __future__ import annotations

import json
import os
import re
import tempfile
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from plugin.records.results import SCHEMA_VERSION, BenchmarkResult, StoredRequest, from_json, to_json

RESULTS_FILE = "results.json"


def write_json_atomic(path: Path, data: dict[str, Any]) -> None:
    """Write to a temporary file beside ``path`` and rename it over: readers never see half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        os.chmod(handle, 0o644)  # mkstemp makes it private; results are meant to be shared
        with os.fdopen(handle, "w") as stream:
            json.dump(data, stream, indent=1, default=str)
            stream.write("\n")
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


class ResultsFile:
    """The run's results document; every change is written through to disk at once."""

    def __init__(self, path: Path, header: dict[str, Any]) -> None:
        self.path = path
        self.data: dict[str, Any] = {
            "schema_version": SCHEMA_VERSION,
            **header,
            "status": "running",
            "benchmarks": [],
        }
        self.benchmarks: list[BenchmarkResult] = []
        write_json_atomic(self.path, self.data)

    @classmethod
    def reopen(cls, path: Path) -> ResultsFile:
        """An earlier run's results to go on with (``--resume``): its header and benchmarks kept, ``status`` back to
        running and the time it was taken up again in ``resumed_at``."""
        stored = load_run(path.parent)
        results = cls.__new__(cls)
        results.path = path
        results.data = {**json.loads(path.read_text()), "status": "running"}
        results.data["resumed_at"] = [*results.data.get("resumed_at", []), datetime.now(UTC).isoformat()]
        results.benchmarks = list(stored.benchmarks)
        write_json_atomic(path, results.data)
        return results

    def update(self, **fields: Any) -> None:
        self.data.update(fields)
        write_json_atomic(self.path, self.data)

    def add_benchmark(
        self, result: BenchmarkResult, requests: Iterable[StoredRequest], entry: Mapping[str, Any] | None = None
    ) -> None:
        """Write the benchmark's request records to its JSONL file, then its entry: ``entry`` where conftest hooks
        added fields to ``to_json(result)``, else that. ``benchmarks`` keeps the typed results in memory."""
        write_requests(self.path.parent / result.requests_file, requests)
        self.benchmarks.append(result)
        self.data["benchmarks"].append(dict(entry) if entry is not None else to_json(result))
        write_json_atomic(self.path, self.data)


def requests_file_name(index: int, name: str) -> str:
    """``requests-003-test_prefill-traditional-in512-out1-c4.jsonl``: ordered, and safe on any file system."""
    return f"requests-{index:03d}-{re.sub(r'[^A-Za-z0-9_.-]+', '-', name).strip('-')[:120]}.jsonl"


def write_requests(path: Path, requests: Iterable[StoredRequest]) -> None:
    temporary = path.with_name(f".{path.name}.tmp")
    with temporary.open("w") as stream:
        for request in requests:
            stream.write(json.dumps(to_json(request), separators=(",", ":")) + "\n")
    os.replace(temporary, path)


@dataclass(frozen=True)
class StoredRun:
    """A run folder read back: the header (everything in ``results.json`` but the benchmarks) and the benchmarks,
    typed; request records are read from their JSONL files only when asked for."""

    folder: Path
    header: dict[str, Any]
    benchmarks: tuple[BenchmarkResult, ...]

    def requests(self, benchmark: BenchmarkResult, warmup: bool = False) -> list[StoredRequest]:
        """The benchmark's measured request records (and the warm-up's, if asked), in the order they were sent."""
        return [r for r in read_requests(self.folder / benchmark.requests_file) if warmup or r.round is not None]


def read_requests(path: Path) -> Iterator[StoredRequest]:
    with path.open() as stream:
        for line in stream:
            if line.strip():
                yield from_json(StoredRequest, json.loads(line))


def load_run(folder: Path) -> StoredRun:
    """Read ``folder/results.json``; ``ValueError`` for another schema version, naming the one found."""
    path = folder / RESULTS_FILE
    data: dict[str, Any] = json.loads(path.read_text())
    if data.get("schema_version") != SCHEMA_VERSION:
        raise ValueError(
            f"{path}: schema_version {data.get('schema_version')!r}, expected {SCHEMA_VERSION} "
            "(a run made by another version of the suite)"
        )
    benchmarks = tuple(from_json(BenchmarkResult, entry) for entry in data.pop("benchmarks", []))
    return StoredRun(folder, data, benchmarks)


def keep_earlier_files(folder: Path) -> Path | None:
    """Move an earlier session's power samples and server logs into ``folder/earlier-N/`` before a resumed session
    writes its own under the same names; the folder, or ``None`` when there was nothing to move."""
    files = [*folder.glob("power_gpu*.csv"), *folder.glob("*.log")]
    if not files:
        return None
    index = 1 + sum(1 for _ in folder.glob("earlier-*"))
    kept = folder / f"earlier-{index}"
    kept.mkdir()
    for file in files:
        file.rename(kept / file.name)
    return kept

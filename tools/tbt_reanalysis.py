"""TBT of stored runs under both definitions, to see what the per-chunk ITL (d284070) moves in a record.

Before, a streamed chunk carrying k tokens gave k token times of its arrival, so k - 1 gaps of zero; now TBT is the
gap between chunks, as vLLM's ``bench serve`` times ITL (``plugin.analysis.stats.tbt_gaps_s``). Per benchmark, over
the counted requests of every round (the ones its stored summary describes, ``plugin.analysis.accounting``): the
chunks carrying more than one token, TBT as the summary now gives it (``plugin.analysis.stats.summarize``) and as
the old definition gave it (every gap between consecutive token times, the zero ones included), and the relative
change of mean and p99. Request files compressed with xz (``requests-*.jsonl.xz`` beside a ``results.json`` that
names them without ``.xz``) are read unpacked into a temporary folder.

Usage: ``python tools/tbt_reanalysis.py RUN [RUN ...]`` (run folders with results.json and request files).
"""

from __future__ import annotations

import argparse
import lzma
import shutil
import sys
import tempfile
from dataclasses import dataclass
from itertools import groupby, pairwise
from pathlib import Path

from plugin.analysis.accounting import counted
from plugin.analysis.stats import distribution, summarize
from plugin.reanalyse import counted_stretch
from plugin.records.requests import RequestRecord
from plugin.results.store import StoredRun, load_run

KINDS = ("mean", "median", "p90", "p99")


@dataclass(frozen=True, slots=True)
class TbtChange:
    """One benchmark's TBT under the old (per token) and the new (per chunk) definition, in ms."""

    name: str
    chunks: int
    multi_token_chunks: int
    old_ms: dict[str, float | None]
    new_ms: dict[str, float | None]

    @property
    def multi_token_pct(self) -> float:
        return 100.0 * self.multi_token_chunks / self.chunks if self.chunks else 0.0

    def change_pct(self, kind: str) -> float | None:
        old, new = self.old_ms[kind], self.new_ms[kind]
        return None if old is None or new is None or old == 0 else 100.0 * (new - old) / old


def old_tbt_gaps_s(record: RequestRecord) -> list[float]:
    """The definition before d284070: a gap per pair of consecutive tokens, zero inside a chunk."""
    return [later - earlier for earlier, later in pairwise(record.token_times_s)]


def counted_records(run: StoredRun) -> dict[str, list[RequestRecord]]:
    """Each benchmark's counted requests over all its rounds, as its summary counted them."""
    found: dict[str, list[RequestRecord]] = {}
    for benchmark in run.benchmarks:
        stored = run.requests(benchmark)
        records: list[RequestRecord] = []
        for window in benchmark.power.windows:
            in_round = [request.record for request in stored if request.round == window.round]
            records += counted(in_round, counted_stretch(run.header, benchmark, window, in_round))  # type: ignore[arg-type]
        found[benchmark.name] = records
    return found


def changes(records_by_name: dict[str, list[RequestRecord]]) -> list[TbtChange]:
    """Per benchmark: its chunks (a run of equal token times is one chunk) and its TBT under both definitions."""
    rows = []
    for name, records in records_by_name.items():
        done = [r for r in records if r.ok and r.first_token_s is not None]
        sizes = [len(list(tokens)) for r in done for _, tokens in groupby(r.token_times_s)]
        new = summarize(records)
        old = distribution("tbt", [gap for r in done for gap in old_tbt_gaps_s(r)])
        rows.append(
            TbtChange(
                name,
                len(sizes),
                sum(1 for size in sizes if size > 1),
                {kind: old[f"{kind}_tbt_ms"] for kind in KINDS},
                {kind: new[f"{kind}_tbt_ms"] for kind in KINDS},
            )
        )
    return rows


def read_run(folder: Path, unpacked: Path) -> StoredRun:
    """The run, its xz-compressed request files unpacked under ``unpacked`` where the plain ones are absent."""
    run = load_run(folder)
    if all((folder / b.requests_file).is_file() for b in run.benchmarks):
        return run
    for benchmark in run.benchmarks:
        plain, packed = folder / benchmark.requests_file, folder / f"{benchmark.requests_file}.xz"
        source = plain.open("rb") if plain.is_file() else lzma.open(packed)
        with source, (unpacked / benchmark.requests_file).open("wb") as target:
            shutil.copyfileobj(source, target)
    return StoredRun(unpacked, run.header, run.benchmarks)


def table(rows: list[TbtChange]) -> str:
    lines = [
        "| benchmark | chunks | multi-token chunks | mean TBT ms old → new | median | p90 | p99 | mean Δ | p99 Δ |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for row in rows:
        cells = [f"{_cell(row.old_ms[kind], '.3g')} → {_cell(row.new_ms[kind], '.3g')}" for kind in KINDS]
        cells += [_cell(row.change_pct(kind), "+.1f", " %") for kind in ("mean", "p99")]
        lines.append(
            f"| {row.name} | {row.chunks:,} | {row.multi_token_chunks:,} ({row.multi_token_pct:.1f} %) | "
            f"{' | '.join(cells)} |"
        )
    return "\n".join(lines)


def _cell(value: float | None, spec: str, unit: str = "") -> str:
    return "-" if value is None else f"{value:{spec}}{unit}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("runs", nargs="+", type=Path, help="run folders holding results.json and request files")
    args = parser.parse_args(argv)
    for folder in args.runs:
        with tempfile.TemporaryDirectory() as unpacked:
            rows = changes(counted_records(read_run(folder, Path(unpacked))))
        print(f"## {folder}\n\n{table(rows)}\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())

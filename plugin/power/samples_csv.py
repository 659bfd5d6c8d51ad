"""One GPU's samples as a CSV file, streamed to disk as they come and read back for attribution and reports.

Empty cells are ``None`` (not measured). ``energy_mj`` is filled only on the rows where the sampler read the
energy counter (window edges and its slower cadence).
"""

from __future__ import annotations

import csv
from pathlib import Path
from typing import TextIO

from plugin.power.backend import Sample

COLUMNS = (
    "t_s",
    "gpu",
    "power_instant_w",
    "power_avg_w",
    "sm_clock_mhz",
    "mem_clock_mhz",
    "util_gpu_pct",
    "mem_used_mib",
    "temp_c",
    "throttle_reasons",
    "energy_mj",
    "error",
)


class SampleCsvWriter:
    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self.rows = 0
        self._file: TextIO = path.open("w", newline="", encoding="utf-8")
        self._writer = csv.writer(self._file)
        self._writer.writerow(COLUMNS)

    def write(self, sample: Sample, energy_mj: int | None = None) -> None:
        self._writer.writerow(
            (
                repr(sample.t_s),
                sample.gpu,
                _cell(sample.power_instant_w),
                _cell(sample.power_avg_w),
                _cell(sample.sm_clock_mhz),
                _cell(sample.mem_clock_mhz),
                _cell(sample.util_gpu_pct),
                _cell(sample.mem_used_mib),
                _cell(sample.temp_c),
                _cell(sample.throttle_reasons),
                _cell(energy_mj),
                sample.error or "",
            )
        )
        self.rows += 1

    def flush(self) -> None:
        self._file.flush()

    def close(self) -> None:
        self._file.close()

    @property
    def closed(self) -> bool:
        return self._file.closed


def read_samples(path: Path, start_s: float | None = None, end_s: float | None = None) -> list[Sample]:
    """The samples with ``start_s <= t_s <= end_s`` (either bound optional)."""
    samples = []
    with path.open(newline="", encoding="utf-8") as file:
        for row in csv.DictReader(file):
            t_s = float(row["t_s"])
            if (start_s is not None and t_s < start_s) or (end_s is not None and t_s > end_s):
                continue
            samples.append(
                Sample(
                    t_s=t_s,
                    gpu=int(row["gpu"]),
                    power_instant_w=_float(row["power_instant_w"]),
                    power_avg_w=_float(row["power_avg_w"]),
                    sm_clock_mhz=_int(row["sm_clock_mhz"]),
                    mem_clock_mhz=_int(row["mem_clock_mhz"]),
                    util_gpu_pct=_int(row["util_gpu_pct"]),
                    mem_used_mib=_int(row["mem_used_mib"]),
                    temp_c=_int(row["temp_c"]),
                    throttle_reasons=_int(row["throttle_reasons"]),
                    error=row["error"] or None,
                )
            )
    return samples


def read_energy_readings(path: Path) -> list[tuple[float, int]]:
    """``(t_s, energy_mj)`` for every row that carries a counter reading."""
    with path.open(newline="", encoding="utf-8") as file:
        return [(float(row["t_s"]), int(row["energy_mj"])) for row in csv.DictReader(file) if row["energy_mj"]]


def _cell(value: float | int | None) -> str:
    if value is None:
        return ""
    return repr(value) if isinstance(value, float) else str(value)


def _float(cell: str) -> float | None:
    return float(cell) if cell else None


def _int(cell: str) -> int | None:
    return int(cell) if cell else None

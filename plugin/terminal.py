"""The suite's section of pytest's terminal summary: one line per benchmark, power notes, where results are."""

from __future__ import annotations

from typing import Any

from plugin.power.nvml_loader import STAND_IN_ENV, stand_in
from plugin.session import RunSession


def write_dvfs_plan(terminalreporter: Any, lines: list[str]) -> None:
    terminalreporter.section("pd-energy-bench: DVFS dry run (nothing changed, nothing run)")
    for line in lines:
        terminalreporter.write_line(line)
    _write_stand_in(terminalreporter.write_line)


def write_summary(terminalreporter: Any, run: RunSession, report_line: str | None) -> None:
    assert run.results is not None
    write = terminalreporter.write_line
    terminalreporter.section("pd-energy-bench")
    header = (
        f"{'benchmark':<44} {'ok':>5} {'TTFT ms':>9} {'p99':>9} {'TPOT ms':>8} {'E2E ms':>9} {'out tok/s':>10} "
        f"{'energy J':>9}"
    )
    write(header)
    for entry in run.results.benchmarks:
        s = entry.summary
        write(
            f"{entry.name[:44]:<44} {s['completed']:>2}/{s['requests']:<2} {_ms(s['mean_ttft_ms']):>9} "
            f"{_ms(s['p99_ttft_ms']):>9} {_ms(s['mean_tpot_ms']):>8} {_ms(s['mean_e2el_ms']):>9} "
            f"{_ms(s['output_throughput']):>10} {_ms(s.get('energy_j')):>9}"
        )
    power = run.results.data.get("power") or {}
    for line in [power.get("unmeasured_reason"), *power.get("notes", [])]:
        if line:
            write(f"power: {line}")
    for refused in run.results.data.get("dvfs_refused", []):
        write(f"dvfs refused: {refused['benchmark']}: {'; '.join(refused['refused'])}")
    if run.settings.dvfs_requested:
        _write_stand_in(write)
    write(f"results: {run.results.path}")
    if report_line:
        write(report_line)


def _write_stand_in(write: Any) -> None:
    if stand_in():
        write(f"NVML STAND-IN ({STAND_IN_ENV}={stand_in()}): no GPU setting was changed; this checks the plumbing")


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f}"

"""``python -m plugin.reanalyse RUN [--out DIR]``: a stored run folder recomputed with the current analysis, so
that figures published from an older analysis can be corrected from what was measured.

It rebuilds what a live run holds in memory when it assembles a benchmark (``plugin.measurement.Measurement``) from
the run's files, then goes through the live run's own steps: ``benchmark_result``, the energy card and the DVFS
analysis of ``pytest_sessionfinish``, and the report. From the files:

- each round's request records, from the benchmark's JSONL file;
- each round's power window, per GPU, fed to the sampler's own ``WindowAccumulator`` with the samples of the
  GPU's CSV between the window's stored edges (seeded with the last sample before it, as the sampler seeds it);
  the counter's energy, idle power and sensor interval are the stored window's (the counter is read at the
  edges in the caller's thread and never written to the CSV);
- in steady state, the schedule's measured stretch (``Round.counted_s``): ``[origin + warmup_s, origin +
  duration_s - cooldown_s)``, where ``origin`` is the round's earliest due time (an open loop's first arrival is
  due at 0) and ``warmup_s`` / ``cooldown_s`` are the header's ``settings``; a run that did not store them gets
  the stored power window's edges, which open a few milliseconds after the stretch, and a request due in those
  milliseconds is counted differently (the command says so where the count of a round changes);
- what cannot be recomputed is kept as stored: the server's ``/metrics`` figures (``prefix_cache``,
  ``server_phases``), the serving plan's ``offered_rate_rps`` and ``dataset``, and fields that conftest hooks
  added to an entry. A Ray run's clock-offset bound is not stored either: its ± loses that part.

In place, the old ``results.json`` is kept as ``results.before-reanalysis.json`` (the first one, if there are
several re-analyses); with ``--out`` the run's files are copied to a new folder and the original is left as it is.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import shutil
import sys
from bisect import bisect_left, bisect_right
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from plugin.analysis.answer import answer_json, run_answers
from plugin.analysis.benchmark import benchmark_result
from plugin.analysis.capacity import Resolution
from plugin.analysis.cost import COST_KEY, stored_prices
from plugin.analysis.dvfs import analyse
from plugin.analysis.energy_card import energy_card_json
from plugin.analysis.server_phases import PHASE_HISTOGRAMS
from plugin.errors import BenchError
from plugin.load.schedule import arrivals_of
from plugin.measurement import Measurement, Round
from plugin.option_values import DEFAULT_SLO_ATTAINMENT_PCT, GoodputTargets
from plugin.power.backend import Sample
from plugin.power.samples_csv import read_samples
from plugin.power.window import IdleBaseline, WindowAccumulator, WindowMeasurement
from plugin.records.requests import RequestRecord
from plugin.records.results import BenchmarkResult, PowerWindow, to_json
from plugin.records.topology import parse_topology
from plugin.records.windows import BaselineOrigin
from plugin.results.store import RESULTS_FILE, StoredRun, load_run, write_json_atomic

BACKUP_FILE = "results.before-reanalysis.json"
KEPT_SUMMARY_KEYS = (
    "prefix_cache", "server_phases", "dataset", "arrival_scaling", "sweep_ends", "probe_wall_s", "stopped_early"
)  # fmt: skip
"""Summary figures of the server's ``/metrics`` and of the serving plan: not in the run's files, kept as stored."""
_ENTRY_FIELDS = {field.name for field in dataclasses.fields(BenchmarkResult)}


class ReanalysisError(BenchError):
    """A run folder that cannot be re-analysed: a file it names is missing, or it holds no benchmark."""


def reanalyse(folder: Path, out: Path | None = None, say: Callable[[str], None] = print) -> Path:
    """Recompute ``folder``'s results (into ``out`` when given) and rebuild its report; returns the new
    ``results.json``. ``say`` gets a line for each round whose counted requests changed."""
    run = load_run(folder)
    _check_files(run)
    if out is not None and (out / RESULTS_FILE).exists():
        raise ReanalysisError(f"{out} holds a run already: give a new folder")
    samples = _samples_by_gpu(run)
    data = json.loads((folder / RESULTS_FILE).read_text())
    entries = []
    benchmarks = []
    for benchmark, entry in zip(run.benchmarks, data["benchmarks"], strict=True):
        result = recompute(run, benchmark, samples, say)
        benchmarks.append(result)
        hooked = {key: value for key, value in entry.items() if key not in _ENTRY_FIELDS}
        entries.append({**hooked, **to_json(result)})
    header = {key: value for key, value in data.items() if key != "benchmarks"}
    header.update(run_end(benchmarks, header))
    target = folder if out is None else _copy_run(folder, out)
    if out is None and not (folder / BACKUP_FILE).exists():
        shutil.copyfile(folder / RESULTS_FILE, folder / BACKUP_FILE)
    path = target / RESULTS_FILE
    write_json_atomic(path, {**header, "benchmarks": entries})
    from plugin.report import build_report  # matplotlib: only when a report is made

    build_report(target)
    return path


def recompute(
    run: StoredRun,
    benchmark: BenchmarkResult,
    samples: Mapping[int, Sequence[Sample]],
    say: Callable[[str], None] = print,
) -> BenchmarkResult:
    """One benchmark through ``benchmark_result`` again, from its measurement as rebuilt from the files."""
    measurement = rebuild_measurement(run, benchmark, samples, say)
    summary = benchmark.summary
    goodput = _goodput(summary.get("goodput_targets_ms"))
    result = benchmark_result(
        benchmark.id, benchmark.name, parse_topology(benchmark.topology_name), benchmark.workload, measurement,
        {int(gpu): role for gpu, role in benchmark.power.gpu_roles.items()}, benchmark.dvfs, benchmark.requests_file,
        benchmark.gpu_budget, goodput, summary.get("offered_rate_rps"), stored_prices(summary.get(COST_KEY)),
        benchmark.power.excluded_gpus,
    )  # fmt: skip
    result.summary.update({key: summary[key] for key in KEPT_SUMMARY_KEYS if key in summary})
    return result


def rebuild_measurement(
    run: StoredRun,
    benchmark: BenchmarkResult,
    samples: Mapping[int, Sequence[Sample]],
    say: Callable[[str], None] = print,
) -> Measurement:
    """The benchmark's ``Measurement`` as the runner made it; the server's ``/metrics`` scrapes are not stored, so
    their growth is rebuilt from the stored ``server_phases`` (``server_scrapes``)."""
    stored = run.requests(benchmark, warmup=True)
    warmup = tuple(request.record for request in stored if request.round is None)
    rounds = []
    for position, window in enumerate(benchmark.power.windows):
        records = tuple(request.record for request in stored if request.round == window.round)
        measured = window_measurement(f"{benchmark.id} round {window.round}", benchmark, window, samples)
        counted_s = counted_stretch(run.header, benchmark, window, records)
        stored_round = benchmark.rounds[position] if position < len(benchmark.rounds) else {}
        one_round = Round(
            window.round, records, measured, measured.duration_s, counted_s, int(stored_round.get("repeats", 1))
        )
        _check_counted(benchmark, one_round, stored_round, _has_stretch(run.header), say)
        rounds.append(one_round)
    return Measurement(warmup, tuple(rounds), *server_scrapes(benchmark.summary.get("server_phases") or {}))


def server_scrapes(server_phases: Mapping[str, Any]) -> tuple[dict[str, float], dict[str, float]]:
    """Two ``/metrics`` scrapes whose histograms grew by what ``server_phases`` stored: the analysis reads only the
    growth (the server's mean prefill time keeps waiting out of prefill: ``plugin.analysis.energy``)."""
    before: dict[str, float] = {}
    after: dict[str, float] = {}
    figures = [server_phases.get(phase) or {} for phase in PHASE_HISTOGRAMS]
    tokens = server_phases.get("iteration_tokens") or {}
    growth = [(f.get("metric"), f.get("count"), f.get("sum_s")) for f in figures]
    growth.append((tokens.get("metric"), tokens.get("steps"), tokens.get("tokens")))
    for metric, count, total in growth:
        if metric is None or count is None or total is None:
            continue
        before.update({f"{metric}_count": 0.0, f"{metric}_sum": 0.0})
        after.update({f"{metric}_count": float(count), f"{metric}_sum": float(total)})
    return before, after


def window_measurement(
    name: str, benchmark: BenchmarkResult, window: PowerWindow, samples: Mapping[int, Sequence[Sample]]
) -> WindowMeasurement:
    """The window as ``Sampler.end_window`` returned it: each GPU's samples fed to a ``WindowAccumulator`` between
    its stored edges, its counter energy, idle power and sensor interval as stored."""
    gpus, curves, clocks = [], {}, {}
    for key, energy in window.gpus.items():
        stored = energy.window
        gpu = int(key)
        seed, inside = _around(samples.get(gpu, ()), stored.start_s, stored.end_s)
        counter_j = stored.energy_counter_j
        accumulator = WindowAccumulator(gpu, stored.start_s, None if counter_j is None else 0, seed)
        for sample in inside:
            accumulator.add(sample)
        counter_end_mj = None if counter_j is None else round(counter_j * 1000)  # stored as mJ / 1000
        idle = None
        if stored.idle_power_w is not None:  # the baseline the window used, as stored (its origin too)
            origin = stored.idle_baseline_origin or BaselineOrigin(None, None, stored.start_s, stored.start_s)
            idle = IdleBaseline(stored.idle_baseline, origin, {gpu: stored.idle_power_w})
        finished = accumulator.finish(stored.end_s, counter_end_mj, idle, stored.sensor_interval_s)
        gpus.append(dataclasses.replace(finished, idle_baseline_origin=stored.idle_baseline_origin))
        curves[gpu], clocks[gpu] = accumulator.curve, accumulator.clocks
    power = benchmark.power
    return WindowMeasurement(
        name, power.backend, window.start_s, window.end_s, tuple(gpus), window.notes, power.unmeasured_reason,
        curves, clocks,
    )  # fmt: skip


def counted_stretch(
    header: Mapping[str, Any], benchmark: BenchmarkResult, window: PowerWindow, records: Sequence[RequestRecord]
) -> tuple[float, float] | None:
    """The schedule's measured stretch on the clock (steady state), else ``None``: see the module's docstring."""
    arrivals = arrivals_of(benchmark.workload, benchmark.summary.get("offered_rate_rps"), 0.0, 0.0)
    if arrivals.duration_s is None or not records:
        return None
    if not _has_stretch(header):
        return window.start_s, window.end_s
    settings = header["settings"]
    origin_s = min(record.due_s for record in records)
    return origin_s + float(settings["warmup_s"]), origin_s + arrivals.duration_s - float(settings["cooldown_s"])


def run_end(benchmarks: Sequence[BenchmarkResult], header: Mapping[str, Any]) -> dict[str, Any]:
    """The header's figures that ``pytest_sessionfinish`` computes over every benchmark: the energy card, where the
    run swept DVFS settings the DVFS analysis, and where it searched capacity the answer, each under the run's own
    targets, threshold and stopping rule."""
    fields: dict[str, Any] = {"energy_card": energy_card_json(benchmarks)}
    dvfs = header.get("dvfs")
    if dvfs:
        goodput = _goodput(dvfs.get("goodput_targets_ms"))
        attainment_pct = (header.get("settings") or {}).get("slo_attainment_pct") or DEFAULT_SLO_ATTAINMENT_PCT
        analysis = analyse(benchmarks, dvfs.get("slo_ttft_ms"), dvfs.get("slo_tbt_ms"), goodput, attainment_pct)
        fields["dvfs"] = {**dvfs, "analysis": analysis}
    if header.get("capacity") is not None:
        settings = header.get("settings") or {}
        attainment_pct = settings.get("slo_attainment_pct") or DEFAULT_SLO_ATTAINMENT_PCT
        resolution = Resolution(settings.get("capacity_resolution_rps"), settings.get("capacity_resolution_pct"))
        found = run_answers(benchmarks, attainment_pct, resolution, int(settings.get("max_probes") or 0))
        fields["capacity"] = [answer_json(one) for one in found]
    return fields


def _goodput(targets_ms: Mapping[str, float] | None) -> GoodputTargets | None:
    """The targets back from ``plugin.analysis.goodput.targets_ms``'s form."""
    if targets_ms is None:
        return None
    return GoodputTargets(targets_ms.get("ttft"), targets_ms.get("tpot"), targets_ms.get("e2el"))


def _check_files(run: StoredRun) -> None:
    """Every file the re-analysis reads, before anything is written."""
    if run.header.get("resumed_at") and any(run.folder.glob("earlier-*")):
        raise ReanalysisError(
            f"cannot re-analyse {run.folder}: it was resumed (--resume), and each session's power samples are apart "
            "(earlier-N/), which re-analysis does not read yet; its stored figures stand as measured"
        )
    missing = [run.folder / benchmark.requests_file for benchmark in run.benchmarks]
    csv_names = (run.header.get("power") or {}).get("samples_csv") or {}
    for gpu in sorted(_measured_gpus(run)):
        name = csv_names.get(str(gpu))
        if name is None:
            raise ReanalysisError(
                f"{run.folder / RESULTS_FILE}: GPU {gpu} was measured but the header's power.samples_csv names no "
                "sample file for it"
            )
        missing.append(run.folder / name)
    absent = [path for path in missing if not path.is_file()]
    if absent:
        more = f" and {len(absent) - 1} more of its files" if len(absent) > 1 else ""
        raise ReanalysisError(
            f"cannot re-analyse {run.folder}: {absent[0]}{more} missing (re-analysis needs every request record "
            "file and power sample file the run wrote)"
        )
    if not run.benchmarks:
        raise ReanalysisError(f"{run.folder / RESULTS_FILE} holds no benchmark: nothing to re-analyse")


def _measured_gpus(run: StoredRun) -> set[int]:
    return {int(gpu) for b in run.benchmarks for window in b.power.windows for gpu in window.gpus}


def _samples_by_gpu(run: StoredRun) -> dict[int, list[Sample]]:
    """Each measured GPU's samples, in time order, read once (a merged run's CSV holds several runs')."""
    names = (run.header.get("power") or {}).get("samples_csv") or {}
    found: dict[int, list[Sample]] = {}
    for gpu in sorted(_measured_gpus(run)):
        samples = [sample for sample in read_samples(run.folder / names[str(gpu)]) if sample.gpu == gpu]
        found[gpu] = sorted(samples, key=lambda sample: sample.t_s)
    return found


def _around(samples: Sequence[Sample], start_s: float, end_s: float) -> tuple[Sample | None, Sequence[Sample]]:
    """The last sample before ``start_s`` (the sampler's seed) and the samples in ``[start_s, end_s]``."""
    times = [sample.t_s for sample in samples]
    first = bisect_left(times, start_s)
    return (samples[first - 1] if first else None), samples[first : bisect_right(times, end_s)]


def _has_stretch(header: Mapping[str, Any]) -> bool:
    """Whether the run stored the steady state's ``warmup_s`` and ``cooldown_s`` (else: the window's edges)."""
    settings = header.get("settings") or {}
    return settings.get("warmup_s") is not None and settings.get("cooldown_s") is not None


def _check_counted(
    benchmark: BenchmarkResult,
    one_round: Round,
    stored_round: Mapping[str, Any],
    stretch_stored: bool,
    say: Callable[[str], None],
) -> None:
    if one_round.counted_s is None or "requests" not in stored_round:
        return
    start_s, end_s = one_round.counted_s
    counted = sum(1 for record in one_round.records if start_s <= record.due_s < end_s)
    if counted != stored_round["requests"]:
        why = "" if stretch_stored else (
            " (the header stores no warmup_s/cooldown_s: the stretch is the power window's, whose edges open a few "
            "ms after the schedule's)"
        )  # fmt: skip
        say(f"{benchmark.name} round {one_round.index}: {counted} requests counted, {stored_round['requests']} when "
            f"it ran{why}")  # fmt: skip


def _copy_run(folder: Path, out: Path) -> Path:
    """The run's files in ``out``, but its report (rebuilt there) and an earlier re-analysis's backup."""
    shutil.copytree(folder, out, dirs_exist_ok=True, ignore=shutil.ignore_patterns("charts", "index.html", BACKUP_FILE))
    return out


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m plugin.reanalyse", description=__doc__.split("\n\n")[0])
    parser.add_argument("run", type=Path, help="a run folder holding results.json, its request records and power CSVs")
    parser.add_argument("--out", type=Path, help="write the re-analysed run here instead of in place")
    args = parser.parse_args(argv)
    if not (args.run / RESULTS_FILE).is_file():
        parser.error(f"{args.run}: no results.json there; give a run folder such as reports/<run-id>")
    try:
        print(reanalyse(args.run, args.out, say=lambda line: print(line, file=sys.stderr)))
    except (BenchError, ValueError, OSError) as error:
        parser.error(str(error))


if __name__ == "__main__":
    main()

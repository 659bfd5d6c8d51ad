"""The suite's section of pytest's terminal summary: a capacity search's answer first, then a line per phase
benchmark (latency, throughput, the energy figure of its phase ± its 95 % interval), a line per serving benchmark
(rate, SLO attainment, goodput), power notes (short windows flagged "!", repeated loads), a line per energy card,
where results are."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from plugin.analysis.cache_savings import cache_savings, saving_line
from plugin.analysis.capacity import is_probe
from plugin.analysis.phase_figures import energy_figures
from plugin.analysis.stats import LAG_LIMIT_MS
from plugin.analysis.uncertainty import FIGURE_KEYS, MIN_SENSOR_UPDATES
from plugin.analysis.uncharged import uncharged_line
from plugin.analysis.verdict import attainment_of, serving_points, verdicts
from plugin.power.nvml_loader import STAND_IN_ENV, stand_in
from plugin.records.results import BenchmarkResult
from plugin.records.workload import SERVING
from plugin.session import RunSession
from plugin.terminal_cost import name_width, write_cost, write_mlenergy


def write_dvfs_plan(terminalreporter: Any, lines: list[str]) -> None:
    terminalreporter.section("pd-energy-bench: DVFS dry run (nothing changed, nothing run)")
    for line in lines:
        terminalreporter.write_line(line)
    _write_stand_in(terminalreporter.write_line)


def write_summary(terminalreporter: Any, run: RunSession, report_line: str | None) -> None:
    assert run.results is not None
    write = terminalreporter.write_line
    terminalreporter.section("pd-energy-bench")
    for found in run.results.data.get("capacity") or []:  # the answer first, the evidence below it
        for line in found["lines"]:
            write(line)
    phases = [entry for entry in run.results.benchmarks if entry.phase != SERVING]
    serving = [entry for entry in run.results.benchmarks if entry.phase == SERVING]
    if phases:
        _phase_table(write, phases)
    if serving:
        _serving_table(write, serving)
        for entry in serving:
            for line in reuse_lines(entry.name, entry.summary) + ramp_lines(entry.name, entry.summary):
                write(line)
        for saving in cache_savings(serving):
            write(saving_line(saving))
        if len({entry.topology_name for entry in serving}) > 1:
            _per_gpu_table(write, serving)
            _verdicts(write, serving, run.settings.slo_attainment_pct)
    for line in kv_handoff_lines(run.results.benchmarks):
        write(line)
    write_cost(write, run.results.benchmarks, run.settings.slo_attainment_pct)
    write_mlenergy(write, run.results.benchmarks)
    _energy_notes(write, run.results.benchmarks, run.settings.min_window_s)
    for card in run.results.data.get("energy_card") or []:
        write(_energy_card_line(card))
    ignored = [entry for entry in run.results.benchmarks if entry.summary.get("output_length_ignored")]
    if ignored:  # once for the run: a server that ignores the length ignores it in every benchmark
        write(
            f"the server ignored the requested output length in {len(ignored)} benchmark(s) (first: "
            f"{ignored[0].name}, {ignored[0].summary['output_length_ignored']} requests): it did not honour "
            "ignore_eos/max_tokens, so output tokens and per-token figures count what it sent, not what was asked"
        )
    for entry in run.results.benchmarks:
        if entry.summary.get("client_kept_up") is False:
            write(
                f"client fell behind in {entry.name}: p99 send lag {entry.summary['p99_send_lag_ms']:.1f} ms "
                f"(limit {LAG_LIMIT_MS:g} ms); its requests left late, so the offered load was lower than asked "
                "(on a small CPU machine the servers take the client's cores)"
            )
    if not run.settings.gpus and any(entry.architecture == "disaggregated" for entry in run.results.benchmarks):
        write(
            "CPU: the prefill and decode instances share this machine's cores (one OpenMP thread each, idle ones "
            "asleep) and go through the proxy, so disaggregated TTFT and TPOT here are no GPU disaggregation result"
        )
    power = run.results.data.get("power") or {}
    uncharged = uncharged_line(run.results.benchmarks, run.results.data.get("power_gpus") or [])
    for line in [power.get("unmeasured_reason"), *power.get("notes", []), uncharged]:
        if line:
            write(f"power: {line}")
    for refused in run.results.data.get("dvfs_refused", []):
        write(f"dvfs refused: {refused['benchmark']}: {'; '.join(refused['refused'])}")
    if run.settings.dvfs_requested:
        _write_stand_in(write)
    write(f"results: {run.results.path}")
    if report_line:
        write(report_line)


def _phase_table(write: Callable[[str], None], entries: list[BenchmarkResult]) -> None:
    """Latency (medians, as the report shows them, and TTFT's p99), throughput and the one energy figure of each
    benchmark's phase (``energy_figures``)."""
    width = name_width(entries, "benchmark")
    write(
        f"{'benchmark':<{width}} {'ok':>5} {'TTFT p50 ms':>11} {'TTFT p99 ms':>11} {'TPOT p50 ms':>11} "
        f"{'E2E p50 ms':>10} {'out tok/s':>10} {'energy (95 %)':>28}"
    )
    for entry in entries:
        s = entry.summary
        write(
            f"{entry.name:<{width}} {s['completed']:>2}/{s['requests']:<2} {_ms(s['median_ttft_ms']):>11} "
            f"{_ms(s['p99_ttft_ms']):>11} {_ms(s['median_tpot_ms']):>11} {_ms(s['median_e2el_ms']):>10} "
            f"{_ms(s['output_throughput']):>10} {_phase_energy(entry):>28}"
        )


def _serving_table(write: Callable[[str], None], entries: list[BenchmarkResult]) -> None:
    """Offered (nominal, then as the arrivals were drawn) against achieved rate, tail latency, SLO attainment,
    goodput and energy per (good) request."""
    width = name_width(entries, "serving benchmark")
    write("")
    write(
        f"{'serving benchmark':<{width}} {'ok':>7} {'offered/s':>9} {'arrived/s':>9} {'req/s':>7} {'TTFT p99 ms':>11} "
        f"{'TPOT p99 ms':>11} {'SLO met (95 %)':>15} {'good/s':>7} {'J/req':>15} {'J/good req':>15}"
    )
    for entry in entries:
        s = entry.summary
        offered = s.get("offered_rate_rps")
        attainment = attainment_of(s)
        write(
            f"{entry.name:<{width}} {s['completed']:>3}/{s['requests']:<3} "
            f"{'all' if offered is None else f'{offered:.2f}':>9} {_ms(s.get('arrival_rate_rps'), 2):>9} "
            f"{_ms(s['request_throughput'], 2):>7} "
            f"{_ms(s['p99_ttft_ms']):>11} {_ms(s['p99_tpot_ms']):>11} "
            f"{'-' if attainment is None else f'{attainment.pct:.0f}% ({attainment.interval_text()})':>15} "
            f"{_ms(s.get('goodput_rps'), 2):>7} "
            f"{_energy(entry, 'energy_per_request_j', s.get('energy_per_request_j')):>15} "
            f"{_energy(entry, 'energy_per_good_request_j', s.get('energy_per_good_request_j')):>15}"
        )


def reuse_lines(name: str, summary: dict[str, Any]) -> list[str]:
    """Prefix reuse as the server reported it (and its ``/metrics`` cross-check), per turn of sessions, and the
    requests a trace or sessions file dropped, by reason."""
    lines = []
    rate, metrics_rate = summary.get("prefix_hit_rate"), (summary.get("prefix_cache") or {}).get("hit_rate")
    if rate is not None or metrics_rate is not None:
        turns = "; ".join(
            f"turn {t['turn'] + 1}: {_pct(t['prefix_hit_rate'])} cached, TTFT {_ms(t['mean_ttft_ms'])} ms"
            + _share_j(t, " J")
            for t in summary.get("turns") or []
        )
        hit, miss = (summary.get(f"prefill_j_per_prompt_token_{key}") for key in ("cache_hit", "no_cache_hit"))
        prefill = (
            "" if hit is None or miss is None else f"; prefill J/prompt token {hit:.3g} with a hit, {miss:.3g} without"
        )
        lines.append(
            f"prefix reuse {name}: {_pct(rate)} of prompt tokens cached (server's usage; /metrics "
            f"{_pct(metrics_rate)}){prefill}{f'; {turns}' if turns else ''}"
        )
    dropped = (summary.get("dataset") or {}).get("dropped")
    if dropped:
        reasons = ", ".join(f"{count} {reason.replace('_', ' ')}" for reason, count in dropped.items())
        lines.append(f"dropped from {name}'s dataset: {reasons}")
    return lines


def kv_handoff_lines(entries: list[BenchmarkResult]) -> list[str]:
    """Per disaggregated benchmark, the KV blocks its hand-off moved against its prompt tokens
    (``plugin.analysis.kv_handoff``); where the connector named none, one line with decode's cached share instead."""
    lines, unnamed = [], []
    for entry in entries:
        handoff = entry.summary.get("kv_handoff")
        if handoff is None:
            continue
        if handoff["blocks"] is None:
            unnamed.append(f"{entry.name} {_pct(entry.summary.get('prefix_hit_rate'))}")
            continue
        per_block = handoff["prompt_tokens_per_block"]
        lines.append(
            f"KV hand-off {entry.name}: {handoff['blocks']} blocks moved for {handoff['prompt_tokens']} prompt tokens "
            f"of {handoff['requests']} requests ({'-' if per_block is None else f'{per_block:.3g}'} prompt tokens per "
            "block)"
        )
    if unnamed:
        lines.append(
            "KV hand-off: the connector names no blocks moved; decode's cached share of prompt tokens (the KV it "
            f"loaded or already held rather than computed): {', '.join(unnamed)}"
        )
    return lines


def ramp_lines(name: str, summary: dict[str, Any]) -> list[str]:
    """A ramp-up benchmark's stages (``plugin.analysis.ramp``): nominal rates, arrived rate, TTFT p99, J/request."""
    return [
        f"ramp {name} stage {stage['stage'] + 1}: {stage['from_rps']:.3g}-{stage['to_rps']:.3g} req/s nominal, "
        f"{_ms(stage['arrival_rate_rps'], 2)} arrived, {stage['completed']}/{stage['requests']} ok, TTFT p99 "
        f"{_ms(stage['p99_ttft_ms'])} ms, TPOT p99 {_ms(stage['p99_tpot_ms'])} ms" + _share_j(stage, " J/request")
        for stage in summary.get("ramp_stages") or []
    ]


def _share_j(figures: dict[str, Any], unit: str) -> str:
    """``, 1.23±0.05 J``: a turn's or ramp stage's mean J per request and its ± (95 %), where measured."""
    value, spread = figures.get("energy_per_request_j"), figures.get("energy_per_request_pm_j")
    if value is None:
        return ""
    return f", {value:.3g}" + ("" if spread is None else f"±{spread:.2g}") + unit


def _pct(share: float | None) -> str:
    return "-" if share is None else f"{share * 100:.0f} %"


def _per_gpu_table(write: Callable[[str], None], entries: list[BenchmarkResult]) -> None:
    """Topologies side by side on their GPU budget: every GPU of it charged, idle ones included."""
    width = name_width(entries, "per GPU of the budget")
    write("")
    write(
        f"{'per GPU of the budget':<{width}} {'GPUs':>5} {'req/s/GPU':>10} {'good/s/GPU':>11} {'out tok/J':>15} "
        f"{'J/good req':>15}"
    )
    for entry in entries:
        s = entry.summary
        write(
            f"{entry.name:<{width}} {entry.gpu_budget:>5} {_ms(s.get('request_throughput_per_gpu_rps'), 2):>10} "
            f"{_ms(s.get('goodput_per_gpu_rps'), 2):>11} "
            f"{_energy(entry, 'output_tokens_per_j', s.get('output_tokens_per_j')):>15} "
            f"{_energy(entry, 'energy_per_good_request_j', s.get('energy_per_good_request_j')):>15}"
        )


def _verdicts(write: Callable[[str], None], entries: list[BenchmarkResult], attainment_pct: float) -> None:
    """The report's verdict per rate range (``plugin.analysis.verdict``), where targets were given; each line names
    the attainment target, which ``--slo-attainment`` may have moved from 90 %, and that its interval decides. A
    capacity search's probes are left out: each topology's are at its own rates, and the answer judges them."""
    points = serving_points(entry for entry in entries if not is_probe(entry))
    for verdict in verdicts(points, attainment_pct):
        write(
            f"verdict ({verdict.dataset}, SLO attainment target {attainment_pct:g} %, judged on its 95 % interval): "
            f"{verdict.text()}"
        )


def _phase_energy(entry: BenchmarkResult) -> str:
    unit = {"j_per_prompt_token": "J/prompt tok", "j_per_output_token": "J/out tok", "j_per_request": "J/req"}
    key, value = next(iter(energy_figures(entry).items()))
    return _energy(entry, FIGURE_KEYS[key], value, f" {unit.get(key, key)}", 4)


def _energy(entry: BenchmarkResult, key: str, value: float | None, unit: str = "", digits: int = 3) -> str:
    """``value ± half-width unit``, and "!" when a window rests on too few sensor updates (``_energy_notes``)."""
    if value is None:
        return "-"
    spread = entry.power.uncertainty.get(key)
    shown = f"{value:.{digits}g}" + ("" if spread is None else f"±{spread:.2g}") + unit
    return shown + ("!" if entry.power.short_window else "")


def _energy_notes(write: Callable[[str], None], entries: list[BenchmarkResult], min_window_s: float) -> None:
    """Why a figure is flagged, which rounds repeated their load, and what the ± is made of."""
    for entry in entries:
        power = entry.power
        if power.short_window and power.sensor_updates_min is not None:
            write(
                f"! {entry.name}: a power window lasted only {power.sensor_updates_min:.1f} sensor updates (under "
                f"{MIN_SENSOR_UPDATES}), so the window's edges weigh on its energy; a longer --min-window-s helps"
            )
    for entry in entries:
        if entry.summary.get("window_note"):
            write(f"! {entry.name}: {entry.summary['window_note']}")
    for entry in entries:
        repeats = sorted({int(r.get("repeats") or 1) for r in entry.rounds})
        if repeats and repeats[-1] > 1:
            times = str(repeats[0]) if len(repeats) == 1 else f"{repeats[0]} to {repeats[-1]}"
            write(f"{entry.name}: each round ran its load {times} times to fill a {min_window_s:g} s power window")
    measured = [entry for entry in entries if entry.power.uncertainty]
    if measured:
        one_round = any(entry.power.uncertainty_parts.get("rounds") is None for entry in measured)
        write(
            "energy ± is a 95 % interval: spread between rounds, sensor updates at the window edges and counter vs "
            "samples, combined (docs/energy-uncertainty.md)"
            + ("; with one round it has no spread between rounds (more --rounds give it)" if one_round else "")
        )


def _energy_card_line(card: dict[str, Any]) -> str:
    """One card (``plugin.analysis.energy_card``): its costs ± 95 % where it has a fit, else only why not."""
    name = card["topology"] + (f", DVFS {card['dvfs_setting']}" if card["dvfs_setting"] else "")
    if card["coefficients"] is None:
        return f"energy card {name}: no fit: {card['why_no_fit']}"
    terms = ", ".join(
        f"{key} 0 (pinned at 0: see the card's notes)" if c["half_width_95"] is None
        else f"{key} {c['value']:.4g}±{c['half_width_95']:.2g}"
        for key, c in card["coefficients"].items()
    )  # fmt: skip
    return f"energy card {name}: {terms} ({card['windows']} windows, weights: {card['weights']})"


def _write_stand_in(write: Any) -> None:
    if stand_in():
        write(f"NVML STAND-IN ({STAND_IN_ENV}={stand_in()}): no GPU setting was changed; this checks the plumbing")


def _ms(value: float | None, digits: int = 1) -> str:
    return "-" if value is None else f"{value:.{digits}f}"

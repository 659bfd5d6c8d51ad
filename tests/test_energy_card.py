"""The energy card (``plugin.analysis.energy_card``) on constructed windows with a known answer: recovered exactly
without noise, intervals that hold the truth with noise (and about 95 % of the time over many noisy runs, weighted
or not), weights that pull the fit toward the precise windows, costs kept non-negative and a pinned one flagged,
the busy-time term kept only where it matters, a card that says why (and gives no number) when the windows cannot
determine the fit, the stored GPU records' four-window cards among them, and the card stored in ``results.json``
and shown in the terminal by the plugin at the end of a run."""

from __future__ import annotations

import json
import math
import random
from collections.abc import Sequence
from pathlib import Path

import pytest

from plugin.analysis.accounting import Work, rates
from plugin.analysis.energy_card import (
    Coefficient,
    WindowPoint,
    energy_card_json,
    energy_cards,
    fit_points,
    window_sigma_j,
)
from plugin.analysis.stats import summarize
from plugin.records.results import BenchmarkPower, BenchmarkResult, GpuEnergy, PhaseSplit, PowerWindow, from_json
from plugin.records.windows import GpuWindow
from plugin.records.workload import Workload
from plugin.report.data import load_run

A_J, B_J, C_W = 0.01, 0.3, 40.0
NO_SUMMARY = {**summarize([]), **rates(Work(0.0, 0, 0, 0))}
"""The card reads no summary figure: an empty one."""
"""The truth: J per prompt token, J per output token, W above idle while busy."""
IDLE_W = 50.0
DURATION_S = 10.0
Window = tuple[int, int, float, float]
"""prompt tokens, output tokens, busy seconds, energy above idle (J)."""


def holds(coefficient: Coefficient, value: float) -> bool:
    """Whether the coefficient's 95 % interval holds ``value`` (a pinned one has none)."""
    return coefficient.high is not None and coefficient.low < value < coefficient.high


def truth(prompt: int, output: int, busy_s: float = 0.0, c_w: float = 0.0) -> float:
    return A_J * prompt + B_J * output + c_w * busy_s


def split(prompt: int, output: int, busy_s: float) -> PhaseSplit:
    return PhaseSplit(
        prefill_j=None, decode_j=None, idle_j=None, prefill_above_idle_j=None, decode_above_idle_j=None,
        prefill_s=busy_s / 2, decode_s=busy_s / 2, overlap_s=0.0, idle_s=DURATION_S - busy_s, requests=4,
        prompt_tokens=prompt, output_tokens=output, integral_j=None, j_per_prompt_token=None,
        j_per_output_token=None, j_per_request=None,
    )  # fmt: skip


def gpu_window(
    gpu: int,
    start_s: float,
    energy_j: float,
    idle_w: float | None,
    sensor_interval_s: float | None = None,
    samples_j: float | None = None,
) -> GpuWindow:
    above = None if idle_w is None else energy_j - idle_w * DURATION_S
    return GpuWindow(
        gpu=gpu, start_s=start_s, end_s=start_s + DURATION_S, energy_counter_j=energy_j,
        energy_samples_j=energy_j if samples_j is None else samples_j, disagreement_pct=0.0,
        mean_power_w=energy_j / DURATION_S, max_power_w=None, mean_sm_clock_mhz=None, throttled_s=None,
        throttle_reasons_s=(), idle_power_w=idle_w, energy_above_idle_j=above, samples=100, sample_errors=0,
        power_source="instant", sensor_interval_s=sensor_interval_s,
    )  # fmt: skip


def benchmark(
    name: str,
    phase: str,
    windows: Sequence[Window],
    architecture: str = "traditional",
    setting: str | None = None,
    topology: str = "",
    gpus: int = 1,
    idle: Sequence[bool] | None = None,
    measured: bool = True,
    sensor_interval_s: float | None = None,
) -> BenchmarkResult:
    """A benchmark whose round windows draw exactly the given energy above idle (split evenly over ``gpus``); its
    GPUs' sensor update interval, where given, gives each window an energy uncertainty."""
    power_windows = []
    for index, (prompt, output, busy_s, above_j) in enumerate(windows):
        start_s = 100.0 * index
        has_idle = True if idle is None else idle[index]
        share = above_j / gpus + IDLE_W * DURATION_S
        per_gpu = {
            str(gpu): GpuEnergy(role="prefill+decode", window=gpu_window(gpu, start_s, share, IDLE_W if has_idle
                                                                          else None, sensor_interval_s), phases=None)
            for gpu in range(gpus)
        }  # fmt: skip
        energy_j = math.fsum(g.window.energy_counter_j or 0.0 for g in per_gpu.values())
        power_windows.append(
            PowerWindow(index, start_s, start_s + DURATION_S, energy_j, per_gpu, split(prompt, output, busy_s), ())
        )
    total = math.fsum(w.energy_j or 0.0 for w in power_windows)
    power = BenchmarkPower(
        measured=measured, backend="nvml", unmeasured_reason=None if measured else "no GPU",
        gpu_roles={str(g): "prefill+decode" for g in range(gpus)}, energy_j=total, energy_per_prompt_token_j=None,
        energy_per_output_token_j=None, energy_per_request_j=None, phases=None, windows=tuple(power_windows), notes=(),
    )  # fmt: skip
    rounds = tuple({"total_input_tokens": p, "total_output_tokens": o, "energy_j": None} for p, o, _, _ in windows)
    return BenchmarkResult(
        id=f"benchmarks/test_{phase}.py::{name}", name=name, architecture=architecture, phase=phase,
        workload=Workload(phase, 100, 10, 1, 4), summary=NO_SUMMARY, rounds=rounds, power=power,
        dvfs=None if setting is None else {"setting": setting}, requests_file=f"requests-{name}.jsonl",
        topology=topology,
    )  # fmt: skip


def exact_run(c_w: float = 0.0, noise: float = 0.0, seed: int = 1) -> list[BenchmarkResult]:
    """Prefill benchmarks (1 output token a request), decode ones (16-token prompts), and end-to-end ones, three
    rounds each: the token mix varies from window to window, as in a real run."""
    rng = random.Random(seed)

    def window(prompt: int, output: int, busy_s: float) -> Window:
        exact = truth(prompt, output, busy_s, c_w)
        return prompt, output, busy_s, exact * (1.0 + rng.gauss(0.0, noise))

    return [
        benchmark("prefill-512", "prefill", [window(4 * 512, 4, 1.0 + 0.1 * r) for r in range(3)]),
        benchmark("prefill-2048", "prefill", [window(4 * 2048, 4, 3.0 + 0.1 * r) for r in range(3)]),
        benchmark("decode-64", "decode", [window(64, 4 * 64, 4.0 + 0.2 * r) for r in range(3)]),
        benchmark("decode-256", "decode", [window(64, 4 * 256, 9.0 - 0.2 * r) for r in range(3)]),
        benchmark("e2e", "e2e", [window(4 * 1000, 4 * 100, 5.0 + 0.3 * r) for r in range(3)]),
    ]


def test_a_noise_free_run_gives_back_the_exact_coefficients() -> None:
    (card,) = energy_cards(exact_run())
    assert card.why_no_fit is None and card.coefficients is not None
    assert card.windows == 15 and card.windows_skipped == 0 and card.benchmarks == 5
    assert card.regressors == ["prompt_tokens", "output_tokens"]
    prompt, output = card.coefficients["j_per_prompt_token"], card.coefficients["j_per_output_token"]
    assert prompt.value == pytest.approx(A_J, rel=1e-9) and output.value == pytest.approx(B_J, rel=1e-9)
    for half in (prompt.half_width_95, output.half_width_95):
        assert half is not None and half < 1e-9
    assert card.r_squared == pytest.approx(1.0, abs=1e-12) and card.dof == 13
    assert any("busy-time term left out" in note for note in card.notes)
    assert card.weights == "equal"  # the windows' sensor update interval is unknown
    assert "equal weights: 15 of 15 window(s) have no energy uncertainty" in " ".join(card.notes)


def test_the_cross_check_shows_the_isolated_benchmarks_beside_the_fit() -> None:
    """A prefill benchmark's own J per prompt token above idle carries its output tokens too: 0.01 + 0.3 / 512."""
    (card,) = energy_cards(exact_run())
    rows = {row.benchmark: row for row in card.cross_check}
    assert set(rows) == {"prefill-512", "prefill-2048", "decode-64", "decode-256"}  # e2e is no isolated phase
    prefill = rows["prefill-512"]
    assert prefill.figure == "j_per_prompt_token" and prefill.fitted_j == pytest.approx(A_J)
    assert prefill.isolated_j == pytest.approx(A_J + B_J / 512)
    assert prefill.predicted_j == pytest.approx(prefill.isolated_j)  # the model describes it exactly
    assert prefill.difference_pct == pytest.approx(100 * (A_J - (A_J + B_J / 512)) / (A_J + B_J / 512))
    decode = rows["decode-64"]
    assert decode.figure == "j_per_output_token" and decode.isolated_j == pytest.approx(B_J + A_J * 64 / 256)


def test_with_noise_the_intervals_hold_the_truth() -> None:
    (card,) = energy_cards(exact_run(noise=0.02, seed=7))
    assert card.coefficients is not None
    for name, true_value in (("j_per_prompt_token", A_J), ("j_per_output_token", B_J)):
        coefficient = card.coefficients[name]
        half = coefficient.half_width_95
        assert holds(coefficient, true_value) and half is not None, name
        assert 0 < half < 0.2 * true_value
        assert coefficient.low == pytest.approx(coefficient.value - half)
    assert card.r_squared is not None and 0.95 < card.r_squared < 1.0


MIXES = [(2048, 4), (8192, 4), (64, 256), (64, 1024), (4000, 400), (1000, 100), (512, 512)]


@pytest.mark.parametrize("weighted", [False, True])
def test_the_intervals_hold_the_truth_about_95_percent_of_the_time(weighted: bool) -> None:
    """Over many noisy runs with the fewest windows a fit takes (5 for 2 terms: 3 degrees of freedom), a too narrow
    interval (a normal quantile, or a wrong standard error) covers far less often. Weighted: each window's noise has
    its own sigma, 1 to 10 J, known to the fit as its energy uncertainty, as least squares with weights assumes."""
    rng = random.Random(3)
    covered, trials = 0, 400
    for _ in range(trials):
        points = []
        for p, o in rng.sample(MIXES, 5):
            sigma = rng.choice([1.0, 3.0, 10.0]) if weighted else 5.0
            energy = truth(p, o) + rng.gauss(0.0, sigma)
            points.append(WindowPoint("b", "e2e", energy, p, o, None, sigma if weighted else None))
        fit, why = fit_points(points, ("prompt_tokens", "output_tokens"))
        assert fit is not None, why
        assert fit.dof == 3 and fit.pinned == ()
        half = fit.half_widths[1]
        assert half is not None
        covered += fit.beta[1] - half < B_J < fit.beta[1] + half
    assert 0.91 < covered / trials < 0.99


def test_weights_pull_the_fit_toward_the_precise_windows() -> None:
    """Half the windows are precise (sigma 0.5 J), half noisy (sigma 60 J), and the card knows it from the GPUs'
    sensor update interval: the weighted coefficients land far nearer the truth than equal weights would, and
    their intervals are far narrower while still holding it about as often as 95 % says."""
    rng = random.Random(11)
    errors: dict[str, list[float]] = {"weighted": [], "equal": []}
    half_widths: dict[str, list[float]] = {"weighted": [], "equal": []}
    covered, trials = 0, 40
    for _ in range(trials):
        runs: dict[str, list[BenchmarkResult]] = {"weighted": [], "equal": []}
        for index, (p, o) in enumerate(MIXES * 2):
            sigma_j = 0.5 if index % 2 else 60.0
            energy = truth(p, o) + rng.gauss(0.0, sigma_j)
            # sigma = sqrt(2) x interval x mean power (two edges of one GPU; no counter-vs-samples gap)
            interval_s = sigma_j / (math.sqrt(2) * (energy + IDLE_W * DURATION_S) / DURATION_S)
            runs["weighted"].append(benchmark(f"w{index}", "e2e", [(p, o, 1.0, energy)], sensor_interval_s=interval_s))
            runs["equal"].append(benchmark(f"e{index}", "e2e", [(p, o, 1.0, energy)]))
        for kind, run in runs.items():
            (card,) = energy_cards(run)
            assert card.coefficients is not None and card.weights == {"weighted": "window energy uncertainty",
                                                                        "equal": "equal"}[kind]  # fmt: skip
            output = card.coefficients["j_per_output_token"]
            assert output.half_width_95 is not None
            errors[kind].append(abs(output.value - B_J))
            half_widths[kind].append(output.half_width_95)
            covered += kind == "weighted" and holds(output, B_J)
    mean_error, mean_half = ({kind: sum(v) / trials for kind, v in found.items()} for found in (errors, half_widths))
    assert mean_error["weighted"] < 0.1 * mean_error["equal"] and mean_error["weighted"] < 0.01 * B_J
    assert mean_half["weighted"] < 0.1 * mean_half["equal"]
    assert covered >= 0.85 * trials


def test_a_window_sigma_comes_from_its_gpus_stored_figures() -> None:
    """Two GPUs, 0.1 s sensor interval at 100 W (10 J per edge, four edges), one GPU's samples 30 J off its
    counter: sqrt(4 x 10² + 30²) = 36.06 J. Without a sensor interval it is unknown, never 0."""
    gpus = {
        "0": GpuEnergy(role="prefill", window=gpu_window(0, 0.0, 1000.0, IDLE_W, 0.1, samples_j=1030.0), phases=None),
        "1": GpuEnergy(role="decode", window=gpu_window(1, 0.0, 1000.0, IDLE_W, 0.1), phases=None),
    }
    window = PowerWindow(0, 0.0, DURATION_S, 2000.0, gpus, None, ())
    assert window_sigma_j(window) == pytest.approx(math.sqrt(4 * 10.0**2 + 30.0**2))
    unknown = {**gpus, "1": GpuEnergy(role="decode", window=gpu_window(1, 0.0, 1000.0, IDLE_W), phases=None)}
    assert window_sigma_j(PowerWindow(0, 0.0, DURATION_S, 2000.0, unknown, None, ())) is None


def test_a_negative_cost_is_pinned_at_0_and_flagged() -> None:
    """Windows whose energy falls with prompt tokens: ordinary least squares gives -0.002 J per prompt token. The
    card keeps it at 0, says so, and its output-token cost is the best fit with that held: no non-negative pair
    of costs leaves a smaller residual."""
    windows = [(p, o, 1.0, -0.002 * p + B_J * o) for p, o in MIXES]
    (card,) = energy_cards([benchmark("e2e", "e2e", windows)])
    assert card.coefficients is not None
    prompt, output = card.coefficients["j_per_prompt_token"], card.coefficients["j_per_output_token"]
    assert prompt.pinned and prompt.value == 0.0 and prompt.half_width_95 is None and prompt.high is None
    assert not output.pinned and output.value > 0 and output.half_width_95 is not None
    assert card.dof == len(windows) - 1  # one free term
    (note,) = [note for note in card.notes if "pinned" in note]
    assert note.startswith("j_per_prompt_token pinned at 0") and "-0.002 ±" in note

    def residual(a: float, b: float) -> float:
        return math.fsum((e - a * p - b * o) ** 2 for p, o, _, e in windows)

    best = residual(0.0, output.value)
    grid = [residual(a / 1e4, b / 1e3) for a in range(0, 50) for b in range(200, 400)]
    assert best <= min(grid) + 1e-9


def test_a_busy_time_term_that_would_be_negative_is_left_out() -> None:
    """Energy that falls with busy time: the non-negative fit pins the third term, and the card keeps two."""
    busy = range(1, 2 * len(MIXES) + 1)
    windows = [(p, o, busy_s, truth(p, o) - 20.0 * busy_s) for (p, o), busy_s in zip(MIXES * 2, busy, strict=True)]
    (card,) = energy_cards([benchmark("e2e", "e2e", windows)])
    assert card.regressors == ["prompt_tokens", "output_tokens"]
    assert "busy-time term left out: the non-negative fit pinned it at 0" in card.notes


def test_the_busy_time_term_is_kept_where_it_matters() -> None:
    (card,) = energy_cards(exact_run(c_w=C_W, noise=0.005, seed=2))
    assert card.coefficients is not None
    assert card.regressors == ["prompt_tokens", "output_tokens", "busy_s"]
    busy = card.coefficients["w_busy"]
    assert holds(busy, C_W) and busy.low > 0
    assert holds(card.coefficients["j_per_output_token"], B_J)
    assert any("busy-time term kept" in note for note in card.notes)
    assert card.model == (
        "energy above idle = j_per_prompt_token x prompt_tokens + j_per_output_token x output_tokens + w_busy x busy_s"
    )


FOUR_WINDOWS = [(1000 * k, 100 * k + 10 * k * k, 1.0, truth(1000 * k, 100 * k + 10 * k * k)) for k in (1, 2, 3, 4)]
"""Four windows whose prompt and output tokens rise together, as four request rates of one serving run."""


def test_too_few_windows_give_a_card_that_says_why_and_no_numbers() -> None:
    """Four windows for two terms leave 2 degrees of freedom: no number, and what to run instead."""
    (card,) = energy_cards([benchmark("serving", "serving", FOUR_WINDOWS)])
    assert card.coefficients is None and card.r_squared is None and card.dof is None and card.cross_check == []
    assert card.why_no_fit == (
        "not enough windows: 4 windows for 2 terms (need at least 5: with fewer, the fit's interval is too wide to "
        "mean anything); run more request rates (--request-rate) or more rounds (--rounds)"
    )
    one_more = FOUR_WINDOWS + [(500, 700, 1.0, truth(500, 700))]
    (card,) = energy_cards([benchmark("serving", "serving", one_more)])
    assert card.coefficients is not None and card.dof == 3
    assert "busy-time term not tried: not enough windows: 5 windows for 3 terms (need at least 8" in card.notes[-1]


def test_the_stored_four_window_gpu_cards_say_not_enough_windows() -> None:
    """The 4x H200 record printed -0.25 to 0.23 J per prompt token for 1p3d from 4 windows; read again, each of its
    cards says why it has no number, with weights from the stored window figures."""
    folder = Path(__file__).parents[1] / "docs" / "validation" / "gpu-h200x4-four-topologies" / "topologies"
    cards = energy_cards(load_run(folder).benchmarks)
    assert [card.topology for card in cards] == ["dp:4", "2p2d", "1p3d", "3p1d"]
    for card in cards:
        assert card.coefficients is None and card.windows == 4
        assert card.why_no_fit is not None and card.why_no_fit.startswith("not enough windows: 4 windows for 2 terms")
        assert card.weights == "window energy uncertainty"


def test_tokens_in_one_proportion_give_a_card_that_says_why() -> None:
    """Prompt and output tokens in the same ratio everywhere: the two costs cannot be told apart."""
    windows = [(100 * k, 10 * k, float(k), truth(100 * k, 10 * k)) for k in (1, 2, 3, 5, 8)]
    (card,) = energy_cards([benchmark("e2e", "e2e", windows)])
    assert card.coefficients is None
    assert card.why_no_fit is not None and card.why_no_fit.startswith("no variety: prompt tokens and output tokens")


def test_windows_without_an_idle_baseline_are_left_out_and_counted() -> None:
    run = exact_run()
    run[0] = benchmark("prefill-512", "prefill", [(2048, 4, 1.0, 999.0)] * 3, idle=[False, True, False])
    (card,) = energy_cards(run)
    assert card.windows == 13 and card.windows_skipped == 2
    assert "2 window(s) left out: no idle baseline" in card.notes
    assert card.coefficients is not None
    # the one window of that benchmark that has a baseline is wrong on purpose: the fit is no longer exact
    assert card.r_squared is not None and card.r_squared < 1.0


def test_cards_per_topology_and_dvfs_setting_and_only_with_power() -> None:
    """The energy of every GPU of a disaggregated window counts; two topologies of one architecture have a card
    each; an unmeasured benchmark is in no card."""
    base = exact_run()
    disaggregated = [
        benchmark(b.name, b.phase, [(w.phases.prompt_tokens, w.phases.output_tokens, 1.0, 2 * truth(
            w.phases.prompt_tokens, w.phases.output_tokens)) for w in b.power.windows if w.phases], "disaggregated",
            gpus=2)
        for b in base
    ]  # fmt: skip
    slow = [benchmark(b.name, b.phase, [(1000, 10, 1.0, 5.0)], setting="sm1500") for b in base[:2]]
    unmeasured = benchmark("nothing", "e2e", [(1000, 10, 1.0, 5.0)] * 4, architecture="other", measured=False)
    other_topology = [benchmark(f"{b.name}-1p3d", "e2e", [(1000 * k, 10 * k * k, 1.0, 9.0 * k) for k in (1, 2, 3)],
                                "disaggregated", topology="1p3d", gpus=4) for b in base[:2]]  # fmt: skip
    cards = energy_cards([*base, *disaggregated, *slow, *other_topology, unmeasured])
    assert [(c.topology, c.architecture, c.dvfs_setting) for c in cards] == [
        ("traditional", "traditional", None), ("disaggregated", "disaggregated", None),
        ("traditional", "traditional", "sm1500"), ("1p3d", "disaggregated", None),
    ]  # fmt: skip
    assert cards[1].windows == 15 and cards[3].windows == 6 and cards[3].gpus == ["0", "1", "2", "3"]
    assert cards[1].gpus == ["0", "1"] and cards[1].coefficients is not None
    assert cards[1].coefficients["j_per_output_token"].value == pytest.approx(2 * B_J)
    assert cards[2].why_no_fit is not None and cards[2].why_no_fit.startswith("not enough windows: 2 windows")
    stored = json.loads(json.dumps(energy_card_json([*base, unmeasured])))
    assert stored[0]["coefficients"]["j_per_prompt_token"]["value"] == pytest.approx(A_J)
    assert stored[0]["cross_check"][0]["benchmark"] == "prefill-512"


STORING_BENCHMARK = """
from tests.test_energy_card import FOUR_WINDOWS, benchmark, exact_run

def test_stores(bench_session):
    bench_session.open_run(None)
    results = bench_session.results
    for result in [*exact_run(), benchmark("serving", "serving", FOUR_WINDOWS, topology="1p3d")]:
        results.add_benchmark(result, [])
"""


def test_the_plugin_stores_the_card_in_the_results_header(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(STORING_BENCHMARK)
    reports = pytester.path / "reports"
    result = pytester.runpytest(f"--reports-dir={reports}", "-p", "no:cacheprovider")
    result.assert_outcomes(passed=1)
    (path,) = reports.glob("*/results.json")
    data = json.loads(path.read_text())
    assert data["status"] == "complete"
    card, unfitted = data["energy_card"]
    assert card["architecture"] == "traditional" and card["windows"] == 15 and card["weights"] == "equal"
    assert card["coefficients"]["j_per_output_token"]["value"] == pytest.approx(B_J)
    assert card["coefficients"]["j_per_output_token"]["pinned"] is False
    assert unfitted["topology"] == "1p3d" and unfitted["coefficients"] is None
    # the terminal: the fitted card's costs, and only why for the other
    result.stdout.fnmatch_lines([
        "energy card traditional: j_per_prompt_token 0.01±*, j_per_output_token 0.3±* (15 windows, weights: equal)",
        f"energy card 1p3d: no fit: {unfitted['why_no_fit']}",
    ])  # fmt: skip
    assert not any(line.startswith("energy card 1p3d") and "±" in line for line in result.outlines)


def test_a_card_reads_its_points_from_the_windows_and_round_tokens(tmp_path: Path) -> None:
    """Without a phase split the round summary gives the tokens, and the busy-time term is not tried."""
    from dataclasses import replace

    run = exact_run()
    stripped = [
        replace(b, power=replace(b.power, windows=tuple(replace(w, phases=None) for w in b.power.windows))) for b in run
    ]
    (card,) = energy_cards(stripped)
    assert card.coefficients is not None and card.coefficients["j_per_prompt_token"].value == pytest.approx(A_J)
    assert "busy-time term not tried: a window has no phase split" in card.notes


def test_a_stored_card_is_fitted_again_the_same_from_results_json() -> None:
    """A results file keeps every figure a window's weight needs: the card of benchmarks read back from JSON is the
    card of the benchmarks as run, weights included."""
    from plugin.records.results import to_json

    rng = random.Random(5)
    run = [
        benchmark(b.name, b.phase, [(w.phases.prompt_tokens, w.phases.output_tokens, 1.0 + 0.1 * i,
                                     truth(w.phases.prompt_tokens, w.phases.output_tokens) * (1 + rng.gauss(0, 0.02)))
                                    for i, w in enumerate(b.power.windows) if w.phases],
                  sensor_interval_s=0.05 + 0.05 * index)
        for index, b in enumerate(exact_run())
    ]  # fmt: skip
    stored = [from_json(BenchmarkResult, json.loads(json.dumps(to_json(b)))) for b in run]
    assert energy_card_json(stored) == energy_card_json(run)
    (card,) = energy_cards(stored)
    assert card.weights == "window energy uncertainty" and card.coefficients is not None

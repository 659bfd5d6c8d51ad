"""The energy card (``plugin.analysis.energy_card``) on constructed windows with a known answer: recovered exactly
without noise, intervals that hold the truth with noise (and about 95 % of the time over many noisy runs), the
busy-time term kept only where it matters, a card that says why when the windows cannot determine the fit, and
the card stored in ``results.json`` by the plugin at the end of a run."""

from __future__ import annotations

import json
import math
import random
from collections.abc import Sequence
from pathlib import Path

import pytest

from plugin.analysis.accounting import Work, rates
from plugin.analysis.energy_card import (
    WindowPoint,
    energy_card_json,
    energy_cards,
    fit_points,
)
from plugin.analysis.stats import summarize
from plugin.load.workload import Workload
from plugin.power.window import GpuWindow
from plugin.results.schema import BenchmarkPower, BenchmarkResult, GpuEnergy, PhaseSplit, PowerWindow

A_J, B_J, C_W = 0.01, 0.3, 40.0
NO_SUMMARY = {**summarize([]), **rates(Work(0.0, 0, 0, 0))}
"""The card reads no summary figure: an empty one."""
"""The truth: J per prompt token, J per output token, W above idle while busy."""
IDLE_W = 50.0
DURATION_S = 10.0
Window = tuple[int, int, float, float]
"""prompt tokens, output tokens, busy seconds, energy above idle (J)."""


def truth(prompt: int, output: int, busy_s: float = 0.0, c_w: float = 0.0) -> float:
    return A_J * prompt + B_J * output + c_w * busy_s


def split(prompt: int, output: int, busy_s: float) -> PhaseSplit:
    return PhaseSplit(
        prefill_j=None, decode_j=None, idle_j=None, prefill_above_idle_j=None, decode_above_idle_j=None,
        prefill_s=busy_s / 2, decode_s=busy_s / 2, overlap_s=0.0, idle_s=DURATION_S - busy_s, requests=4,
        prompt_tokens=prompt, output_tokens=output, integral_j=None, j_per_prompt_token=None,
        j_per_output_token=None, j_per_request=None,
    )  # fmt: skip


def gpu_window(gpu: int, start_s: float, energy_j: float, idle_w: float | None) -> GpuWindow:
    above = None if idle_w is None else energy_j - idle_w * DURATION_S
    return GpuWindow(
        gpu=gpu, start_s=start_s, end_s=start_s + DURATION_S, energy_counter_j=energy_j, energy_samples_j=energy_j,
        disagreement_pct=0.0, mean_power_w=energy_j / DURATION_S, max_power_w=None, mean_sm_clock_mhz=None,
        throttled_s=None, throttle_reasons_s=(), idle_power_w=idle_w, energy_above_idle_j=above, samples=100,
        sample_errors=0, power_source="instant",
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
) -> BenchmarkResult:
    """A benchmark whose round windows draw exactly the given energy above idle (split evenly over ``gpus``)."""
    power_windows = []
    for index, (prompt, output, busy_s, above_j) in enumerate(windows):
        start_s = 100.0 * index
        has_idle = True if idle is None else idle[index]
        share = above_j / gpus + IDLE_W * DURATION_S
        per_gpu = {
            str(gpu): GpuEnergy(role="prefill+decode", window=gpu_window(gpu, start_s, share, IDLE_W if has_idle
                                                                          else None), phases=None)
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
    assert prompt.half_width_95 < 1e-9 and output.half_width_95 < 1e-9
    assert card.r_squared == pytest.approx(1.0, abs=1e-12) and card.dof == 13
    assert any("busy-time term left out" in note for note in card.notes)


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
        assert coefficient.low < true_value < coefficient.high, name
        assert 0 < coefficient.half_width_95 < 0.2 * true_value
        assert coefficient.low == pytest.approx(coefficient.value - coefficient.half_width_95)
    assert card.r_squared is not None and 0.95 < card.r_squared < 1.0


def test_the_intervals_hold_the_truth_about_95_percent_of_the_time() -> None:
    """Over many noisy runs (additive noise, as least squares assumes), a too narrow interval (say, a normal
    quantile with 3 degrees of freedom, or a wrong standard error) covers far less often."""
    rng = random.Random(3)
    mixes = [(2048, 4), (8192, 4), (64, 256), (64, 1024), (4000, 400)]
    covered, trials = 0, 400
    for _ in range(trials):
        points = [
            WindowPoint("b", "e2e", truth(p, o) + rng.gauss(0.0, 5.0), p, o, None) for p, o in rng.sample(mixes, 4)
        ]
        fit, why = fit_points(points, ("prompt_tokens", "output_tokens"))
        assert fit is not None, why
        assert fit.dof == 2
        low, high = fit.beta[1] - fit.half_widths[1], fit.beta[1] + fit.half_widths[1]
        covered += low < B_J < high
    assert 0.91 < covered / trials < 0.99


def test_the_busy_time_term_is_kept_where_it_matters() -> None:
    (card,) = energy_cards(exact_run(c_w=C_W, noise=0.005, seed=2))
    assert card.coefficients is not None
    assert card.regressors == ["prompt_tokens", "output_tokens", "busy_s"]
    busy = card.coefficients["w_busy"]
    assert busy.low < C_W < busy.high and busy.low > 0
    assert card.coefficients["j_per_output_token"].low < B_J < card.coefficients["j_per_output_token"].high
    assert any("busy-time term kept" in note for note in card.notes)
    assert card.model == (
        "energy above idle = j_per_prompt_token x prompt_tokens + j_per_output_token x output_tokens + w_busy x busy_s"
    )


def test_too_few_windows_give_a_card_that_says_why_and_no_numbers() -> None:
    run = [benchmark("prefill", "prefill", [(2048, 4, 1.0, truth(2048, 4))]),
           benchmark("decode", "decode", [(64, 256, 4.0, truth(64, 256))])]  # fmt: skip
    (card,) = energy_cards(run)
    assert card.coefficients is None and card.r_squared is None and card.cross_check == []
    assert card.why_no_fit == (
        "2 window(s) with an idle baseline: fitting 2 coefficients needs at least 3 "
        "(one degree of freedom left for the interval)"
    )


def test_tokens_in_one_proportion_give_a_card_that_says_why() -> None:
    """Prompt and output tokens in the same ratio everywhere: the two costs cannot be told apart."""
    windows = [(100 * k, 10 * k, float(k), truth(100 * k, 10 * k)) for k in (1, 2, 3, 5)]
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
    assert cards[2].why_no_fit is not None and "2 window(s)" in cards[2].why_no_fit
    stored = json.loads(json.dumps(energy_card_json([*base, unmeasured])))
    assert stored[0]["coefficients"]["j_per_prompt_token"]["value"] == pytest.approx(A_J)
    assert stored[0]["cross_check"][0]["benchmark"] == "prefill-512"


STORING_BENCHMARK = """
from tests.test_energy_card import exact_run

def test_stores(bench_session):
    bench_session.open_run(None)
    results = bench_session.results
    for result in exact_run():
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
    (card,) = data["energy_card"]
    assert card["architecture"] == "traditional" and card["windows"] == 15
    assert card["coefficients"]["j_per_output_token"]["value"] == pytest.approx(B_J)


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

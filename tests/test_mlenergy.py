"""The ML.ENERGY benchmark's steady state and figures (``plugin.analysis.mlenergy``) on a burst worked by hand."""

from __future__ import annotations

from dataclasses import replace

import pytest

from plugin.analysis.mlenergy import MLENERGY_KEY, benchmark_view, mlenergy_view, steady_state
from plugin.power.window import WindowMeasurement
from plugin.records.requests import RequestRecord
from plugin.terminal_cost import write_mlenergy
from tests.test_cost import _result
from tests.test_power_entry import _window, request_record
from tests.test_uncertainty import _window as _window_u


def _burst() -> list[RequestRecord]:
    """Five requests sent at 0; request k's 10 tokens come one a second from 1 + k to 10 + k."""
    return [request_record(0.0, 1.0 + k, 10.0 + k) for k in range(5)]


def test_the_steady_state_runs_from_b_first_tokens_to_n_minus_b_minus_1_ends() -> None:
    assert steady_state(_burst(), 2) == (2.0, 11.0)  # the 2nd first token; the 2nd of 5 - 2 - 1 = 2 ends
    assert "fewer than the batch of 6" in str(steady_state(_burst(), 6))
    assert "needs more than 5" in str(steady_state(_burst(), 4))  # 5 - 4 - 1 = 0 finished: no window


def test_their_figures_over_that_window_beside_the_suites() -> None:
    window = _window(0.0, 15.0, {0: 100.0}, {0: 1650.0})  # samples 1500 J, the counter 10 % more
    view = mlenergy_view([(_burst(), window, 1)], 2, {"energy_per_output_token_j": 0.5, "energy_per_request_j": 5.0})
    assert view["steady_state_s"] == pytest.approx(9.0)
    assert view["steady_state_energy_j"] == pytest.approx(990.0)  # 9 s x 100 W, anchored to the counter
    # Tokens inside [2, 11]: 9, 10, 9, 8 and 7 of the five requests.
    assert view["steady_state_output_tokens"] == 43
    per_token = view["steady_state_energy_per_token_j"]
    assert per_token == pytest.approx(990.0 / 43)
    assert view["energy_per_generation_j"] == pytest.approx(10 * per_token)  # 50 tokens over 5 responses
    assert view["suite_energy_per_output_token_j"] == 0.5 and view["why_not"] is None


def test_no_window_where_their_rule_does_not_apply() -> None:
    window = _window(0.0, 15.0, {0: 100.0}, {0: 1650.0})
    assert "repeated its load 2 times" in mlenergy_view([(_burst(), window, 2)], 2, {})["why_not"]
    unmeasured = WindowMeasurement("w", "none", 0.0, 15.0, (), (), "power not measured", {})
    assert mlenergy_view([(_burst(), unmeasured, 1)], 2, {})["why_not"] == "power not measured"
    assert "not prefill and decode" in benchmark_view(True, 1, True, [], 2, {})["why_not"]
    assert "--request-rate inf" in benchmark_view(False, 1, False, [], 2, {})["why_not"]
    # dp:2 bounds each engine at B: the batch is 2 x 2 = 4, so 5 requests leave no steady state.
    assert benchmark_view(False, 2, True, [(_burst(), window, 1)], 2, {})["max_num_seqs"] == 4


def test_the_terminal_puts_their_figures_beside_the_suites() -> None:
    window = _window(0.0, 15.0, {0: 100.0}, {0: 1650.0})
    summary = {"energy_per_output_token_j": 0.5, "energy_per_request_j": 5.0}
    entry = replace(_result([_window_u(0.0, 6.0, 100.0, 600.0, 0.1)], None), name="test_serving[traditional-rinf]")
    entry.summary[MLENERGY_KEY] = benchmark_view(False, 1, True, [(_burst(), window, 1)], 2, summary)
    lines: list[str] = []
    write_mlenergy(lines.append, [entry])
    assert lines == [
        f"ML.ENERGY's way (test_serving[traditional-rinf], batch 2): {990 / 43:.4g} J/output token, "
        f"{10 * 990 / 43:.4g} J/response over their steady state (9.0 s); the suite over its window: 0.5 J/output "
        "token, 5 J/request"
    ]


def test_the_batch_bound_reaches_the_servers_once(pytester: pytest.Pytester) -> None:
    pytester.makeconftest(
        "from plugin.session import SESSION_KEY\n"
        "def pytest_collection_finish(session):\n"
        "    print('args', session.config.stash[SESSION_KEY].settings.vllm_args)\n"
    )
    shown = pytester.runpytest("-s", "--collect-only", "--mlenergy-max-num-seqs=64")
    shown.stdout.fnmatch_lines(["args ('--max-num-seqs=64',)"])
    clash = pytester.runpytest("--mlenergy-max-num-seqs=64", "--vllm-arg=--max-num-seqs=8")
    assert clash.ret == pytest.ExitCode.USAGE_ERROR
    clash.stderr.fnmatch_lines(["ERROR: --mlenergy-max-num-seqs 64 sets vLLM's --max-num-seqs*give one of them"])

"""Serving benchmarks written as ``vllm bench serve --save-result`` writes them (``plugin.results.vllm_format``),
and read back by vLLM's own ``bench sweep plot`` loader."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from plugin.records.results import BenchmarkResult
from plugin.results import vllm_format
from tests.test_cost import PRICES, _result
from tests.test_uncertainty import _window

# vllm/benchmarks/serve.py (vLLM 0.32.0): the header main_async writes and benchmark's metrics, with the
# --percentile-metrics ttft,tpot,itl,e2el that bench sweep serve passes.
VLLM_KEYS = {
    "date", "endpoint_type", "backend", "label", "model_id", "tokenizer_id", "num_prompts", "request_rate",
    "burstiness", "max_concurrency", "duration", "completed", "failed", "total_input_tokens", "total_output_tokens",
    "request_throughput", "request_goodput", "output_throughput", "total_token_throughput",
    *(f"{stat}_{metric}_ms" for stat in ("mean", "median", "p99")
      for metric in ("ttft", "tpot", "itl", "e2el", "client_queue_time")),
}  # fmt: skip


def _serving(name: str, topology: str, rate: float) -> BenchmarkResult:
    windows = [_window(10.0 * i, 10.0 * i + 6, 100.0, c, 0.1) for i, c in enumerate([630.0, 600.0])]
    result = _result(windows, PRICES)
    result.summary["offered_rate_rps"] = rate
    index = 1 if topology == "traditional" else 2
    return replace(result, name=name, topology=topology, requests_file=f"requests-00{index}-{name}.jsonl")


def _written(tmp_path: Path) -> list[dict[str, Any]]:
    vllm_format.write(tmp_path, _serving("test_serving[traditional-r2]", "traditional", 2.0), "tiny", "run-1")
    path = vllm_format.write(
        tmp_path, _serving("test_serving[disaggregated-r2]", "disaggregated", 2.0), "tiny", "run-1"
    )
    one = json.loads(path.read_text())
    assert isinstance(one, dict) and one["pdeb_topology"] == "disaggregated"  # --save-result's form: one result
    summary: list[dict[str, Any]] = json.loads((tmp_path / "vllm-results" / "summary.json").read_text())
    return summary


def test_keys_and_units_are_vllms_and_the_suites_own_are_apart(tmp_path: Path) -> None:
    first, second = _written(tmp_path)
    assert VLLM_KEYS <= set(first)
    assert [first["pdeb_topology"], second["pdeb_topology"]] == ["traditional", "disaggregated"]  # the order run
    own = set(first) - VLLM_KEYS - {f"p90_{metric}_ms" for metric in vllm_format.METRICS}
    assert own and all(key.startswith("pdeb_") for key in own)
    # The one accounting: completed / duration is vLLM's request_throughput, and the energy divides by that work.
    assert first["completed"] / first["duration"] == pytest.approx(first["request_throughput"])
    assert first["pdeb_energy_per_request_j"] * first["completed"] == pytest.approx(first["pdeb_energy_j"])
    assert first["mean_ttft_ms"] == pytest.approx(200.0)  # ms, as vLLM: each request's first token after 0.2 s
    assert first["request_rate"] == 2.0 and first["max_concurrency"] == 1 and first["backend"] == "openai"
    assert first["pdeb_energy_j_pm"] is not None and first["pdeb_usd_per_good_request"] is not None
    assert first["pdeb_usd_per_good_request_pm"] is not None and first["pdeb_pue"] == 1.5
    assert "std_ttft_ms" not in first  # the suite does not measure it: left out, not invented


@pytest.mark.slow  # imports vLLM (seconds)
def test_vllms_sweep_plot_reads_them(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """``vllm bench sweep plot``'s own functions: ``plot`` finds and groups the results (its dry run stops before
    seaborn, which vLLM's plot imports lazily and this environment lacks), then its loading steps as
    ``_plot_fig`` takes them: inf/nan strings converted, a DataFrame, its filters and binners applied."""
    pd = pytest.importorskip("pandas")
    sweep_plot = pytest.importorskip("vllm.benchmarks.sweep.plot")
    _written(tmp_path)
    empty_filters, empty_binners = sweep_plot.PlotFilters(), sweep_plot.PlotBinners()
    sweep_plot.plot(
        tmp_path, tmp_path / "figures", ["model_id"], [], [], ["pdeb_topology"], var_x="request_rate",
        var_y="pdeb_energy_per_good_request_j", filter_by=empty_filters, bin_by=empty_binners, scale_x=None,
        scale_y=None, dry_run=True,
    )  # fmt: skip
    assert "Group: {'model_id': 'tiny'}" in capsys.readouterr().out
    runs = [run for path in tmp_path.rglob("**/summary.json") for run in sweep_plot._json_load_bytes(path)]
    frame = pd.DataFrame.from_records(sweep_plot._convert_inf_nan_strings(runs))
    frame = sweep_plot.PlotFilters.parse_str("pdeb_topology==traditional").apply(frame)
    frame = sweep_plot.PlotBinners.parse_str("request_rate%1").apply(frame)
    assert list(frame["request_rate"]) == [2.0]
    assert frame["pdeb_energy_per_good_request_j"].iloc[0] > 0 and frame["p99_itl_ms"].iloc[0] > 0

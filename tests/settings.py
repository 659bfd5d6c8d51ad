"""A ``Settings`` with the CPU defaults for unit tests, any field overridden (the plugin builds it from options)."""

from __future__ import annotations

import sys
from dataclasses import replace
from pathlib import Path
from typing import Any

from plugin.option_values import CPU_SIZES, DatasetSpec, RequestRates
from plugin.options import Settings


def make_settings(**fields: Any) -> Settings:
    defaults = Settings(
        model=None, model_cache_dir=Path("/tmp/model-cache"), vllm_url=None, vllm_python=sys.executable, gpus=(),
        max_model_len=None, dtype="bfloat16", vllm_args=(), vllm_port=None, server_start_timeout_s=900.0,
        request_timeout_s=600.0, sizes=CPU_SIZES, rounds=1, reports_dir=Path("reports"), gpu_sample_ms=100.0,
        power_backend="none", idle_baseline_s=0.0, min_window_s=0.0, prefill_gpus=(), decode_gpus=(),
        kv_connector="example",
        report_baseline=None, sm_clocks=(), mem_clocks=(), power_limits=(), prefill_sm_clocks=(),
        decode_sm_clocks=(), dvfs_dry_run=False, slo_ttft_ms=None, slo_tbt_ms=None,
        request_rates=RequestRates((1.0, 4.0)), burstiness=1.0, max_concurrency=None,
        datasets=(DatasetSpec("random"),), random_range_ratio=0.0, duration_s=None, warmup_s=0.0, cooldown_s=0.0,
        goodput=None, seed=None,
    )  # fmt: skip
    return replace(defaults, **fields)

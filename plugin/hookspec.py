"""Hooks a ``conftest.py`` can implement to extend a run, registered through ``pytest_addhooks``; and the two
helpers the fixtures call to run them, so the calling convention lives beside the specification."""

from __future__ import annotations

from typing import Any

import pytest

from plugin.errors import BenchError

ROLES = ("server", "prefill", "decode")


def pytest_pd_energy_bench_update_benchmark_entry(config: pytest.Config, entry: dict[str, Any]) -> None:
    """Add to (or change) a benchmark's entry in ``results.json`` just before it is stored; the report and
    ``--report-baseline`` comparisons read it from there.

    To record which kernel build a run used, in a ``conftest.py``:

    .. sourcecode:: python

        def pytest_pd_energy_bench_update_benchmark_entry(config, entry):
            entry["kernel_build"] = os.environ.get("KERNEL_BUILD", "stock")
    """


def pytest_pd_energy_bench_vllm_args(config: pytest.Config, role: str) -> list[str] | None:
    """Extra arguments for the vLLM servers of one ``role``: ``"server"`` (traditional), ``"prefill"`` or
    ``"decode"`` (disaggregated). The lists of every implementation are concatenated, the plugins' first and
    then the conftests' (the nearest conftest last, so it wins where vLLM takes the last value), and the
    ``--vllm-arg`` values come after all of them: the command line wins. Return ``None`` to add nothing.

    To give only the decode instances CUDA graphs for large batches, in a ``conftest.py``:

    .. sourcecode:: python

        def pytest_pd_energy_bench_vllm_args(config, role):
            if role == "decode":
                return ["--max-num-seqs=256", "--cuda-graph-sizes=256"]
            return None
    """


def extra_vllm_args(config: pytest.Config, role: str) -> tuple[str, ...]:
    """Every ``pytest_pd_energy_bench_vllm_args`` result for ``role``, concatenated in registration order."""
    if role not in ROLES:
        raise ValueError(f"unknown server role {role!r}; expected one of {', '.join(ROLES)}")
    results: list[Any] = config.hook.pytest_pd_energy_bench_vllm_args(config=config, role=role)
    args: list[str] = []
    for result in reversed(results):  # pluggy calls the last registered first
        if not isinstance(result, list | tuple) or not all(isinstance(arg, str) for arg in result):
            raise BenchError(
                f"pytest_pd_energy_bench_vllm_args returned {result!r} for role {role!r}: return a list of "
                'strings such as ["--enforce-eager"], or None'
            )
        args += result
    return tuple(args)


def update_entry(config: pytest.Config, entry: dict[str, Any]) -> None:
    """Let every ``pytest_pd_energy_bench_update_benchmark_entry`` change ``entry`` in place."""
    config.hook.pytest_pd_energy_bench_update_benchmark_entry(config=config, entry=entry)

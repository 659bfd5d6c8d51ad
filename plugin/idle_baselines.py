"""The idle baselines a run's windows subtract: the no-context one before any server starts, and a loaded one per
topology and DVFS setting, measured once with its servers ready and nothing in flight; each written to the
results as soon as it is measured."""

from __future__ import annotations

from plugin.analysis.power_entry import session_power
from plugin.power import Sampler
from plugin.power.window import IdleBaseline
from plugin.records.windows import LOADED
from plugin.session import RunSession


def measure_baseline(
    bench_session: RunSession, sampler: Sampler, kind: str, topology: str | None = None, dvfs_setting: str | None = None
) -> IdleBaseline | None:
    """``--idle-baseline-s`` of doing nothing on every GPU sampled; ``None`` without a GPU or with 0 s."""
    duration_s = bench_session.settings.idle_baseline_s
    if not sampler.backend.gpus or duration_s <= 0:
        return None
    name = " ".join(["idle", kind, *(part for part in (topology, dvfs_setting) if part)])
    return IdleBaseline.of(kind, sampler.measure_idle(duration_s, name), topology, dvfs_setting)


def use_loaded_baseline(bench_session: RunSession, sampler: Sampler, topology: str, dvfs_setting: str | None) -> None:
    """The benchmark's windows subtract its topology and DVFS setting's loaded baseline (on a GPU that lacks one,
    the no-context baseline). The first benchmark of the pair measures it, with the setting applied and before
    its warm-up: the servers are ready and nothing is in flight, and the GPUs have not just run requests, whose
    tail would read as idle power."""
    key = (topology, dvfs_setting)
    no_context = () if bench_session.idle_no_context is None else (bench_session.idle_no_context,)
    if key not in bench_session.idle_loaded:
        sampler.use_idle_baselines(*no_context)  # the loaded baseline's own figure above idle: what the servers cost
        loaded = measure_baseline(bench_session, sampler, LOADED, topology, dvfs_setting)
        if loaded is not None:
            bench_session.idle_loaded[key] = loaded
            write_session_power(bench_session, sampler)
    own = bench_session.idle_loaded.get(key)
    sampler.use_idle_baselines(*(() if own is None else (own,)), *no_context)


def write_session_power(bench_session: RunSession, sampler: Sampler) -> None:
    results = bench_session.results
    assert results is not None
    loaded = list(bench_session.idle_loaded.values())
    results.update(power=session_power(sampler, bench_session.idle_no_context, loaded))

"""What follows a benchmark's load: its typed results assembled and stored (request records to their JSONL file,
conftest hooks' fields added), its rounds handed to pytest-benchmark, its servers checked, and its failures
raised: after the results are saved, so nothing measured is lost."""

from __future__ import annotations

from dataclasses import asdict
from typing import Any, NoReturn

import pytest

from plugin.analysis.benchmark import benchmark_result
from plugin.analysis.mlenergy import MLENERGY_KEY, benchmark_view
from plugin.analysis.stats import ignored_length
from plugin.hookspec import update_entry
from plugin.measurement import Measurement
from plugin.records.requests import RequestRecord
from plugin.records.results import BenchmarkResult, StoredRequest, to_json
from plugin.records.topology import DISAGGREGATED
from plugin.records.workload import SERVING, Workload
from plugin.results import vllm_format
from plugin.results.store import requests_file_name
from plugin.serving.endpoint import Endpoint
from plugin.serving.process import ServerProcess
from plugin.session import RunSession


def store(
    request: pytest.FixtureRequest,
    bench_session: RunSession,
    topology: str,
    workload: Workload,
    measurement: Measurement,
    endpoint: Endpoint,
    dvfs_record: dict[str, Any] | None,
    extra: dict[str, Any],
    excluded_gpus: tuple[int, ...] = (),
) -> BenchmarkResult:
    """The benchmark's result, stored; ``excluded_gpus``: the sampler's GPUs its windows did not charge."""
    results = bench_session.results
    assert results is not None, "the server fixtures start the run before any benchmark"
    name = request.node.name
    settings = bench_session.settings
    result = benchmark_result(
        request.node.nodeid, name, settings.topology(topology), workload, measurement, endpoint.gpu_roles,
        dvfs_record, requests_file_name(len(results.data["benchmarks"]), name), _gpu_budget(bench_session, endpoint),
        settings.goodput, extra.get("offered_rate_rps"), settings.prices, excluded_gpus,
    )  # fmt: skip
    result.summary.update({key: value for key, value in extra.items() if key != "offered_rate_rps"})
    if settings.mlenergy_max_num_seqs is not None and workload.phase == SERVING:
        served, burst = settings.topology(topology), workload.request_rate is None and workload.sweep is None
        result.summary[MLENERGY_KEY] = benchmark_view(
            served.kind == DISAGGREGATED, served.replicas or 1, burst,
            [(r.records, r.window, r.repeats) for r in measurement.rounds], settings.mlenergy_max_num_seqs,
            result.summary,
        )  # fmt: skip
    stored = [StoredRequest(None, record) for record in measurement.warmup]
    stored += [StoredRequest(r.index, record) for r in measurement.rounds for record in r.records]
    entry = to_json(result)
    update_entry(request.config, entry)
    results.add_benchmark(result, stored, entry)
    if settings.vllm_results and workload.phase == SERVING:
        vllm_format.write(bench_session.folder, result, endpoint.model, bench_session.run_id)
    return result


def _gpu_budget(bench_session: RunSession, endpoint: Endpoint) -> int:
    """The GPUs the windows charged (every GPU of the budget has a role, ``unused`` too); on CPU the largest
    topology's instance slots."""
    return len(endpoint.gpu_roles) or bench_session.gpu_budget


def feed_benchmark(benchmark: Any, durations_s: list[float], workload: Workload, result: BenchmarkResult) -> None:
    """Hand the rounds to pytest-benchmark: its ``extra_info`` always, its timing statistics unless it is disabled,
    so ``--benchmark-json`` and ``--benchmark-compare`` see every round the runner measured. pytest-benchmark has
    no public call for durations timed elsewhere; ``_make_stats`` is what its own ``pedantic`` uses, and ``_mode``
    marks the fixture used, as ``pedantic`` does (else it warns that it was not used)."""
    benchmark._mode = "the pd-energy-bench runner"
    benchmark.extra_info.update(asdict(workload))
    benchmark.extra_info.update(
        {key: value for key, value in result.summary.items() if isinstance(value, (int, float)) or value is None}
    )
    if benchmark.enabled:
        stats = benchmark._make_stats(1)
        for duration_s in durations_s:
            stats.update(duration_s)


def check_servers(bench_session: RunSession, topology: str, measurement: Measurement) -> None:
    """A server that exited mid-run stops its topology (see ``stop_topology``)."""
    if all(record.ok for record in measurement.records):
        return
    gone = exited(bench_session.server_processes.get(topology, []))
    if gone is not None:
        stop_topology(bench_session, topology, *gone)


def fail(message: str) -> NoReturn:
    """``pytest.fail`` without a traceback and without the exception being handled: pytest would print that one's
    message too, above the same words ("During handling of the above exception"), so each error once."""
    raise pytest.fail.Exception(message, pytrace=False) from None


def stop_topology(bench_session: RunSession, topology: str, why: str, detail: str = "") -> NoReturn:
    """Fail this benchmark once with ``why`` and ``detail`` (a server's exit code and log tail, or the failed
    warm-up and the exit of any server that is gone); the rest of the topology is skipped saying ``why``,
    and the other topologies go on."""
    if not detail:
        gone = exited(bench_session.server_processes.get(topology, []))
        detail = "" if gone is None else "\n".join(gone)
    bench_session.dead_topologies[topology] = why
    bench_session.endpoints.pop(topology, None)
    stop = bench_session.server_stoppers.pop(topology, None)
    if stop is not None:
        stop()
    fail(f"{why}\n{detail}".rstrip())


def fail_on_errors(records: list[RequestRecord], own_servers: bool) -> None:
    """A benchmark whose requests failed fails, after its results were saved; so does one whose answers came back
    another length than asked from servers the suite started (they honour ``ignore_eos``, so that is a fault).
    A server the suite did not start may not honour it: its results and the terminal say so instead."""
    failed = [record for record in records if not record.ok]
    if failed:
        pytest.fail(f"{len(failed)} of {len(records)} requests failed; first: {failed[0].error}", pytrace=False)
    short = [record for record in records if ignored_length(record)]
    if short and own_servers:
        pytest.fail(
            f"{len(short)} requests returned a different number of tokens than asked "
            f"({len(short[0].token_times_s)} instead of {short[0].max_tokens}): is ignore_eos supported?",
            pytrace=False,
        )


def exited(processes: list[ServerProcess]) -> tuple[str, str] | None:
    """The first of ``processes`` that is no longer running: its exit code, and the end of its log."""
    for process in processes:
        code = process.exit_code()
        if code is not None:
            why = f"{process.name} exited with code {code} during the benchmark"
            return why, f"last lines of {process.log_path}:\n{process.tail()}"
    return None

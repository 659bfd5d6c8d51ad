"""The plugin seen from pytest: markers, options and ini keys, bad input, parametrization (inner pytest runs)."""

from __future__ import annotations

import re
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest

import plugin.plugin as plugin_module
from tests.conftest import ROOT

# Every option of the suite's group in `pytest --help`, by its exact name: a renamed, missing or extra one fails.
OPTIONS = {
    "--model", "--model-cache-dir", "--vllm-url", "--vllm-python", "--gpus", "--max-model-len", "--dtype",
    "--vllm-port", "--server-start-timeout-s", "--request-timeout-s", "--input-lens", "--output-lens",
    "--decode-prompt-len", "--e2e-input-len", "--e2e-output-len", "--concurrency", "--num-requests", "--rounds",
    "--reports-dir", "--gpu-sample-ms", "--power-backend", "--idle-baseline-s", "--min-window-s", "--prefill-gpus",
    "--decode-gpus", "--topologies",
    "--kv-connector", "--sm-clocks", "--mem-clocks", "--power-limits", "--prefill-sm-clocks", "--decode-sm-clocks",
    "--slo-ttft-ms", "--slo-tbt-ms", "--request-rate", "--burstiness", "--max-concurrency", "--dataset",
    "--random-range-ratio", "--duration-s", "--warmup-s", "--cooldown-s", "--goodput", "--capacity-resolution",
    "--max-probes", "--resume", "--seed", "--report-baseline",
    "--slo-attainment", "--ray-address", "--prefill-node", "--decode-node", "--server-node", "--arrival-scaling",
    "--ray-placement-timeout-s",
    "--vllm-arg", "--dvfs-dry-run", "--power-source", "--gpu-role", "--energy-usd-per-kwh", "--pue",
    "--gpu-usd-per-hour", "--grid-gco2e-per-kwh", "--vllm-results", "--mlenergy-max-num-seqs", "--trace-time-scale",
    "--trace-slice", "--think-time-s", "--prefix-cache-control", "--ramp-up-strategy", "--ramp-up-start-rps",
    "--ramp-up-end-rps", "--request-cancellation-rate", "--request-cancellation-delay-s",
}  # fmt: skip
# Each option's ini twin and its type: the name with underscores (--vllm-arg: vllm_args, one per line).
INI_KEYS = {
    **{
        option.removeprefix("--").replace("-", "_"): "string"
        for option in OPTIONS
        - {"--vllm-arg", "--dvfs-dry-run", "--power-source", "--gpu-role", "--vllm-results", "--prefix-cache-control"}
    },
    "vllm_args": "linelist",
    "dvfs_dry_run": "bool",
    "vllm_results": "bool",
    "prefix_cache_control": "bool",
    "power_source": "linelist",
    "gpu_role": "linelist",
}
MARKERS = [
    "@pytest.mark.traditional: benchmark on one vLLM server that does both prefill and decode",
    "@pytest.mark.disaggregated: benchmark on separate prefill and decode vLLM instances with KV transfer",
    "@pytest.mark.prefill: prefill-phase benchmark (max_tokens=1, parametrized over input lengths)",
    "@pytest.mark.decode: decode-phase benchmark (short prompt, parametrized over output lengths)",
    "@pytest.mark.e2e: end-to-end benchmark (prompt and answer of realistic lengths)",
    "@pytest.mark.serving: open-loop serving benchmark (dataset x request rate; goodput and energy per good request)",
]
GROUP_TITLE = "LLM inference phase benchmarks on vLLM:"
WITHOUT_PLUGIN = ("-p", "no:pd_energy_bench")  # the pytest11 entry point's name
NEEDS_SERVER = "def test_needs_server(served_topology):\n    pass\n"


def needs_server(pytester: pytest.Pytester) -> None:
    """A test that asks for a traditional server (``topologies`` set through its ini twin)."""
    pytester.makepyfile(NEEDS_SERVER)
    pytester.makeini("[pytest]\ntopologies = traditional\n")


@pytest.fixture
def benchmarks_copy(pytester: pytest.Pytester) -> Path:
    """The real benchmark module, in the inner run's folder."""
    target = pytester.path / "test_phases.py"
    shutil.copy(ROOT / "benchmarks" / "test_phases.py", target)
    return target


def section(text: str, title: str) -> list[str]:
    """One section of ``pytest --help``: the lines after its title (and the blank lines that may follow it), up
    to the blank line that ends it."""
    lines = text.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith(title)) + 1
    while not lines[start]:
        start += 1
    return lines[start : lines.index("", start)]


def ini_keys(pytester: pytest.Pytester, *args: str) -> dict[str, str]:
    """Every ini key of the ``--help`` run, with its type."""
    result = pytester.runpytest("--help", *args)
    assert result.ret == 0
    lines = section(result.stdout.str(), "[pytest] ")
    return {match[1]: match[2] for line in lines if (match := re.match(r"  (\w+) \((\w+)\):", line))}


def test_markers_are_registered_with_their_descriptions(pytester: pytest.Pytester) -> None:
    with_plugin = pytester.runpytest("--markers").stdout.lines
    without_plugin = set(pytester.runpytest("--markers", *WITHOUT_PLUGIN).stdout.lines)
    assert [line for line in with_plugin if line and line not in without_plugin] == MARKERS


def test_help_lists_exactly_the_suites_options(pytester: pytest.Pytester) -> None:
    result = pytester.runpytest("--help")
    assert result.ret == 0
    group = section(result.stdout.str(), GROUP_TITLE)
    named = [match[1] for line in group if (match := re.match(r"  (--[\w-]+)", line))]
    assert sorted(named) == sorted(OPTIONS)  # sorted lists, not sets: an option listed twice fails too


def test_every_option_has_its_ini_twin(pytester: pytest.Pytester) -> None:
    without_plugin = ini_keys(pytester, *WITHOUT_PLUGIN)
    added = {key: kind for key, kind in ini_keys(pytester).items() if key not in without_plugin}
    assert added == INI_KEYS


def test_fast_lane_leaves_out_every_test_that_starts_vllm() -> None:
    """``make test-fast`` (``-m "not vllm"``) keeps, of the modules that start real vLLM, only the DVFS interrupt
    tests, which run the plugin without a server."""
    modules = ["e2e", "e2e_disaggregated", "interrupt", "kv_transfer", "dvfs_e2e"]
    done = subprocess.run(
        [sys.executable, "-m", "pytest", *(f"tests/test_{module}.py" for module in modules), "--collect-only", "-q",
         "-m", "not vllm", "-p", "no:cacheprovider"],
        cwd=ROOT, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    assert [line for line in done.stdout.splitlines() if "::" in line] == [
        "tests/test_dvfs_e2e.py::test_settings_are_restored_when_pytest_is_interrupted[SIGINT]",
        "tests/test_dvfs_e2e.py::test_settings_are_restored_when_pytest_is_interrupted[SIGTERM]",
    ]


def test_strict_markers_accept_the_suite_markers(pytester: pytest.Pytester) -> None:
    pytester.makepyfile("import pytest\n\n@pytest.mark.decode\n@pytest.mark.traditional\ndef test_x():\n    pass\n")
    pytester.runpytest("--strict-markers").assert_outcomes(passed=1)


@pytest.mark.parametrize(
    ("argument", "message"),
    [
        ("--input-lens=0", "--input-lens='0': must be a positive whole number"),
        ("--input-lens=-5,10", "--input-lens='-5,10': must be a positive whole number"),
        ("--concurrency=abc", "--concurrency='abc': expected a whole number"),
        ("--rounds=0", "--rounds='0': must be a positive whole number"),
        ("--output-lens=,", "--output-lens=',': expected a comma-separated list"),
        ("--vllm-port=70000", "--vllm-port='70000': a port is at most 65535"),
        ("--server-start-timeout-s=-1", "--server-start-timeout-s='-1': must be a positive number"),
        ("--gpus=x", "--gpus='x': expected comma-separated GPU indices"),
        ("--gpus=99", "--gpus: no*"),
        ("--gpu-sample-ms=0", "--gpu-sample-ms='0': must be a positive number"),
        ("--gpu-sample-ms=-20", "--gpu-sample-ms='-20': must be a positive number"),
        ("--gpu-sample-ms=fast", "--gpu-sample-ms='fast': expected a number"),
        ("--power-backend=dcgm", "--power-backend='dcgm': expected one of auto, nvml, smi, none"),
        ("--idle-baseline-s=-1", "--idle-baseline-s='-1': must be zero or more"),
        ("--min-window-s=-5", "--min-window-s='-5': must be zero or more"),
        ("--kv-connector=lmcache", "--kv-connector='lmcache': expected one of example, nixl, p2pnccl"),
        ("--prefill-gpus=a", "--prefill-gpus='a': expected comma-separated GPU indices"),
        ("--decode-gpus=7", "--decode-gpus: no*"),
        ("--report-baseline=nope", "--report-baseline nope: no results.json in*"),
        ("--max-model-len=64", "--max-model-len 64 is shorter than the largest workload*"),
        ("--request-rate=0", "--request-rate='0': must be a positive number"),
        ("--request-rate=-2", "--request-rate='-2': must be a positive number"),
        ("--request-rate=sweep:x", "--request-rate='sweep:x': a sweep is sweep:N*"),
        ("--request-rate=capacity:0", "--request-rate='capacity:0': a capacity search measures at least one*"),
        ("--request-rate=capacity:3", "--request-rate capacity:N searches the highest rate*give them with --goodput*"),
        ("--capacity-resolution=100%", "--capacity-resolution='100%': a relative resolution is above 0 %*"),
        ("--capacity-resolution=fine", "--capacity-resolution='fine': expected a percentage such as 10%*"),
        ("--max-probes=1", "--max-probes='1': a search needs at least 2 probes*"),
        ("--request-rate=capacity:2 --slo-attainment=100", "--slo-attainment 100 with a capacity search: no finite*"),
        ("--resume=/no/run", "--resume /no/run: no results.json there*"),
        ("--burstiness=0", "--burstiness='0': must be a positive number"),
        ("--arrival-scaling=vllm", "--arrival-scaling='vllm': expected one of drawn, nominal"),
        ("--max-concurrency=0", "--max-concurrency='0': must be a positive whole number"),
        ("--dataset=alpaca:x.json", "--dataset='alpaca:x.json': 'alpaca:x.json': the dataset kind is one of random*"),
        ("--dataset=sharegpt:/no/such.json", "--dataset='sharegpt:/no/such.json': *no such file /no/such.json"),
        ("--dataset=jsonl", "--dataset='jsonl': 'jsonl': name the file, e.g. jsonl:*"),
        ("--random-range-ratio=1", "--random-range-ratio='1': must be at least 0 and below 1"),
        ("--goodput=ttfb:200", "--goodput='ttfb:200': 'ttfb:200': a goodput target is one of ttft, tpot, e2el*"),
        ("--goodput=ttft:fast", "--goodput='ttft:fast': 'ttft:fast': the target must be a positive number of*"),
        ("--seed=x", "--seed='x': invalid literal*"),
        ("--slo-attainment=0", "--slo-attainment='0': must be above 0 and at most 100 (percent)"),
        ("--slo-attainment=100.5", "--slo-attainment='100.5': must be above 0 and at most 100 (percent)"),
        ("--slo-attainment=most", "--slo-attainment='most': expected a number of percent, e.g. 90"),
        ("--pue=0.8", "--pue='0.8': a PUE is 1 or more*"),
        ("--pue=1.2", "--pue scales the energy's cost and carbon: give --energy-usd-per-kwh or --grid-gco2e-per-kwh*"),
        ("--energy-usd-per-kwh=-0.1", "--energy-usd-per-kwh='-0.1': must be zero or more"),
        ("--grid-gco2e-per-kwh=low", "--grid-gco2e-per-kwh='low': expected a number"),
        ("--mlenergy-max-num-seqs=0", "--mlenergy-max-num-seqs='0': must be a positive whole number"),
        ("--ray-placement-timeout-s=0", "--ray-placement-timeout-s='0': must be a positive number"),
        ("--ray-placement-timeout-s=soon", "--ray-placement-timeout-s='soon': expected a number"),
        ("--ray-placement-timeout-s=30", "--ray-placement-timeout-s bounds the wait for a Ray node's GPUs: give the*"),
        ("--request-cancellation-rate=0", "--request-cancellation-rate='0': must be above 0 and at most 100*"),
        (
            "--request-cancellation-delay-s=1",
            "--request-cancellation-delay-s says when*give --request-cancellation-rate*",
        ),
        (
            "--request-cancellation-rate=5 --request-cancellation-delay-s=-1",
            "--request-cancellation-delay-s='-1': must*",
        ),
    ],
)
def test_bad_values_are_usage_errors(pytester: pytest.Pytester, argument: str, message: str) -> None:
    result = pytester.runpytest(*argument.split())
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines([f"ERROR: {message}*"])


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        (["--duration-s=10", "--warmup-s=10"], "--duration-s 10 is not longer than --warmup-s 10 plus --cooldown-s 0*"),
        (["--duration-s=10", "--warmup-s=6", "--cooldown-s=4"], "--duration-s 10 is not longer than*"),
        (["--warmup-s=5"], "--warmup-s and --cooldown-s cut a steady-state run: give --duration-s too"),
    ],
)
def test_a_steady_state_window_must_leave_something_to_measure(
    pytester: pytest.Pytester, arguments: list[str], message: str
) -> None:
    result = pytester.runpytest(*arguments)
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines([f"ERROR: {message}*"])


def test_goodput_takes_vllms_space_separated_targets(pytester: pytest.Pytester) -> None:
    pytester.makeconftest(
        "from plugin.session import SESSION_KEY\n"
        "def pytest_collection_finish(session):\n"
        "    print('targets', session.config.stash[SESSION_KEY].settings.goodput)\n"
    )
    result = pytester.runpytest("-s", "--goodput", "ttft:200", "tpot:50", "--", "--collect-only")
    result.stdout.fnmatch_lines(["targets GoodputTargets(ttft_ms=200.0, tpot_ms=50.0, e2el_ms=None)"])


def test_slo_attainment_defaults_to_90_and_takes_the_ini_and_the_command_line(pytester: pytest.Pytester) -> None:
    pytester.makeconftest(
        "from plugin.session import SESSION_KEY\n"
        "def pytest_collection_finish(session):\n"
        "    print('attainment', session.config.stash[SESSION_KEY].settings.slo_attainment_pct)\n"
    )
    pytester.runpytest("-s", "--collect-only").stdout.fnmatch_lines(["attainment 90.0"])
    pytester.makeini("[pytest]\nslo_attainment = 75.5\n")
    pytester.runpytest("-s", "--collect-only").stdout.fnmatch_lines(["attainment 75.5"])
    pytester.runpytest("-s", "--slo-attainment=100", "--collect-only").stdout.fnmatch_lines(["attainment 100.0"])


def test_arrival_scaling_defaults_to_the_drawn_gaps_and_takes_the_ini_and_the_command_line(
    pytester: pytest.Pytester,
) -> None:
    pytester.makeconftest(
        "from plugin.session import SESSION_KEY\n"
        "def pytest_collection_finish(session):\n"
        "    print('scaling', session.config.stash[SESSION_KEY].settings.arrival_scaling)\n"
    )
    pytester.runpytest("-s", "--collect-only").stdout.fnmatch_lines(["scaling drawn"])
    pytester.makeini("[pytest]\narrival_scaling = nominal\n")
    pytester.runpytest("-s", "--collect-only").stdout.fnmatch_lines(["scaling nominal"])
    pytester.runpytest("-s", "--arrival-scaling=drawn", "--collect-only").stdout.fnmatch_lines(["scaling drawn"])


def test_ini_value_applies_and_the_command_line_wins(pytester: pytest.Pytester, benchmarks_copy: Path) -> None:
    pytester.makeini("[pytest]\ninput_lens = 300,600\nconcurrency = 2\n")
    from_ini = pytester.runpytest("--collect-only", "-q", "-k", "prefill")
    from_ini.stdout.fnmatch_lines(
        ["*test_prefill[[]traditional-in300-out1-c2[]]", "*test_prefill[[]traditional-in600-out1-c2[]]"]
    )
    overridden = pytester.runpytest("--collect-only", "-q", "-k", "prefill", "--input-lens=700")
    overridden.stdout.fnmatch_lines(["*test_prefill[[]traditional-in700-out1-c2[]]"])
    assert "in300" not in overridden.stdout.str()


def test_benchmarks_are_parametrized_per_architecture_and_phase(
    pytester: pytest.Pytester, benchmarks_copy: Path
) -> None:
    result = pytester.runpytest(
        "--collect-only", "-q", "--input-lens=256", "--output-lens=8,16", "--decode-prompt-len=4",
        "--e2e-input-len=100", "--e2e-output-len=20", "--concurrency=1,4",
    )  # fmt: skip
    # Every traditional benchmark first, then the same workloads disaggregated.
    result.stdout.fnmatch_lines(
        [
            "*test_prefill[[]traditional-in256-out1-c1[]]",
            "*test_prefill[[]traditional-in256-out1-c4[]]",
            "*test_decode[[]traditional-in4-out8-c1[]]",
            "*test_decode[[]traditional-in4-out16-c4[]]",
            "*test_e2e[[]traditional-in100-out20-c4[]]",
            "*test_prefill[[]disaggregated-in256-out1-c1[]]",
            "*test_decode[[]disaggregated-in4-out16-c4[]]",
            "*test_e2e[[]disaggregated-in100-out20-c4[]]",
            "*16 tests collected*",
        ]
    )


def test_marker_selection(pytester: pytest.Pytester, benchmarks_copy: Path) -> None:
    result = pytester.runpytest("--collect-only", "-q", "-m", "decode", "--output-lens=8", "--concurrency=1")
    result.stdout.fnmatch_lines(
        [
            "*test_decode[[]traditional-in16-out8-c1[]]",
            "*test_decode[[]disaggregated-in16-out8-c1[]]",
            "*2/8 tests collected (6 deselected)*",
        ]
    )
    result = pytester.runpytest("--collect-only", "-q", "-m", "disaggregated and prefill", "--concurrency=1")
    result.stdout.fnmatch_lines(["*test_prefill[[]disaggregated-in256-out1-c1[]]", "*2/10 tests collected*"])


def test_workload_needs_one_phase_marker(pytester: pytest.Pytester) -> None:
    pytester.makepyfile("def test_x(workload):\n    pass\n")
    result = pytester.runpytest()
    assert result.ret != 0
    assert "mark it with exactly one of" in result.stdout.str() + result.stderr.str()


def test_missing_model_folder_fails_before_anything_starts(pytester: pytest.Pytester) -> None:
    needs_server(pytester)
    reports = pytester.path / "reports"
    result = pytester.runpytest(f"--model={pytester.path / 'no-such-model'}", f"--reports-dir={reports}")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["ERROR: --model */no-such-model: no such folder*"])
    assert not reports.exists()


@pytest.mark.parametrize(
    ("kind", "broken", "good", "first"),
    [
        ("jsonl", "{not json\n", '{not json\n{"prompt": "hi", "output_len": 4}\n', "line 1: not valid JSON"),
        (
            "sharegpt",
            '[{"conversations": [{"from": "human", "value": "only a question"}]}]',
            '[{"conversations": [{"from": "human", "value": "only a question"}]},'
            ' {"conversations": [{"from": "human", "value": "hi"}, {"from": "gpt", "value": "hello"}]}]',
            "entry 0 has no human turn followed by a reply",
        ),
    ],
)
def test_a_dataset_file_is_read_before_anything_starts_and_its_bad_entries_skipped_saying_so(
    pytester: pytest.Pytester, kind: str, broken: str, good: str, first: str
) -> None:
    needs_server(pytester)
    reports, data = pytester.path / "reports", pytester.path / "data.txt"
    data.write_text(broken)
    result = pytester.runpytest(f"--dataset={kind}:{data}", f"--reports-dir={reports}")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines([f"ERROR: {data}: none of its entries can be used (1 skipped); first: *{first}*"])
    assert not reports.exists()
    data.write_text(good)
    result = pytester.runpytest(f"--dataset={kind}:{data}", f"--reports-dir={reports}", "--collect-only")
    assert result.ret == pytest.ExitCode.OK
    result.stdout.fnmatch_lines([f"pd-energy-bench: {data}: 1 unreadable entries skipped; first: *{first}*"])


def test_vllm_not_installed_is_a_clear_error(pytester: pytest.Pytester, python_without_vllm: str) -> None:
    needs_server(pytester)
    result = pytester.runpytest(f"--vllm-python={python_without_vllm}")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["ERROR: vLLM is not installed for *make venv*"])


def test_busy_port_is_a_clear_error(pytester: pytest.Pytester) -> None:
    needs_server(pytester)
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        result = pytester.runpytest(f"--vllm-port={port}")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines([f"ERROR: port {port} on 127.0.0.1 is in use*"])


def test_unreachable_server_url_is_a_clear_error(pytester: pytest.Pytester) -> None:
    needs_server(pytester)
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    result = pytester.runpytest(f"--vllm-url=http://127.0.0.1:{port}")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines([f"ERROR: --vllm-url http://127.0.0.1:{port}: no server answers*"])


def test_server_url_with_disaggregated_benchmarks_is_a_clear_error(
    pytester: pytest.Pytester, benchmarks_copy: Path
) -> None:
    result = pytester.runpytest("--vllm-url=http://127.0.0.1:9", "-m", "e2e")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["ERROR: --vllm-url benchmarks one server*Add -m traditional*"])


def test_runs_without_benchmarks_leave_no_run_folder(pytester: pytest.Pytester) -> None:
    pytester.makepyfile("def test_plain():\n    pass\n")
    reports = pytester.path / "reports"
    pytester.runpytest(f"--reports-dir={reports}").assert_outcomes(passed=1)
    assert not reports.exists()


def test_fixtures_are_registered_with_their_docs(pytester: pytest.Pytester) -> None:
    result = pytester.runpytest("--fixtures")
    for fixture, doc in [
        ("served_topology", "The servers of the benchmark's topology, started for its first benchmark*"),
        ("deployments [[]session scope[]]", "Every topology's servers, stopped at the end of the run*"),
        ("power_sampler [[]session scope[]]", "Samples the GPUs of the run's budget*"),
        ("bench_session [[]session scope[]]", "The run: resolved settings, run folder and results file*"),
        ("run_workload", "Runs a workload on the test's topology*"),
    ]:
        result.stdout.fnmatch_lines([f"{fixture} -- *plugin/fixtures.py:*", f"*{doc}"])


def test_bench_session_fixture_carries_the_resolved_settings(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        """
        from pathlib import Path

        def test_settings(bench_session):
            settings = bench_session.settings
            assert settings.sizes.prefill_input_lens == (300, 900)
            assert settings.sizes.concurrency == (2,)
            assert settings.vllm_args == ("--enforce-eager", "--seed=1")
            assert settings.gpu_sample_ms == 50.0
            assert settings.gpus == ()  # no GPU on this machine: the server runs on the CPU
            assert bench_session.results is None  # no run folder until a server is needed
        """
    )
    pytester.makeini("[pytest]\nvllm_args =\n    --enforce-eager\n    --seed=1\n")
    result = pytester.runpytest("--input-lens=300,900", "--concurrency=2", "--gpu-sample-ms=50")
    result.assert_outcomes(passed=1)


class _NoLine:
    """A traceback entry as CPython 3.11 may leave one when a signal lands on an instruction with no line."""

    @property
    def lineno(self) -> int:
        raise TypeError("unsupported operand type(s) for -: 'NoneType' and 'int'")


def test_an_interrupt_frame_without_a_line_is_left_out_of_what_pytest_renders() -> None:
    def interrupted() -> None:
        raise KeyboardInterrupt("signal 15")

    with pytest.raises(KeyboardInterrupt) as excinfo:
        interrupted()
    real = list(excinfo.traceback)
    excinfo.traceback = type(excinfo.traceback)([*real, _NoLine()])  # type: ignore[list-item]
    plugin_module.pytest_keyboard_interrupt(excinfo)
    assert list(excinfo.traceback) == real
    assert "signal 15" in str(excinfo.getrepr(funcargs=True))

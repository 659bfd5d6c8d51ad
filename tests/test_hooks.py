"""The plugin's own hooks, its report header, the server-log tail on a failing benchmark, and pytest-benchmark's
table kept out of the suite's output (inner pytest runs; no vLLM)."""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator

import pytest

import tests.fake_nvml as fake
from plugin.power.nvml_loader import STAND_IN_ENV

HOOK_CONFTEST = """
def pytest_pd_energy_bench_vllm_args(config, role):
    return {"server": ["--enforce-eager"], "decode": ["--max-num-seqs=256", "--seed=1"]}.get(role)

def pytest_pd_energy_bench_update_benchmark_entry(config, entry):
    entry["kernel_build"] = "stock"
    entry["summary"]["energy_j"] = None
"""


def test_vllm_args_of_every_implementation_are_concatenated_per_role(pytester: pytest.Pytester) -> None:
    pytester.makeconftest(HOOK_CONFTEST)
    sub = pytester.mkpydir("sub")
    # A nearer conftest comes last, so it wins where vLLM takes an option's last value.
    sub.joinpath("conftest.py").write_text(
        "def pytest_pd_energy_bench_vllm_args(config, role):\n    return ['--seed=2'] if role == 'decode' else []\n"
    )
    sub.joinpath("test_args.py").write_text(
        """
from plugin.hookspec import extra_vllm_args

def test_args(request):
    assert extra_vllm_args(request.config, "server") == ("--enforce-eager",)
    assert extra_vllm_args(request.config, "prefill") == ()
    assert extra_vllm_args(request.config, "decode") == ("--max-num-seqs=256", "--seed=1", "--seed=2")
"""
    )
    pytester.runpytest().assert_outcomes(passed=1)


def test_vllm_args_that_are_not_a_list_of_strings_are_a_clear_error(pytester: pytest.Pytester) -> None:
    pytester.makeconftest("def pytest_pd_energy_bench_vllm_args(config, role):\n    return '--enforce-eager'\n")
    pytester.makepyfile(
        """
import pytest
from plugin.errors import BenchError
from plugin.hookspec import extra_vllm_args

def test_args(request):
    with pytest.raises(BenchError, match=r"returned '--enforce-eager' for role 'server': return a list"):
        extra_vllm_args(request.config, "server")
    with pytest.raises(ValueError, match="unknown server role 'router'"):
        extra_vllm_args(request.config, "router")
"""
    )
    pytester.runpytest().assert_outcomes(passed=1)


def test_update_benchmark_entry_changes_the_entry_in_place(pytester: pytest.Pytester) -> None:
    pytester.makeconftest(HOOK_CONFTEST)
    pytester.makepyfile(
        """
from plugin.hookspec import update_entry

def test_entry(request):
    entry = {"id": "test_prefill[traditional-in256-out1-c1]", "summary": {"energy_j": 12.5}}
    update_entry(request.config, entry)
    assert entry == {
        "id": "test_prefill[traditional-in256-out1-c1]",
        "summary": {"energy_j": None},
        "kernel_build": "stock",
    }
"""
    )
    pytester.runpytest().assert_outcomes(passed=1)


def test_an_unknown_hook_in_a_conftest_is_refused(pytester: pytest.Pytester) -> None:
    """The specifications are registered, so a misspelt hook fails instead of being silently ignored."""
    pytester.makeconftest("def pytest_pd_energy_bench_vllm_arg(config, role):\n    return []\n")
    pytester.makepyfile("def test_x():\n    pass\n")
    result = pytester.runpytest()
    assert result.ret != 0
    assert "unknown hook 'pytest_pd_energy_bench_vllm_arg'" in result.stdout.str() + result.stderr.str()


@pytest.fixture
def fake_gpus(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.setenv(STAND_IN_ENV, "tests.fake_nvml")
    monkeypatch.setenv("FAKE_NVML_GPUS", "2")
    fake.reset()
    yield
    fake.reset()


def test_header_names_model_vllm_devices_and_power(pytester: pytest.Pytester) -> None:
    result = pytester.runpytest("--power-backend=none")
    result.stdout.fnmatch_lines(
        [
            "pd-energy-bench: model tiny model (built on first use), vLLM *",
            "pd-energy-bench: devices *; power not measured (--power-backend none)",
        ]
    )


def test_header_with_gpus_names_them_and_the_sample_period(pytester: pytest.Pytester, fake_gpus: None) -> None:
    result = pytester.runpytest("--model=meta-llama/Llama-3.1-8B", "--gpu-sample-ms=50")
    result.stdout.fnmatch_lines(
        [
            "pd-energy-bench: model meta-llama/Llama-3.1-8B, vLLM *",
            "pd-energy-bench: devices GPU 0,1 Fake H100 (tests/fake_nvml.py); power auto backend, every 50 ms",
        ]
    )


@pytest.mark.parametrize(
    ("argument", "server"),
    [
        ("--vllm-url=http://127.0.0.1:9/", "external server at http://127.0.0.1:9"),
        ("--vllm-python=/opt/vllm/bin/python", "vLLM of /opt/vllm/bin/python"),
        (f"--vllm-python={sys.executable}", "vLLM [0-9]*"),
    ],
)
def test_header_names_the_server_without_starting_anything(
    pytester: pytest.Pytester, argument: str, server: str
) -> None:
    result = pytester.runpytest(argument, "--model=m")
    result.stdout.fnmatch_lines([f"pd-energy-bench: model m, {server}"])


LOGGING_BENCHMARKS = """
import pytest

def write_logs(folder, names):
    folder.mkdir(parents=True, exist_ok=True)
    for name in names:
        lines = [f"{name} line {i}\\n" for i in range(100)] + [f"{name}: CUDA out of memory\\n"]
        folder.joinpath(name).write_text("".join(lines))

def test_fails(topology, dvfs, bench_session):
    names = ["server.log"] if topology == "traditional" else ["proxy.log", "decode0.log", "prefill0.log"]
    write_logs(bench_session.folder, names)
    assert False, "benchmark failed"

def test_passes(topology, dvfs, bench_session):
    write_logs(bench_session.folder, ["server.log"])

@pytest.fixture
def start_error(bench_session):
    pytest.fail(f"server exited with code 1; last lines of {bench_session.folder / 'server.log'}: (shown here)")

def test_server_did_not_start(topology, dvfs, start_error):
    pass

def test_not_a_benchmark(bench_session):
    write_logs(bench_session.folder, ["server.log"])
    assert False
"""


def test_a_failing_benchmark_shows_the_tail_of_its_servers_logs(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(LOGGING_BENCHMARKS)
    result = pytester.runpytest("-rP")
    result.assert_outcomes(passed=2, failed=3, errors=2)
    text = result.stdout.str()
    # Once: not for the passing benchmark, the one whose start error shows the log, or the plain test.
    assert text.count("vLLM server log server.log (last 40 lines)") == 1
    result.stdout.fnmatch_lines(
        [
            "*_ test_fails[[]traditional[]] _*",
            "*- vLLM server log server.log (last 40 lines) -*",
            "server.log line 61",
            "server.log line 99",
            "server.log: CUDA out of memory",
            "*_ test_fails[[]disaggregated[]] _*",
            "*- vLLM server log prefill0.log (last 40 lines) -*",
            "prefill0.log: CUDA out of memory",
            "*- vLLM server log decode0.log (last 40 lines) -*",
            "decode0.log: CUDA out of memory",
            "*- vLLM server log proxy.log (last 40 lines) -*",
            "proxy.log: CUDA out of memory",
        ]
    )
    assert "server.log line 60\n" not in text


PEDANTIC_BENCHMARKS = """
def test_round(benchmark, topology, dvfs):
    benchmark.extra_info["mean_ttft_ms"] = 12.5
    benchmark.pedantic(lambda: None, rounds=1, iterations=1)
"""
PLAIN_BENCHMARK = """
def test_hot_path(benchmark):
    benchmark.pedantic(lambda: None, rounds=3, iterations=1)
"""
TABLE = "Name (time in "


def test_pytest_benchmark_table_is_hidden_and_its_json_kept(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(PEDANTIC_BENCHMARKS)
    json_path = pytester.path / "benchmark.json"
    result = pytester.runpytest(f"--benchmark-json={json_path}")
    result.assert_outcomes(passed=2)
    assert TABLE not in result.stdout.str()
    saved = json.loads(json_path.read_text())
    assert sorted(bench["name"] for bench in saved["benchmarks"]) == [
        "test_round[disaggregated]",
        "test_round[traditional]",
    ]
    assert saved["benchmarks"][0]["extra_info"] == {"mean_ttft_ms": 12.5}


@pytest.mark.parametrize(
    ("source", "arguments"),
    [(PLAIN_BENCHMARK, ()), (PEDANTIC_BENCHMARKS, ("--benchmark-verbose",))],
    ids=["not-the-suites-benchmark", "asked-for"],
)
def test_pytest_benchmark_table_is_shown_where_it_means_something(
    pytester: pytest.Pytester, source: str, arguments: tuple[str, ...]
) -> None:
    pytester.makepyfile(source)
    result = pytester.runpytest(*arguments)
    assert result.ret == 0
    assert TABLE in result.stdout.str()


REMOTE_LOG_BENCHMARK = """
from pathlib import Path

class OnAnotherNode:
    name = "server"
    log_path = Path("/elsewhere/server.log")
    def tail(self, lines=30):
        return f"read on its node, last {lines} lines"

def test_fails(topology, dvfs, bench_session):
    bench_session.server_processes[topology] = [OnAnotherNode()]
    assert False, "benchmark failed"
"""


def test_the_log_tail_of_a_server_elsewhere_comes_through_the_server(pytester: pytest.Pytester) -> None:
    """A server on a Ray node writes its log there: the tail is read through the server (its actor)."""
    pytester.makepyfile(REMOTE_LOG_BENCHMARK)
    pytester.makeini("[pytest]\ntopologies = traditional\n")
    result = pytester.runpytest("-rP")
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(["*- vLLM server log server.log (last 40 lines) -*", "read on its node, last 40 lines"])

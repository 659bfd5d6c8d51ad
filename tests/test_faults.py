"""Faults a user meets, injected with a stand-in vLLM (``tests/fake_vllm.py``: the stub upstream where vLLM's
server would run; fault injection only, the measuring path is tested on real vLLM elsewhere):

- a traditional server that dies mid-run fails one benchmark with its exit code and log tail, the rest of the
  traditional benchmarks are skipped saying why, and the disaggregated ones still run;
- a server that serves its model under another name (``--served-model-name``) is sent that name;
- a decode instance that never answers (a hung KV transfer) ends the disaggregated benchmarks within the request
  timeout, with the proxy's 502 naming it, instead of waiting a timeout per request;
- each failure's message is printed once (not again as the exception it was raised while handling).
"""

from __future__ import annotations

import json
import shutil
import time

import pytest

from plugin.analysis.stats import tbt_gaps_s
from plugin.records.requests import RequestRecord
from tests.conftest import ROOT, StartStub
from tests.fake_vllm import wrapper


@pytest.fixture
def inner(pytester: pytest.Pytester) -> pytest.Pytester:
    shutil.copy(ROOT / "benchmarks" / "test_phases.py", pytester.path / "test_phases.py")
    model = pytester.path / "model"
    model.mkdir()
    (model / "config.json").write_text(json.dumps({"vocab_size": 512}))
    return pytester


def run(pytester: pytest.Pytester, *args: str) -> pytest.RunResult:
    return pytester.runpytest_subprocess(
        f"--vllm-python={wrapper(pytester.path)}", f"--model={pytester.path / 'model'}", "--power-backend=none",
        f"--reports-dir={pytester.path / 'reports'}", "--input-lens=200", "--output-lens=8", "--decode-prompt-len=16",
        "--e2e-input-len=200", "--e2e-output-len=8", "--concurrency=1", "--num-requests=2", "-p", "no:cacheprovider",
        "--vllm-arg=--served-model-name=served-elsewhere", *args, timeout=240,
    )  # fmt: skip


def test_a_server_that_dies_stops_its_architecture_only(
    inner: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FAKE_VLLM_EXIT_AFTER", "4")  # warm-up + 2 requests of the first benchmark, then one more
    result = run(inner, "-rA")
    outcomes = result.parseoutcomes()
    assert (outcomes.get("failed"), outcomes.get("skipped"), outcomes.get("passed")) == (1, 1, 4), result.stdout.str()
    output = result.stdout.str()
    assert "server exited with code 3 during the benchmark" in output
    assert "fake vLLM: Application startup complete" in output  # the log tail came with the failure
    assert "the traditional servers are gone: server exited with code 3 during the benchmark\n" in output
    results = json.loads(next((inner.path / "reports").glob("*/results.json")).read_text())
    ran = {entry["name"]: entry["summary"]["failed"] for entry in results["benchmarks"]}
    assert ran["test_prefill[traditional-in200-out1-c1]"] == 0
    assert ran["test_decode[traditional-in16-out8-c1]"] > 0  # measured, kept, and failed
    assert all(ran[name] == 0 for name in ran if "disaggregated" in name) and len(ran) == 5
    # The failed benchmark's error is in the results, once, and on the run's page.
    (failure,) = results["failures"]
    assert failure["name"] == "test_decode[traditional-in16-out8-c1]" and failure["when"] == "call"
    assert failure["error"].startswith("server exited with code 3 during the benchmark")
    page = next((inner.path / "reports").glob("*/index.html")).read_text()
    assert "test_decode[traditional-in16-out8-c1] failed: server exited with code 3 during the benchmark" in page


def test_the_served_model_name_is_the_one_sent(inner: pytest.Pytester) -> None:
    result = run(inner, "-m", "traditional and prefill")
    result.assert_outcomes(passed=1)


def test_a_hung_kv_transfer_ends_within_the_timeout(inner: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FAKE_VLLM_HANG_DECODE", "1")
    started = time.monotonic()
    result = run(inner, "-m", "disaggregated", "--request-timeout-s=4")
    elapsed_s = time.monotonic() - started
    outcomes = result.parseoutcomes()
    assert (outcomes.get("failed"), outcomes.get("skipped")) == (1, 2), result.stdout.str()
    output = result.stdout.str()
    assert "the warm-up request failed, so no round was measured: HTTP 502" in output
    assert "decode instance" in output and "did not answer" in output
    assert elapsed_s < 60  # one proxy timeout (0.9 x 4 s), not one per request of every benchmark
    assert "During handling of the above exception" not in output


def test_a_dataset_error_is_printed_once(inner: pytest.Pytester) -> None:
    shutil.copy(ROOT / "benchmarks" / "test_serving.py", inner.path / "test_serving.py")
    (inner.path / "prompts.jsonl").write_text('{"prompt": "hello there", "output_len": 8}\n')
    result = run(inner, "test_serving.py", "-m", "traditional", f"--dataset=jsonl:{inner.path / 'prompts.jsonl'}",
                 "--request-rate=2")  # fmt: skip
    result.assert_outcomes(failed=1)
    output = result.stdout.str()
    failures_section = output.split("short test summary info")[0]  # the summary's line is as wide as the terminal
    assert failures_section.count("needs the model's tokenizer files") == 1, output  # the model folder has none
    assert "During handling of the above exception" not in output
    # The failed run says why in its results and on its page.
    results = json.loads(next((inner.path / "reports").glob("*/results.json")).read_text())
    assert results["status"] == "failed" and "needs the model's tokenizer files" in results["failures"][0]["error"]
    page = next((inner.path / "reports").glob("*/index.html")).read_text()
    assert "needs the model&#39;s tokenizer files" in page or "needs the model's tokenizer files" in page


@pytest.mark.parametrize(
    ("options", "ignored"),
    [(("--tokens-per-chunk", "3"), 0), (("--tokens-per-chunk", "3", "--fault", "early"), 2)],
    ids=["multi-token-chunks", "stops-early"],
)
def test_a_server_the_suite_did_not_start(
    inner: pytest.Pytester, stub_upstream: StartStub, options: tuple[str, ...], ignored: int
) -> None:
    """``--vllm-url`` at a server that sends several tokens a chunk without ids (a router's stream): tokens are
    counted from its usage and ITL per chunk; one that also stops early passes, saying so in results and once in
    the terminal."""
    url = stub_upstream(5.0, *options)
    result = inner.runpytest_subprocess(
        f"--vllm-url={url}", "--power-backend=none", f"--reports-dir={inner.path / 'reports'}",
        "-m", "traditional and decode", "--output-lens=8", "--decode-prompt-len=16", "--concurrency=1",
        "--num-requests=2", "-p", "no:cacheprovider",
        timeout=120,
    )  # fmt: skip
    result.assert_outcomes(passed=1)
    (entry,) = json.loads(next((inner.path / "reports").glob("*/results.json")).read_text())["benchmarks"]
    summary = entry["summary"]
    asked, sent = 8, 8 // 2 if ignored else 8
    assert summary["output_length_ignored"] == ignored
    assert summary["total_output_tokens"] == 2 * sent
    stored = next((inner.path / "reports").glob("*/requests-*.jsonl")).read_text().splitlines()
    records = [RequestRecord(**json.loads(line)["record"]) for line in stored]
    chunks = -(-sent // 3)
    assert all(len(r.token_times_s) == sent and r.max_tokens == asked for r in records)
    assert all(len(tbt_gaps_s(r)) == chunks - 1 for r in records)  # ITL per chunk, as vLLM's bench serve
    output = result.stdout.str()
    assert output.count("ignored the requested output length") == (1 if ignored else 0), output

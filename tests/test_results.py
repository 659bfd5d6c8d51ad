"""The results store: secrets kept out of it, written atomically after every change, versioned on load, request
records in one JSONL file per benchmark, typed results that survive the round trip through JSON."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from plugin.analysis.accounting import Work
from plugin.analysis.power_entry import benchmark_power
from plugin.power.devices import Inventory
from plugin.records.requests import RequestRecord
from plugin.records.results import SCHEMA_VERSION, BenchmarkResult, StoredRequest, from_json, to_json
from plugin.records.workload import Workload
from plugin.results.redaction import REDACTED, redact_command_line
from plugin.results.store import ResultsFile, load_run, requests_file_name, write_json_atomic
from plugin.session import RunSession
from tests.settings import make_settings


def test_secret_option_values_are_hidden() -> None:
    args = ["vllm", "serve", "m", "--hf-token", "hf_abc", "--api-key=sk-1", "--port", "8000", "--API-KEY", "sk-2"]
    assert redact_command_line(args) == [
        "vllm", "serve", "m", "--hf-token", REDACTED, f"--api-key={REDACTED}", "--port", "8000", "--API-KEY", REDACTED
    ]  # fmt: skip


def test_url_credentials_are_hidden_and_the_rest_kept() -> None:
    args = ["pytest", "--vllm-url=http://user:pw@host:8000/v1", "https://tok@example.com/x", "http://host/a@b"]
    assert redact_command_line(args) == [
        "pytest", f"--vllm-url=http://{REDACTED}@host:8000/v1", f"https://{REDACTED}@example.com/x", "http://host/a@b"
    ]  # fmt: skip


def test_ordinary_arguments_pass_unchanged() -> None:
    args = ["pytest", "benchmarks", "-k", "prefill", "--concurrency=1,8", "--vllm-arg=--enforce-eager"]
    assert redact_command_line(args) == args


@pytest.mark.parametrize(
    "args",
    [["pytest", "--vllm-arg=--api-key=sk-1"], ["pytest", "--vllm-arg", "--hf-token", "--vllm-arg", "sk-1"]],
)
def test_secrets_wrapped_in_vllm_arg_are_hidden(args: list[str]) -> None:
    assert not any("sk-1" in arg for arg in redact_command_line(args))


def test_token_count_options_are_not_secrets() -> None:
    args = ["vllm", "serve", "m", "--max-num-batched-tokens", "2048", "--skip-tokenizer-init", "--port", "8000"]
    assert redact_command_line(args) == args


def test_atomic_write_replaces_content_and_leaves_no_temporary(tmp_path: Path) -> None:
    path = tmp_path / "run" / "results.json"
    write_json_atomic(path, {"a": 1, "long": "x" * 1000})
    write_json_atomic(path, {"b": 2})
    assert json.loads(path.read_text()) == {"b": 2}
    assert [p.name for p in path.parent.iterdir()] == ["results.json"]


def test_failed_write_keeps_the_old_file_and_no_temporary(tmp_path: Path) -> None:
    path = tmp_path / "results.json"
    write_json_atomic(path, {"a": 1})
    cycle: list[object] = []
    cycle.append(cycle)
    with pytest.raises(ValueError, match="Circular reference"):
        write_json_atomic(path, {"cycle": cycle})
    assert json.loads(path.read_text()) == {"a": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["results.json"]


def _record(index: int, ok: bool = True) -> RequestRecord:
    return RequestRecord(
        index=index, prompt_len=8, max_tokens=2, due_s=1.0, send_s=1.0, first_token_s=1.5 if ok else None,
        token_times_s=(1.5, 1.75) if ok else (), end_s=1.75, prompt_tokens=8 if ok else None,
        completion_tokens=2 if ok else None, error=None if ok else "HTTP 502: decode instance decode0 timed out",
    )  # fmt: skip


def _result(index: int, name: str) -> BenchmarkResult:
    power = benchmark_power([], "none", "power not measured: --power-backend none", {}, Work(0.0, 0, 0, 0))
    return BenchmarkResult(
        id=f"benchmarks/test_phases.py::{name}", name=name, architecture="traditional", phase="decode",
        workload=Workload("decode", 8, 2, 1, 2), summary={"mean_ttft_ms": 500.0, "p99_ttft_ms": None},
        rounds=({"mean_ttft_ms": 500.0},), power=power, dvfs=None, requests_file=requests_file_name(index, name),
    )  # fmt: skip


def test_results_file_writes_through_and_keeps_requests_out(tmp_path: Path) -> None:
    path = tmp_path / "results.json"
    results = ResultsFile(path, {"run_id": "r1"})
    assert json.loads(path.read_text()) == {
        "schema_version": SCHEMA_VERSION, "run_id": "r1", "status": "running", "benchmarks": []
    }  # fmt: skip
    first = _result(0, "test_decode[traditional-in8-out2-c1]")
    results.add_benchmark(
        first, [StoredRequest(None, _record(0)), StoredRequest(0, _record(1)), StoredRequest(0, _record(2, False))]
    )
    results.add_benchmark(
        _result(1, "test_decode[disaggregated]"), [], entry={**to_json(first), "name": "x", "mine": 1}
    )
    results.update(status="complete", finished_at="2025-01-01T00:00:00")
    on_disk = json.loads(path.read_text())
    assert (on_disk["status"], on_disk["finished_at"]) == ("complete", "2025-01-01T00:00:00")
    assert "requests" not in on_disk["benchmarks"][0] and on_disk["benchmarks"][1]["mine"] == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        [
            "results.json",
            "requests-000-test_decode-traditional-in8-out2-c1.jsonl",
            "requests-001-test_decode-disaggregated.jsonl",
        ]
    )
    run = load_run(tmp_path)
    assert run.benchmarks[0] == first and run.header["run_id"] == "r1"
    measured = run.requests(run.benchmarks[0])
    assert [(r.round, r.record.index, r.record.ok) for r in measured] == [(0, 1, True), (0, 2, False)]
    assert [r.round for r in run.requests(run.benchmarks[0], warmup=True)] == [None, 0, 0]
    assert results.benchmarks[0] is first


def test_typed_results_survive_json(tmp_path: Path) -> None:
    """Nested dataclasses, tuples and ``None`` come back equal, and a missing latency stays ``None``."""
    result = _result(0, "test_decode[traditional]")
    again = from_json(BenchmarkResult, json.loads(json.dumps(to_json(result))))
    assert again == result
    assert again.summary["p99_ttft_ms"] is None and isinstance(again.workload, Workload)
    record = StoredRequest(3, _record(7))
    assert from_json(StoredRequest, json.loads(json.dumps(to_json(record)))) == record


@pytest.mark.parametrize("version", [None, 1, SCHEMA_VERSION + 1, str(SCHEMA_VERSION)])
def test_load_rejects_another_schema_version(tmp_path: Path, version: object) -> None:
    (tmp_path / "results.json").write_text(json.dumps({"schema_version": version, "benchmarks": []}))
    with pytest.raises(ValueError, match="schema_version"):
        load_run(tmp_path)


def test_seed_makes_prompts_and_schedules_repeat() -> None:
    def draws(seed: int | None) -> list[int]:
        session = RunSession(make_settings(seed=seed), Inventory((), None, None), [])
        rng = session.rng_for("benchmarks/test_serving.py::test_serving[traditional-random-r2]")
        return [rng.randrange(1000) for _ in range(5)]

    assert draws(7) == draws(7) and draws(7) != draws(8)


@pytest.mark.parametrize("attainment_pct", [None, 80.0])
def test_the_header_records_the_verdicts_slo_attainment(tmp_path: Path, attainment_pct: float | None) -> None:
    """The report judges a run at the threshold it was made with (``--slo-attainment``; 90 by default)."""
    fields = {} if attainment_pct is None else {"slo_attainment_pct": attainment_pct}
    session = RunSession(make_settings(reports_dir=tmp_path, **fields), Inventory((), None, None), [])
    folder = session.open_run(None)
    settings = json.loads((folder / "results.json").read_text())["settings"]
    assert settings["slo_attainment_pct"] == (attainment_pct or 90.0)

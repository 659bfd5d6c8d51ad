"""The results file: secrets kept out of it, written atomically after every change, versioned on load."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from plugin.results.store import REDACTED, SCHEMA_VERSION, ResultsFile, load, redact_command_line, write_json_atomic


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


def test_results_file_writes_through(tmp_path: Path) -> None:
    path = tmp_path / "results.json"
    results = ResultsFile(path, {"run_id": "r1"})
    assert load(path) == {"schema_version": SCHEMA_VERSION, "run_id": "r1", "status": "running", "benchmarks": []}
    results.add_benchmark({"id": "prefill[in8]", "mean_ttft_ms": 1.5})
    assert load(path)["benchmarks"] == [{"id": "prefill[in8]", "mean_ttft_ms": 1.5}]
    results.add_benchmark({"id": "decode[out4]"})
    assert [b["id"] for b in load(path)["benchmarks"]] == ["prefill[in8]", "decode[out4]"]
    results.update(status="complete", finished_at="2025-01-01T00:00:00")
    on_disk = load(path)
    assert (on_disk["status"], on_disk["finished_at"]) == ("complete", "2025-01-01T00:00:00")
    assert len(on_disk["benchmarks"]) == 2
    assert [p.name for p in tmp_path.iterdir()] == ["results.json"]


@pytest.mark.parametrize("version", [None, SCHEMA_VERSION + 1, str(SCHEMA_VERSION)])
def test_load_rejects_another_schema_version(tmp_path: Path, version: object) -> None:
    path = tmp_path / "results.json"
    path.write_text(json.dumps({"schema_version": version, "benchmarks": []}))
    with pytest.raises(ValueError, match="schema_version"):
        load(path)

"""Which vLLM each ``--kv-connector`` is let run with: P2P NCCL hangs outside vLLM 0.9.2 to before 0.14, so the
run refuses it at collection, before any server starts; a version that cannot be read gets one warning line."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from plugin.errors import BenchError
from plugin.serving.servers import check_kv_connector
from tests.conftest import ROOT


@pytest.mark.parametrize("version", ["0.9.2", "0.9.2rc1", "0.10.1.1", "0.13.0", "0.13.1.dev45+g0123abc"])
def test_p2pnccl_is_let_run_with_vllm_from_0_9_2_to_before_0_14(version: str) -> None:
    assert check_kv_connector("p2pnccl", version) is None


@pytest.mark.parametrize("version", ["0.14.0", "0.14.0rc1", "0.23.0", "0.32.0"])
def test_p2pnccl_with_vllm_0_14_or_later_is_refused_with_why_and_what_instead(version: str) -> None:
    with pytest.raises(BenchError) as refused:
        check_kv_connector("p2pnccl", version)
    message = str(refused.value)
    assert f"--kv-connector p2pnccl does not work with vLLM {version}" in message
    assert "vLLM 0.9.2 to before 0.14" in message
    assert "PR #27987" in message and "issue #42839" in message and "PR #44854" in message
    assert "--kv-connector nixl" in message


def test_p2pnccl_with_vllm_before_it_existed_is_refused() -> None:
    with pytest.raises(BenchError, match=r"vLLM 0\.9\.1: .*first shipped in vLLM 0\.9\.2.*--kv-connector nixl"):
        check_kv_connector("p2pnccl", "0.9.1")


@pytest.mark.parametrize("version", ["unknown", "main"])
def test_p2pnccl_with_a_version_that_cannot_be_read_gets_a_warning(version: str) -> None:
    warning = check_kv_connector("p2pnccl", version)
    assert warning is not None
    assert f"cannot be read ({version!r})" in warning and "--kv-connector nixl" in warning


@pytest.mark.parametrize("connector", ["example", "nixl"])
@pytest.mark.parametrize("version", ["0.23.0", "unknown"])
def test_other_connectors_are_not_held_to_the_p2pnccl_range(connector: str, version: str) -> None:
    assert check_kv_connector(connector, version) is None


# --- at collection, through inner pytest runs; --collect-only, so nothing would start even if the guard let it ---


@pytest.fixture
def benchmarks_copy(pytester: pytest.Pytester) -> Path:
    """The real benchmark module, in the inner run's folder."""
    target = pytester.path / "test_phases.py"
    shutil.copy(ROOT / "benchmarks" / "test_phases.py", target)
    return target


def fake_vllm_python(folder: Path, version: str) -> str:
    """An 'interpreter' that answers the suite's version probe with ``version`` (nothing: no metadata)."""
    path = folder / f"python-vllm-{version or 'unknown'}"
    path.write_text(f"#!/bin/sh\necho '{version}'\n")
    path.chmod(0o755)
    return str(path)


def collect(pytester: pytest.Pytester, version: str, *args: str) -> pytest.RunResult:
    python = fake_vllm_python(pytester.path, version)
    return pytester.runpytest("--collect-only", "--kv-connector=p2pnccl", f"--vllm-python={python}", *args)


def test_p2pnccl_with_vllm_0_23_stops_the_run_at_collection(pytester: pytest.Pytester, benchmarks_copy: Path) -> None:
    result = collect(pytester, "0.23.0", "-m", "disaggregated")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(
        ["ERROR: --kv-connector p2pnccl does not work with vLLM 0.23.0: *#42839*What to do: use --kv-connector nixl*"]
    )


def test_p2pnccl_with_vllm_in_range_is_collected(pytester: pytest.Pytester, benchmarks_copy: Path) -> None:
    result = collect(pytester, "0.10.1.1", "-m", "disaggregated")
    assert result.ret == pytest.ExitCode.OK
    result.stdout.fnmatch_lines(["*test_prefill[[]disaggregated-*"])
    assert "pd-energy-bench: warning" not in result.stdout.str()


def test_p2pnccl_is_not_checked_when_only_traditional_benchmarks_run(
    pytester: pytest.Pytester, benchmarks_copy: Path
) -> None:
    result = collect(pytester, "0.23.0", "-m", "traditional")
    assert result.ret == pytest.ExitCode.OK
    result.stdout.fnmatch_lines(["*test_prefill[[]traditional-*"])
    assert "does not work with" not in result.stdout.str() + result.stderr.str()


def test_unreadable_vllm_version_warns_once_and_goes_on(pytester: pytest.Pytester, benchmarks_copy: Path) -> None:
    result = collect(pytester, "", "-m", "disaggregated")
    assert result.ret == pytest.ExitCode.OK
    warnings = [line for line in result.stdout.lines if "pd-energy-bench: warning:" in line]
    assert len(warnings) == 1
    assert "--kv-connector p2pnccl works only with vLLM 0.9.2 to before 0.14" in warnings[0]
    assert "cannot be read ('unknown')" in warnings[0]

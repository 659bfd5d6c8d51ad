"""Shared fixtures of the suite's own tests, and the ``vllm`` marker that keeps ``make test-fast`` fast."""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from plugin.serving.process import ManagedProcess, start, wait_ready
from plugin.serving.servers import free_port

pytest_plugins = ["pytester"]

ROOT = Path(__file__).resolve().parents[1]
VLLM_FIXTURE = "model_cache_dir"
# Modules whose tests take seconds without vLLM (a torch model build, a real browser, chart rendering, proxies and
# fake vLLM servers in subprocesses): together over a minute on 2 cores, so `make test-fast` leaves them out too.
SLOW_MODULES = {
    "test_tiny_model.py", "test_report_browser.py", "test_report.py", "test_proxy.py", "test_faults.py",
    "test_comparison.py",
}  # fmt: skip


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark ``vllm`` every test that starts a real vLLM server: each of them serves the tiny model from
    ``model_cache_dir`` (directly or through a fixture), so that rule needs no list. Mark ``slow`` the tests of
    ``SLOW_MODULES``. Runs before ``-m`` deselects."""
    for item in items:
        if VLLM_FIXTURE in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.vllm)
        if item.path.name in SLOW_MODULES:
            item.add_marker(pytest.mark.slow)


@pytest.fixture(scope="session")
def model_cache_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One tiny-model cache for every test that starts real vLLM, so the model is built once per test run. Asking
    for it marks the test ``vllm`` (slow; left out by ``make test-fast``)."""
    return tmp_path_factory.mktemp("model-cache")


@pytest.fixture(scope="session")
def python_without_vllm() -> str:
    """The interpreter this virtual environment was made from: it has no vLLM."""
    base = Path(sys.base_prefix) / "bin" / "python3"
    if not base.exists():
        pytest.skip("no base interpreter beside this virtual environment")
    return str(base)


StartStub = Callable[..., str]


@pytest.fixture
def stub_upstream(tmp_path: Path) -> Iterator[StartStub]:
    """Starts the stub with a given ``--token-delay-ms`` (and any other of its options); returns its URL once
    ``/health`` answers."""
    processes: list[ManagedProcess] = []

    def run(token_delay_ms: float, *options: str) -> str:
        port = free_port()
        command = [sys.executable, str(ROOT / "tests" / "stub_upstream.py"), "--port", str(port)]
        env = {**os.environ, "PYTHONPATH": str(ROOT)}
        command += ["--token-delay-ms", str(token_delay_ms), *options]
        process = start("stub", command, env, tmp_path / f"stub-{port}.log", tmp_path)
        processes.append(process)
        wait_ready(process, f"http://127.0.0.1:{port}/health", 30, f"see {tmp_path}", poll_s=0.05)
        return f"http://127.0.0.1:{port}"

    yield run
    for process in processes:
        process.stop(grace_s=5)

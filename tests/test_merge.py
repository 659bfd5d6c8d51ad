"""Merging runs of one seed (topologies measured in separate calls) into one run folder, which the report reads
as any other: the stored fake-NVML run, split in two by architecture, merges back to what it was."""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from plugin.results.merge import main, merge_runs
from plugin.results.store import load_run

STORED = Path(__file__).parent / "data" / "run-fake-nvml"


def _split(tmp_path: Path) -> tuple[Path, Path]:
    """Two copies of the stored run: one keeps the traditional benchmarks, the other the disaggregated ones."""
    halves = []
    for kind in ("traditional", "disaggregated"):
        folder = tmp_path / kind
        shutil.copytree(STORED, folder)
        data = json.loads((folder / "results.json").read_text())
        data["benchmarks"] = [entry for entry in data["benchmarks"] if entry["architecture"] == kind]
        data["energy_card"] = [card for card in data["energy_card"] if card["architecture"] == kind]
        data["run_id"] = f"run-{kind}"
        (folder / "results.json").write_text(json.dumps(data))
        halves.append(folder)
    return halves[0], halves[1]


def test_two_runs_of_one_seed_merge_into_one_the_report_reads(tmp_path: Path) -> None:
    first, second = _split(tmp_path)
    path = merge_runs([first, second], tmp_path / "merged")
    merged, original = load_run(path.parent), load_run(STORED)
    assert [b.name for b in merged.benchmarks] == sorted(
        (b.name for b in original.benchmarks), key=lambda name: "disaggregated" in name
    )
    assert merged.header["merged_from"] == ["run-traditional", "run-disaggregated"]
    assert merged.header["prompt_seed"] == original.header["prompt_seed"]
    for index, benchmark in enumerate(merged.benchmarks):
        assert benchmark.requests_file.startswith(f"requests-{index:03d}-")
        source = next(b for b in original.benchmarks if b.name == benchmark.name)
        assert (path.parent / benchmark.requests_file).read_text() == (STORED / source.requests_file).read_text()
    # each half's card saw only its own benchmarks; the merged run's is fitted over both
    cards = merged.header["energy_card"]
    assert [card["topology"] for card in cards] == ["traditional", "disaggregated"]
    windows = {b.architecture: 0 for b in merged.benchmarks}
    for benchmark in merged.benchmarks:
        windows[benchmark.architecture] += len(benchmark.power.windows) if benchmark.power.measured else 0
    assert [card["windows"] + card["windows_skipped"] for card in cards] == list(windows.values())
    rows = (STORED / "power_gpu0.csv").read_text().splitlines()
    assert (path.parent / "power_gpu0.csv").read_text().splitlines() == [*rows, *rows[1:]]  # one header line

    from plugin.report import build_report

    page = Path(build_report(path.parent, tmp_path))
    assert "Topologies compared" in page.read_text()


def _edit(folder: Path, change: Callable[[dict[str, Any]], None]) -> None:
    data = json.loads((folder / "results.json").read_text())
    change(data)
    (folder / "results.json").write_text(json.dumps(data))


def _other_model(data: dict[str, Any]) -> None:
    data["disaggregated"]["model"] = "/models/other"


def _other_gpu(data: dict[str, Any]) -> None:
    data["environment"]["gpus"][1]["uuid"] = "GPU-elsewhere-1"


def _other_budget(data: dict[str, Any]) -> None:
    data["gpu_budget"] = {"gpus": [0, 1, 2, 3], "size": 4}


def _other_targets(data: dict[str, Any]) -> None:
    for entry in data["benchmarks"]:
        entry["summary"]["goodput_targets_ms"] = {"ttft": 500.0}


def _other_dataset(data: dict[str, Any]) -> None:
    for entry in data["benchmarks"]:
        if entry["workload"]["dataset"] is not None:
            entry["workload"]["dataset"] = "sharegpt-tiny"


def _other_attainment(data: dict[str, Any]) -> None:
    data["settings"]["slo_attainment_pct"] = 80.0


def _priced(gpu_usd_per_hour: float) -> Callable[[dict[str, Any]], None]:
    def change(data: dict[str, Any]) -> None:
        inputs = {"energy_usd_per_kwh": 0.12, "pue": 1.3, "gpu_usd_per_hour": gpu_usd_per_hour,
                  "grid_g_co2e_per_kwh": None}  # fmt: skip
        for entry in data["benchmarks"]:
            entry["summary"]["cost"] = {"inputs": inputs}

    return change


@pytest.mark.parametrize(
    ("change", "named"),
    [
        (_other_model, 'model: run-traditional ["/root/.cache/pd-energy-bench/tiny-llama-7fe66db69357"], '
                       'run-disaggregated ["/models/other", "/root/.cache/pd-energy-bench/tiny-llama-7fe66db69357"]'),
        (_other_gpu, '"uuid": "GPU-elsewhere-1"'),
        (_other_budget, 'gpu_budget: run-traditional null, run-disaggregated {"gpus": [0, 1, 2, 3], "size": 4}'),
        (_other_targets, 'goodput_targets_ms: run-traditional [{"ttft": 10000.0}], '
                         'run-disaggregated [{"ttft": 500.0}]'),
        (_other_dataset, 'datasets: run-traditional ["random"], run-disaggregated ["sharegpt-tiny"]'),
        (_other_attainment, "slo_attainment_pct: run-traditional 90.0, run-disaggregated 80.0"),
        (_priced(2.5), 'prices: run-traditional [], run-disaggregated [{"energy_usd_per_kwh": 0.12, '
                       '"gpu_usd_per_hour": 2.5, "grid_g_co2e_per_kwh": null, "pue": 1.3}] (cost and carbon hold at '
                       "one set of prices: measure every run with the same --energy-usd-per-kwh, --pue, "
                       "--gpu-usd-per-hour and --grid-gco2e-per-kwh, or all without them)"),
    ],
)  # fmt: skip
def test_runs_that_do_not_compare_are_refused_naming_the_key_and_each_runs_value(
    tmp_path: Path, change: Callable[[dict[str, Any]], None], named: str
) -> None:
    first, second = _split(tmp_path)
    _edit(second, change)
    with pytest.raises(ValueError, match="the runs do not compare") as refused:
        merge_runs([first, second], tmp_path / "merged")
    assert named in str(refused.value)
    assert not (tmp_path / "merged").exists()  # refused before anything is written


def test_runs_priced_alike_merge_and_priced_otherwise_are_refused(tmp_path: Path) -> None:
    first, second = _split(tmp_path)
    _edit(first, _priced(2.5))
    _edit(second, _priced(2.5))
    merge_runs([first, second], tmp_path / "merged")
    _edit(second, _priced(3.0))
    with pytest.raises(ValueError, match=r'prices: run-traditional \[\{.*"gpu_usd_per_hour": 2.5.*run-disaggregated'):
        merge_runs([first, second], tmp_path / "other")


def test_every_differing_key_is_named_at_once(tmp_path: Path) -> None:
    first, second = _split(tmp_path)
    _edit(second, _other_model)
    _edit(second, _other_attainment)
    with pytest.raises(ValueError) as refused:
        merge_runs([first, second], tmp_path / "merged")
    assert [part.split(":")[0] for part in str(refused.value).split(": ", 1)[1].split("; ")] == [
        "model", "slo_attainment_pct"
    ]  # fmt: skip


def test_runs_of_other_loads_or_the_same_benchmarks_are_refused(tmp_path: Path) -> None:
    first, second = _split(tmp_path)
    with pytest.raises(ValueError, match="benchmarks measured in more than one run: test_e2e"):
        merge_runs([first, first], tmp_path / "twice")
    data = json.loads((second / "results.json").read_text())
    (second / "results.json").write_text(json.dumps({**data, "prompt_seed": 1}))
    with pytest.raises(ValueError, match="different loads .* measure them with the same --seed"):
        merge_runs([first, second], tmp_path / "other-seed")
    with pytest.raises(ValueError, match="at least two"):
        merge_runs([first], tmp_path / "one")


def test_the_command_names_what_is_wrong(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    first, second = _split(tmp_path)
    main([str(tmp_path / "merged"), str(first), str(second)])
    assert capsys.readouterr().out.strip() == str(tmp_path / "merged" / "results.json")
    with pytest.raises(SystemExit):
        main([str(tmp_path / "merged"), str(first), str(second)])
    assert "holds a run already: give a new folder" in capsys.readouterr().err

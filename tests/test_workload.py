"""Workload shapes per phase and prompts of an exact token length that the prefix cache cannot reuse."""

from __future__ import annotations

import json
import math
import random
from dataclasses import replace
from pathlib import Path

import pytest

from plugin.load.workload import (
    FALLBACK_VOCAB,
    default_max_model_len,
    longest_sequence,
    make_prompts,
    serving_workloads,
    vocab_range,
    workloads_for,
)
from plugin.option_values import DatasetSpec, RequestRates, Sizes
from plugin.records.workload import Workload
from tests.settings import make_settings

SIZES = Sizes(
    prefill_input_lens=(8, 16),
    decode_output_lens=(4,),
    decode_prompt_len=3,
    e2e_input_len=10,
    e2e_output_len=5,
    concurrency=(1, 4),
    num_requests=2,
)


def test_prompts_have_exact_length_distinct_ids_in_range() -> None:
    prompts = make_prompts(50, 7, (2, 40), random.Random(0))
    assert len(prompts) == 50
    assert all(len(prompt) == 7 for prompt in prompts)
    assert len({tuple(prompt) for prompt in prompts}) == 50
    assert all(2 <= token <= 39 for prompt in prompts for token in prompt)


def test_prompts_follow_the_seed() -> None:
    assert make_prompts(3, 5, (2, 1000), random.Random(1)) == make_prompts(3, 5, (2, 1000), random.Random(1))
    assert make_prompts(3, 5, (2, 1000), random.Random(1)) != make_prompts(3, 5, (2, 1000), random.Random(2))


def test_every_possible_prompt_when_count_is_exactly_reachable() -> None:
    prompts = make_prompts(4, 2, (5, 7), random.Random(0))
    assert sorted(prompts) == [[5, 5], [5, 6], [6, 5], [6, 6]]


def test_impossible_prompt_count_raises() -> None:
    with pytest.raises(ValueError, match="cannot make 5 distinct prompts of 2 tokens from 2 token ids"):
        make_prompts(5, 2, (5, 7), random.Random(0))


def test_prefill_workloads_ask_for_one_token_per_input_length_and_concurrency() -> None:
    assert workloads_for("prefill", SIZES) == [
        Workload("prefill", 8, 1, 1, 2),
        Workload("prefill", 8, 1, 4, 4),  # at least one request per slot
        Workload("prefill", 16, 1, 1, 2),
        Workload("prefill", 16, 1, 4, 4),
    ]


def test_decode_and_e2e_workloads() -> None:
    assert workloads_for("decode", SIZES) == [Workload("decode", 3, 4, 1, 2), Workload("decode", 3, 4, 4, 4)]
    assert workloads_for("e2e", SIZES) == [Workload("e2e", 10, 5, 1, 2), Workload("e2e", 10, 5, 4, 4)]
    assert [w.id for w in workloads_for("e2e", SIZES)] == ["in10-out5-c1", "in10-out5-c4"]


def test_unknown_phase_raises() -> None:
    with pytest.raises(ValueError, match="unknown phase 'prefil'"):
        workloads_for("prefil", SIZES)


def test_longest_sequence_takes_the_largest_workload_of_any_phase() -> None:
    files = (DatasetSpec("sharegpt", Path("conversations.json")),)
    assert longest_sequence(make_settings(sizes=SIZES, datasets=files)) == 17  # prefill 16 + 1
    assert longest_sequence(make_settings(sizes=replace(SIZES, decode_output_lens=(4, 40)), datasets=files)) == 43
    # random serving prompts: ceil((100 + 5) x 1.5) = 158, plus the 4-token unique prefix
    assert longest_sequence(make_settings(sizes=replace(SIZES, e2e_input_len=100), random_range_ratio=0.5)) == 162


def test_file_datasets_get_vllms_2048_by_default_but_do_not_raise_the_check() -> None:
    files = make_settings(sizes=SIZES, datasets=(DatasetSpec("jsonl", Path("requests.jsonl")),))
    assert (longest_sequence(files), default_max_model_len(files)) == (17, 2048)
    assert default_max_model_len(make_settings(sizes=SIZES)) == 19  # random: 10 + 5 + 4


def test_serving_workloads_cross_datasets_and_rates_and_name_themselves() -> None:
    datasets = (DatasetSpec("random"), DatasetSpec("sharegpt", Path("data/tiny.json")))
    settings = make_settings(sizes=SIZES, datasets=datasets, request_rates=RequestRates((2.0, math.inf)))
    workloads = serving_workloads(settings)
    assert [w.id for w in workloads] == ["random-r2", "random-rinf", "sharegpt-tiny-r2", "sharegpt-tiny-rinf"]
    assert workloads[0] == Workload("serving", 10, 5, 0, 2, "random", 2.0, 1.0, None, None)
    capped = serving_workloads(replace(settings, datasets=datasets[:1], max_concurrency=8, duration_s=30.0))
    assert [(w.id, w.duration_s) for w in capped] == [("random-r2-c8", 30.0), ("random-rinf-c8", 30.0)]


def test_a_sweep_measures_sync_and_max_first() -> None:
    settings = make_settings(sizes=SIZES, request_rates=RequestRates(sweep_points=3))
    assert [w.id for w in serving_workloads(settings)] == [
        "random-sweep-sync", "random-sweep-max", "random-sweep-1", "random-sweep-2", "random-sweep-3"
    ]  # fmt: skip


def test_a_capacity_search_has_its_probe_slots_then_the_shared_grid() -> None:
    settings = make_settings(sizes=SIZES, request_rates=RequestRates(capacity_points=2), max_probes=3)
    assert [w.id for w in serving_workloads(settings)] == [
        "random-probe1", "random-probe2", "random-probe3", "random-grid1", "random-grid2"
    ]  # fmt: skip


@pytest.mark.parametrize(
    ("vocab_size", "expected"),
    [(512, (2, 512)), (5000, (100, 5000)), (128256, (100, 30000))],
)
def test_vocab_range_from_config(tmp_path: Path, vocab_size: int, expected: tuple[int, int]) -> None:
    (tmp_path / "config.json").write_text(json.dumps({"vocab_size": vocab_size}))
    assert vocab_range(str(tmp_path)) == expected


@pytest.mark.parametrize("config", [None, "{not json", json.dumps({"hidden_size": 64})])
def test_vocab_range_falls_back_without_a_readable_config(tmp_path: Path, config: str | None) -> None:
    if config is not None:
        (tmp_path / "config.json").write_text(config)
    assert vocab_range(str(tmp_path)) == FALLBACK_VOCAB


def test_vocab_range_of_a_hub_name_falls_back() -> None:
    assert vocab_range("meta-llama/Llama-3.1-8B") == FALLBACK_VOCAB

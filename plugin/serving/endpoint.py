"""A ready server to send load to, and how the suite learns what it serves: the model name from ``/v1/models``
(the served name, which ``--served-model-name`` may set) and the tiny model built in vLLM's interpreter."""

from __future__ import annotations

import json
import subprocess
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from plugin.errors import BenchError

PACKAGE_ROOT = Path(__file__).resolve().parents[2]


@dataclass(frozen=True, slots=True)
class Endpoint:
    """A ready OpenAI-compatible server (or the proxy): where it is, the model name it serves, token ids safe to
    send, and the GPUs behind it with each one's role (``prefill``, ``decode`` or ``prefill+decode``)."""

    url: str
    model: str
    vocab: tuple[int, int]
    gpu_roles: Mapping[int, str] = field(default_factory=dict)
    metrics_url: str | None = None
    """Where ``/metrics`` and ``/tokenize`` are (the proxy has neither: a decode instance's); default: ``url``."""
    model_dir: str | None = None
    """The model's folder when the suite started the server from one (its tokenizer is read from there)."""
    node_gpus: tuple[tuple[str, int, str], ...] = ()
    """``(node id, GPU index there, role)`` of each GPU an instance on a Ray node was given (``--ray-address``)."""
    warmup_requests: int = 1
    """Warm-up requests, sent together, that reach every server behind the endpoint (``topology.warmup_requests``).
    One request warmed one prefill/decode pair only, and each other pair's first measured request paid its NIXL
    handshake."""


def served_model(url: str) -> str:
    try:
        with urllib.request.urlopen(f"{url}/v1/models", timeout=10) as response:
            return str(json.load(response)["data"][0]["id"])
    except (OSError, ValueError, KeyError, IndexError) as error:
        raise BenchError(f"cannot read the model from {url}/v1/models ({error}); is it a vLLM server?") from None


def build_tiny_model(python: str, cache_dir: Path) -> str:
    """Build (or reuse) the tiny model in the vLLM interpreter, which has torch and transformers."""
    done = subprocess.run(
        [python, "-m", "plugin.serving.tiny_model", str(cache_dir)],
        cwd=PACKAGE_ROOT,
        capture_output=True,
        text=True,
    )
    if done.returncode != 0:
        raise BenchError(f"building the tiny model failed:\n{done.stderr[-3000:]}")
    return done.stdout.strip().splitlines()[-1]

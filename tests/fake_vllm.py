"""A stand-in 'vLLM interpreter' for fault-injection tests (never for measuring): it answers the suite's version
probe, and where vLLM's OpenAI server would start it serves ``tests/stub_upstream.py`` on the same port, under
the ``--served-model-name`` it is given. ``FAKE_VLLM_EXIT_AFTER=N`` makes a server started without
``--kv-transfer-config`` (the traditional one) exit with code 3 when completion N + 1 arrives, as a crashed
engine does; ``FAKE_VLLM_HANG_DECODE=1`` makes a decode instance (``kv_consumer``) never answer, as one waiting for
KV that never comes does. Use it through ``wrapper(folder)``, which writes an executable that runs this file."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

STUB = Path(__file__).resolve().with_name("stub_upstream.py")
VERSION = "0.32.0"


def wrapper(folder: Path) -> str:
    """An executable to pass as ``--vllm-python``."""
    path = folder / "fake-vllm-python"
    path.write_text(f'#!/bin/sh\nexec "{sys.executable}" "{Path(__file__).resolve()}" "$@"\n')
    path.chmod(0o755)
    return str(path)


def main(argv: list[str]) -> None:
    if argv[:1] == ["-c"]:  # plugin.serving.servers.vllm_version's probe
        print(VERSION)
        return
    if argv[:2] != ["-m", "vllm.entrypoints.openai.api_server"]:
        sys.exit(f"fake vLLM: cannot run {argv}")
    parser = argparse.ArgumentParser()
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", required=True)
    parser.add_argument("--served-model-name")
    parser.add_argument("--kv-transfer-config")
    args, _ = parser.parse_known_args(argv[2:])
    stub = [sys.executable, str(STUB), "--host", args.host, "--port", args.port]
    if args.served_model_name:
        stub += ["--served-model-name", args.served_model_name]
    exit_after = os.environ.get("FAKE_VLLM_EXIT_AFTER")
    if exit_after and not args.kv_transfer_config:
        stub += ["--exit-after", exit_after]
    if os.environ.get("FAKE_VLLM_HANG_DECODE") and "kv_consumer" in (args.kv_transfer_config or ""):
        stub += ["--fault", "hang"]
    print("fake vLLM: Application startup complete", flush=True)
    os.execv(sys.executable, stub)


if __name__ == "__main__":
    main(sys.argv[1:])

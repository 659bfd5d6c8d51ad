"""The Ray actor that owns one vLLM instance on its node (``ray.remote(InstanceActor)``, made by
``ray_launcher``). It owns its server through ``plugin.serving.process``: its own process group, a log and a pid
file on the node's disk (where ``python -m plugin.serving.cleanup --ray-address`` finds it), and a
``plugin.serving.watchdog`` (with a pid file of its own) that ends the server's group if the actor dies without
``stop()`` (``ray.kill``, its driver gone).
"""

from __future__ import annotations

import os
import sys
from dataclasses import replace
from pathlib import Path

from plugin.serving.endpoint import PACKAGE_ROOT
from plugin.serving.process import ManagedProcess, log_tail, start
from plugin.serving.servers import ServerSpec, command, environment, free_port


class InstanceActor:
    """Made on the chosen node: serves ``spec`` on the node's IP and a port free there, on the GPUs Ray assigned,
    once ``start()`` is called; every method returns at once, so ``stop()`` never waits in a queue."""

    def __init__(self, name: str, spec: ServerSpec, log_dir: str, pid_dir: str, grace_s: float = 20.0) -> None:
        import ray

        host: str = ray.util.get_node_ip_address()  # type: ignore[no-untyped-call]
        gpus = tuple(int(gpu) for gpu in ray.get_gpu_ids()) if spec.gpus else ()
        env = spec.extra_env
        if any(key == "VLLM_NIXL_SIDE_CHANNEL_PORT" for key, _ in env):
            env += (("VLLM_NIXL_SIDE_CHANNEL_HOST", host),)
        self.name = name
        self.spec = replace(spec, host=host, port=free_port(host), gpus=gpus, extra_env=env)
        self.grace_s = grace_s
        self.log_dir, self.pid_dir = Path(log_dir), Path(pid_dir)
        self.process: ManagedProcess | None = None
        self.watchdog: ManagedProcess | None = None

    def served_spec(self) -> ServerSpec:
        return self.spec

    def start(self) -> None:
        """The server, then its watchdog, armed (forked out of this actor's children) before this returns."""
        name, log = self.name, self.log_dir / f"{self.name}.log"
        self.process = start(name, command(self.spec), environment(self.spec), log, self.pid_dir, self.grace_s, False)
        watch = [sys.executable, "-m", "plugin.serving.watchdog", str(os.getpid()), str(self.process.pid),
                 str(self.grace_s)]  # fmt: skip
        env = {**os.environ, "PYTHONPATH": str(PACKAGE_ROOT)}
        self.watchdog = start(f"{name}-watchdog", watch, env, self.log_dir / f"{name}-watchdog.log", self.pid_dir,
                              watch=False)  # fmt: skip
        self.watchdog.popen.wait(timeout=30)

    def exit_code(self) -> int | None:
        return None if self.process is None else self.process.exit_code()

    def log_tail(self, lines: int = 30) -> str:
        return log_tail(self.log_dir / f"{self.name}.log", lines)

    def stop(self) -> int | None:
        """SIGTERM, then SIGKILL, the server's group; then the watchdog. Safe to call twice; the exit code."""
        if self.process is None:
            return None
        self.process.stop(self.grace_s)
        if self.watchdog is not None:
            self.watchdog.stop(5.0)
        return self.process.exit_code()

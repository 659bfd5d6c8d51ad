"""``deploy`` over a launcher, with the stand-in vLLM (``tests/fake_vllm.py``) as local processes: what each
topology records, where the load goes, the order instances start in (those that share a GPU one after another,
each ready before the next loads: vLLM sizes its KV cache by the GPU memory it sees free), and that no process
outlives its deployment, also when a server fails to start."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, cast

import pytest

from plugin import deploy_settings
from plugin.errors import ServerStartError
from plugin.records.topology import Topology, parse_topology
from plugin.serving.cluster import ClusterInstance
from plugin.serving.deploy import Deployment, DeployOptions, DeployPlan, deploy, launcher_for
from plugin.serving.launcher import START_HINT, Launcher, PlacedInstance
from plugin.serving.local_launcher import LocalLauncher
from plugin.serving.process import ServerProcess, http_ok
from plugin.serving.topology import Placement
from tests.fake_vllm import VERSION, wrapper
from tests.settings import make_settings
from tests.test_launcher import dying_python

pytestmark = pytest.mark.slow  # real processes: the stand-in servers and the proxy start in a few seconds


def options(python: str, tmp_path: Path) -> DeployOptions:
    return DeployOptions(
        vllm_python=python, model="fake-model", model_cache_dir=tmp_path, max_model_len=256, dtype=None,
        vllm_args=("--vllm-arg-from-the-user",), kv_connector="example", server_start_timeout_s=30,
        request_timeout_s=30,
    )  # fmt: skip


class Run:
    """The run's side of a deployment: its folder, the entry recorded and the progress lines."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.entries: list[dict[str, Any]] = []
        self.lines: list[str] = []
        self.versions: list[str | None] = []

    def plan(self, topology: Topology, placement: Placement, deploy_options: DeployOptions) -> DeployPlan:
        def open_run(version: str | None) -> Path:
            self.versions.append(version)
            return self.folder

        return DeployPlan(topology, placement, deploy_options, open_run, self.entries.append, {}, self.lines.append,
                          lambda model: (2, 100))  # fmt: skip


class Recording:
    """A launcher that tells what it is asked, in order, and hands each call to the local one."""

    def __init__(self, inner: Launcher, calls: list[str]) -> None:
        self.inner, self.calls = inner, calls

    def place(self, instances: Sequence[ClusterInstance]) -> list[PlacedInstance]:
        return self.inner.place(instances)

    def start(self, placed: PlacedInstance) -> ServerProcess:
        self.calls.append(f"start {placed.name}")
        return self.inner.start(placed)

    def wait_ready(self, placed: Sequence[PlacedInstance], timeout_s: float) -> None:
        self.inner.wait_ready(placed, timeout_s)
        self.calls.extend(f"ready {instance.name}" for instance in placed)

    def stop(self) -> None:
        self.calls.append("stop")
        self.inner.stop()


def recording(calls: list[str]) -> Callable[[DeployOptions, Path, Callable[[str], None]], Launcher]:
    return lambda opts, folder, say: Recording(launcher_for(opts, folder, say), calls)


def gone(deployment: Deployment) -> bool:
    return all(process.exit_code() is not None for process in deployment.processes)


def test_a_data_parallel_server_is_recorded_served_and_stopped(tmp_path: Path) -> None:
    run = Run(tmp_path)
    topology = parse_topology("dp:2")
    placement = Placement((), (), (), {})
    with deploy(run.plan(topology, placement, options(wrapper(tmp_path), tmp_path))) as deployment:
        (entry,) = run.entries
        assert http_ok(f"{deployment.endpoint.url}/health")
        assert deployment.endpoint.url == entry["url"] and deployment.endpoint.model == "stub-model"
        assert deployment.endpoint.warmup_requests == 2 and deployment.endpoint.vocab == (2, 100)
        assert [process.name for process in deployment.processes] == ["dp2-server"]
    assert run.versions == [VERSION]
    assert entry == {
        "mode": "started", "url": entry["url"], "model": "fake-model", "gpus": [], "log": "dp2-server.log",
        "command": [wrapper(tmp_path), "-m", "vllm.entrypoints.openai.api_server", "--model", "fake-model",
                    "--host", "127.0.0.1", "--port", entry["url"].rsplit(":", 1)[1], "--max-model-len", "256",
                    "--enable-prompt-tokens-details", "--data-parallel-size", "2", "--vllm-arg-from-the-user"],
    }  # fmt: skip
    assert gone(deployment) and not list((tmp_path / "pids").iterdir())
    assert "starting dp2-server, log: " in run.lines[0] and "dp2-server ready after" in run.lines[1]


@pytest.mark.parametrize(
    ("prefill", "decode", "order"),
    [
        ((0,), (1,), ["start prefill0", "start decode0", "ready prefill0", "ready decode0"]),
        ((0,), (0,), ["start prefill0", "ready prefill0", "start decode0", "ready decode0"]),
    ],
    ids=["separate-gpus-together", "shared-gpu-one-after-another"],
)
def test_the_instances_start_in_order_behind_the_proxy(
    tmp_path: Path, prefill: tuple[int, ...], decode: tuple[int, ...], order: list[str]
) -> None:
    run, calls = Run(tmp_path), list[str]()
    plan = run.plan(Topology("disaggregated", "disaggregated"), Placement((), prefill, decode, {}),
                    options(wrapper(tmp_path), tmp_path))  # fmt: skip
    with deploy(plan, recording(calls)) as deployment:
        (entry,) = run.entries
        assert calls == order
        endpoint = deployment.endpoint
        assert endpoint.url == entry["url"] and http_ok(f"{endpoint.url}/health")
        assert [i["name"] for i in entry["instances"]] == ["prefill0", "decode0"]
        assert endpoint.metrics_url == entry["instances"][1]["url"]
        assert [process.name for process in deployment.processes] == ["prefill0", "decode0", "proxy"]
    assert calls[-1] == "stop" and gone(deployment)
    assert set(entry) == {"kv_connector", "url", "model", "proxy", "instances"}
    assert entry["proxy"]["log"] == "proxy.log" and entry["proxy"]["command"][1:3] == ["-m", "proxy"]
    assert [i["gpus"] for i in entry["instances"]] == [list(prefill), list(decode)]
    assert not (tmp_path / "kv_store").exists() and not list((tmp_path / "pids").iterdir())


def test_a_server_that_exits_while_loading_fails_with_its_log_and_nothing_survives(tmp_path: Path) -> None:
    run, calls = Run(tmp_path), list[str]()
    plan = run.plan(Topology("disaggregated", "disaggregated"), Placement((), (None,), (None,), {}),
                    options(dying_python(tmp_path), tmp_path))  # fmt: skip
    with pytest.raises(ServerStartError) as error, deploy(plan, recording(calls)):
        pytest.fail("the deployment was ready")
    message = str(error.value)
    assert "exited with code 7 before it was ready" in message and "CUDA out of memory" in message
    assert message.endswith(START_HINT)
    assert calls == ["start prefill0", "start decode0", "stop"] and run.entries  # recorded before the start
    assert not list((tmp_path / "pids").iterdir())


def test_the_ray_placement_timeout_reaches_the_ray_launcher(tmp_path: Path) -> None:
    """``--ray-placement-timeout-s`` flows from the settings to the launcher's wait for a node's GPUs."""
    from plugin.serving.ray_launcher import RayLauncher
    from plugin.serving.ray_placement import RayPlacement

    deploy_options = deploy_settings.deploy_options(make_settings(ray_address="auto", ray_placement_timeout_s=7.5))
    placement = cast(RayPlacement, object())  # the run's connection: not opened here, the launcher only keeps it
    launcher = launcher_for(deploy_options, tmp_path, print, placement)
    assert isinstance(launcher, RayLauncher) and launcher.placement_timeout_s == 7.5
    assert RayLauncher(placement, {}, tmp_path).placement_timeout_s == make_settings().ray_placement_timeout_s == 120


def test_the_launcher_is_the_local_one_without_a_ray_address(tmp_path: Path) -> None:
    assert isinstance(launcher_for(options("python", tmp_path), tmp_path, print), LocalLauncher)

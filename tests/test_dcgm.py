"""The DCGM exporter power source against a stand-in exporter over real HTTP on loopback (``tests/dcgm_exporter.py``):
GPUs of two hosts told apart by their labels, window energy from counter differences across a reset, a missing field
as ``None``, the collection interval measured, exporters that do not answer named, the option values, and the
sampler driving it all."""

from __future__ import annotations

import socket
import time
from pathlib import Path

import pytest

from plugin.errors import BenchError
from plugin.gpu_roles import excluded_gpus, exporter_roles
from plugin.option_values import parse_gpu_role, parse_power_source
from plugin.power import PowerError, PowerReadError, Sampler
from plugin.power.dcgm import DcgmBackend, DcgmGpu, estimate_update_interval_s
from plugin.power.window import counter_delta_mj
from tests.dcgm_exporter import POWER_BLANK, DcgmExporter, Gpu, payload


class FakeClock:
    def __init__(self) -> None:
        self.t_s = 100.0

    def __call__(self) -> float:
        return self.t_s


NODE_A = [Gpu("node-a", 1, power_w=310.5, energy_mj=7_000_000, sm_clock_mhz=1755), Gpu("node-a", 0, power_w=402.25)]
NODE_B = [Gpu("node-b", 0, power_w=88.0, sm_clock_mhz=345), Gpu("node-b", 1, power_w=120.125, host_label="hostname")]


def _unused_url() -> str:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    return f"http://127.0.0.1:{port}/metrics"


def test_gpus_of_two_hosts_are_numbered_by_exporter_then_host_and_gpu() -> None:
    with DcgmExporter(payload(NODE_A)) as a, DcgmExporter(payload(NODE_B)) as b:
        backend = DcgmBackend([a.url, b.url])
    assert backend.name == "dcgm" and backend.gpus == (0, 1, 2, 3)
    assert backend.gpu_info[0] == DcgmGpu(0, "node-a", 0, NODE_A[1].uuid, a.url)
    assert [(g.name, g.url) for g in backend.gpu_info] == [
        ("node-a:0", a.url),
        ("node-a:1", a.url),
        ("node-b:0", b.url),
        ("node-b:1", b.url),  # a lower-case `hostname` label names the host too
    ]
    assert backend.index_of("node-b", 1) == 3
    with pytest.raises(BenchError, match=r"node-c:0: the DCGM exporters list no GPU .*known: node-a:0, node-a:1, "):
        backend.index_of("node-c", 0)


def test_one_scrape_per_exporter_gives_power_and_clock_of_each_gpu() -> None:
    with DcgmExporter(payload(NODE_A)) as a, DcgmExporter(payload(NODE_B)) as b:
        backend = DcgmBackend([a.url, b.url])
        a.serve(payload(NODE_A))
        b.serve(payload(NODE_B))
        samples = backend.read_samples()
        assert (a.scrapes, b.scrapes) == (1, 1)
    by_gpu = {s.gpu: s for s in samples}
    assert [(by_gpu[i].power_w, by_gpu[i].sm_clock_mhz) for i in range(4)] == [
        (402.25, 1980),
        (310.5, 1755),
        (88.0, 345),
        (120.125, 1980),
    ]
    assert all(s.power_instant_w is None and s.power_avg_w == s.power_w and s.error is None for s in samples)
    assert all(s.mem_clock_mhz is None and s.temp_c is None and s.throttle_reasons is None for s in samples)


def test_the_instant_power_field_is_read_where_the_exporter_collects_it() -> None:
    """DCGM_FI_DEV_POWER_USAGE is a 1 s average on A100 and newer: where the exporter also lists the instant field,
    a sample's power is the instant one, with the average kept beside it."""
    gpus = [Gpu("node-a", 0, power_w=300.0, power_instant_w=412.5), Gpu("node-a", 1, power_w=150.0)]
    with DcgmExporter(payload(gpus)) as exporter:
        samples = {s.gpu: s for s in DcgmBackend([exporter.url]).read_samples()}
    assert (samples[0].power_w, samples[0].power_instant_w, samples[0].power_avg_w) == (412.5, 412.5, 300.0)
    assert (samples[1].power_w, samples[1].power_instant_w) == (150.0, None)


def test_a_sample_carries_the_exporters_collection_time_where_its_lines_are_stamped() -> None:
    """The exporter refreshes once per interval: a scrape reads values up to an interval old. Where it stamps its
    lines, each GPU's sample is timed at that stamp (on our clock); a stamp after the scrape, or implausibly old
    (the exporter's clock is off), is not believed; no stamp: the scrape's time."""
    clock, wall_s = FakeClock(), 1_765_000_000.0
    gpus = [
        Gpu("node-a", 0, collected_ms=round((wall_s - 2.5) * 1000)),  # collected 2.5 s before the scrape
        Gpu("node-a", 1),
        Gpu("node-a", 2, collected_ms=round((wall_s + 3600) * 1000)),  # an hour ahead: a clock that is off
        Gpu("node-a", 3, collected_ms=round((wall_s - 3600) * 1000)),  # an hour behind
    ]
    with DcgmExporter(payload(gpus)) as a:
        samples = {s.gpu: s for s in DcgmBackend([a.url], clock=clock, wall_clock=lambda: wall_s).read_samples()}
    assert [samples[gpu].t_s for gpu in range(4)] == [pytest.approx(clock.t_s - 2.5), clock.t_s, clock.t_s, clock.t_s]


def test_the_collection_interval_is_measured_from_the_stamps() -> None:
    """Scrapes every 0.3 s of an exporter collecting every 1 s see its changes 0.9 or 1.2 s apart; its stamps are
    1 s apart."""
    clock, wall_s = FakeClock(), [1_765_000_000.0]

    def scrape(k: int) -> str:  # at 0.3 k s: what the exporter collected at the last whole second
        collected_s = k * 3 // 10
        return payload(
            [Gpu("node-a", 0, energy_mj=1000 + collected_s, collected_ms=(1_765_000_000 + collected_s) * 1000)]
        )

    with DcgmExporter(*(scrape(k) for k in range(30))) as a:
        backend = DcgmBackend([a.url], clock=clock, wall_clock=lambda: wall_s[0], max_age_s=0.0)
        for _ in range(29):
            clock.t_s += 0.3
            wall_s[0] += 0.3
            backend.read_energy_mj(0)
        assert backend.update_interval_s(0) == pytest.approx(1.0)


def test_window_energy_is_the_counter_difference_and_one_scrape_serves_every_gpu_of_an_exporter() -> None:
    clock = FakeClock()
    before = [Gpu("node-a", 0, energy_mj=5_551_899_580), Gpu("node-a", 1, energy_mj=42)]
    after = [Gpu("node-a", 0, energy_mj=5_552_150_080), Gpu("node-a", 1, energy_mj=1_042)]
    with DcgmExporter(payload(before), payload(after)) as a:
        backend = DcgmBackend([a.url], clock=clock)
        start = [backend.read_energy_mj(0), backend.read_energy_mj(1)]  # the scrape made at open is recent
        clock.t_s += 1.0
        end = [backend.read_energy_mj(0), backend.read_energy_mj(1)]
        assert a.scrapes == 2
    assert start == [5_551_899_580, 42]
    assert [counter_delta_mj(s, e) for s, e in zip(start, end, strict=True) if s is not None and e is not None] == [
        250_500,
        1_000,
    ]


def test_a_counter_that_goes_down_is_a_reset_never_negative_energy() -> None:
    clock = FakeClock()
    counters = [9_000, 12_000, 500, 1_500, 1_500]  # a driver reload between the second and third scrape
    with DcgmExporter(*(payload([Gpu("node-a", 0, energy_mj=mj)]) for mj in counters)) as a:
        backend = DcgmBackend([a.url], clock=clock)
        readings = []
        for _ in counters:
            readings.append(backend.read_energy_mj(0))
            clock.t_s += 1.0
    assert readings == [9_000, 12_000, 12_500, 13_500, 13_500]
    assert counter_delta_mj(9_000, 13_500) == 4_500


def test_a_missing_or_blank_field_is_none_never_zero() -> None:
    clock = FakeClock()
    first = [Gpu("node-b", 0, sm_clock_mhz=None, energy_mj=None), Gpu("node-b", 1, power_w=POWER_BLANK)]
    later = [Gpu("node-b", 0, sm_clock_mhz=None, energy_mj=None), Gpu("node-b", 1, energy_mj=None)]
    with DcgmExporter(payload(first), payload(first), payload(later)) as b:
        backend = DcgmBackend([b.url], clock=clock)
        samples = backend.read_samples()
        assert backend.read_energy_mj(0) is None and backend.read_energy_mj(1) == 1_000_000
        clock.t_s += 1.0
        assert backend.read_energy_mj(1) is None  # the field went away
    assert [(s.power_w, s.sm_clock_mhz) for s in samples] == [(100.0, None), (None, 1980)]
    assert all(s.error is None for s in samples)


def test_the_collection_interval_is_the_smallest_gap_between_changes() -> None:
    scrapes = [(0.0, 1.0), (0.4, 1.0), (0.8, 2.0), (1.2, 2.0), (1.6, None), (2.0, 3.0), (2.8, 4.0), (4.0, 4.0)]
    assert estimate_update_interval_s(scrapes) == pytest.approx(0.8)  # changes at 0.8, 2.0 and 2.8 s
    assert estimate_update_interval_s(scrapes[:5]) is None  # one change tells no interval


def test_the_backend_measures_the_interval_and_the_sampler_takes_it(tmp_path: Path) -> None:
    clock = FakeClock()
    counters = [1_000, 1_000, 2_000, 2_000, 3_000, 3_000, 4_000]  # changes every other scrape
    with DcgmExporter(*(payload([Gpu("node-a", 0, energy_mj=mj)]) for mj in counters)) as a:
        backend = DcgmBackend([a.url], clock=clock)
        assert backend.update_interval_s(0) is None
        for _ in counters[1:]:
            clock.t_s += 0.5
            backend.read_samples()
    assert backend.update_interval_s(0) == pytest.approx(1.0)
    # The sampler's sensor interval (what short windows are flagged by) is the exporter's collection interval.
    assert Sampler(backend, tmp_path).update_interval_s(0) == pytest.approx(1.0)


def test_a_given_interval_wins_over_the_measured_one() -> None:
    with DcgmExporter(payload(NODE_A)) as a:
        backend = DcgmBackend([a.url], interval_s=30.0)
    assert backend.update_interval_s(1) == 30.0


def test_an_unreachable_exporter_at_open_is_named_with_what_to_do() -> None:
    url = _unused_url()
    with DcgmExporter(payload(NODE_A)) as a, pytest.raises(PowerError) as raised:
        DcgmBackend([a.url, url], timeout_s=2.0)
    message = str(raised.value)
    assert message.startswith(f"DCGM exporter {url} did not answer: ")
    assert message.endswith(f"; check that dcgm-exporter runs there and answers here: curl {url}")


def test_a_server_that_is_no_dcgm_exporter_is_refused() -> None:
    with DcgmExporter("# TYPE vllm:num_requests_running gauge\nvllm:num_requests_running 0\n") as a:
        with pytest.raises(PowerError, match=r"lists no GPU with DCGM_FI_DEV_POWER_USAGE or .*add them to its -f file"):
            DcgmBackend([a.url])
    with DcgmExporter("<html>login</html>") as a, pytest.raises(PowerError, match="answered with not Prometheus"):
        DcgmBackend([a.url])


def test_the_same_exporter_given_twice_is_refused() -> None:
    with (
        DcgmExporter(payload(NODE_A)) as a,
        pytest.raises(PowerError, match=r"is listed by .* give each exporter once"),
    ):
        DcgmBackend([a.url, a.url])


def test_an_exporter_that_stops_mid_run_gives_read_errors_naming_it() -> None:
    with DcgmExporter(payload(NODE_A)) as a, DcgmExporter(payload(NODE_B)) as b:
        backend = DcgmBackend([a.url, b.url], timeout_s=2.0, max_age_s=0.0)
        b.stop()
        samples = backend.read_samples()
        assert [s.power_w for s in samples[:2]] == [402.25, 310.5]
        assert all(s.power_w is None and f"DCGM exporter {b.url} did not answer" in str(s.error) for s in samples[2:])
        with pytest.raises(PowerReadError, match=f"DCGM exporter {b.url} did not answer"):
            backend.read_energy_mj(2)
        a.stop()
        with pytest.raises(PowerReadError, match=f"{a.url} did not answer.*; DCGM exporter {b.url} did not answer"):
            backend.read_samples()


def test_the_sampler_drives_it(tmp_path: Path) -> None:
    before, after = [Gpu("node-a", 0, energy_mj=1_000_000)], [Gpu("node-a", 0, energy_mj=1_300_000)]
    with DcgmExporter(payload(before)) as a:
        with Sampler(DcgmBackend([a.url], max_age_s=0.0), tmp_path, period_ms=20) as sampler:
            sampler.begin_window("w")
            time.sleep(0.1)
            a.serve(payload(after))
            window = sampler.end_window("w")
    (gpu,) = window.gpus
    assert window.backend == "dcgm" and gpu.energy_counter_j == 300.0
    assert gpu.samples >= 2 and gpu.max_power_w == 100.0 and sampler.error_count == 0


@pytest.mark.parametrize(
    ("text", "url"),
    [
        ("dcgm=http://node-a:9400/metrics", "http://node-a:9400/metrics"),
        ("dcgm=http://node-a:9400", "http://node-a:9400/metrics"),
        (" dcgm = https://10.0.0.7:9400/ ", "https://10.0.0.7:9400/metrics"),
    ],
)
def test_power_source_values(text: str, url: str) -> None:
    assert parse_power_source(text) == url


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("http://node-a:9400/metrics", "expected SOURCE=URL, such as dcgm=http://HOST:9400/metrics"),
        ("dcgm=", "expected SOURCE=URL"),
        ("nvml=http://node-a:9400", "unknown source 'nvml'; the one known is dcgm"),
        ("dcgm=node-a:9400", "'node-a:9400' is not an http(s) URL with a host"),
        ("dcgm=http://node-a:port/metrics", "is not an http(s) URL with a host"),
    ],
)
def test_power_source_errors(text: str, message: str) -> None:
    with pytest.raises(BenchError) as raised:
        parse_power_source(text)
    assert str(raised.value).startswith(f"--power-source {text!r}: ") and message in str(raised.value)


def test_gpu_role_values() -> None:
    assert parse_gpu_role("node-a:0=prefill") == ("node-a", 0, "prefill")
    assert parse_gpu_role("10.0.0.7:3=prefill+decode") == ("10.0.0.7", 3, "prefill+decode")
    assert parse_gpu_role("gpu-node.cluster.local:1=decode") == ("gpu-node.cluster.local", 1, "decode")
    assert parse_gpu_role("node-a:1=unused") == ("node-a", 1, "unused")  # of the budget, idle in this topology


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("node-a:0", "expected HOST:GPU=ROLE, such as node-a:0=prefill"),
        ("node-a=prefill", "expected HOST:GPU=ROLE, such as node-a:0=prefill"),
        (":0=prefill", "expected HOST:GPU=ROLE, such as node-a:0=prefill"),
        ("node-a:x=decode", "GPU 'x' is not an index (the exporter's gpu label: 0, 1, ...)"),
        ("node-a:0=both", "role 'both' is not one of prefill, decode, prefill+decode, unused"),
    ],
)
def test_gpu_role_errors(text: str, message: str) -> None:
    with pytest.raises(BenchError) as raised:
        parse_gpu_role(text)
    assert str(raised.value) == f"--gpu-role {text!r}: {message}"


# -- the options, through the plugin ------------------------------------------------------------------------


def test_bad_power_options_stop_the_run_before_anything_starts(pytester: pytest.Pytester) -> None:
    pytester.makepyfile("def test_plain():\n    pass\n")
    result = pytester.runpytest("--power-source=prom=http://h:9400/metrics")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["ERROR: --power-source 'prom=http://h:9400/metrics': unknown source 'prom'*"])
    result = pytester.runpytest("--gpu-role=node-a:0=prefill")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["ERROR: --gpu-role names GPUs of a DCGM exporter: give the exporter with*"])


def test_only_the_gpus_given_a_role_are_charged_and_the_rest_are_listed_as_excluded(tmp_path: Path) -> None:
    """The exporters list other tenants' GPUs too: none of them enters a window."""
    with DcgmExporter(payload(NODE_A)) as a, DcgmExporter(payload(NODE_B)) as b:
        backend = DcgmBackend([a.url, b.url])
        roles = exporter_roles(backend, (("node-b", 0, "decode"), ("node-a", 1, "prefill"), ("node-a", 0, "unused")))
        names = {gpu.index: gpu.name for gpu in backend.gpu_info}
        assert {names[index]: role for index, role in roles.items()} == {
            "node-a:1": "prefill", "node-b:0": "decode", "node-a:0": "unused",
        }  # fmt: skip
        with Sampler(backend, tmp_path, period_ms=20) as sampler:
            assert [names[gpu] for gpu in excluded_gpus(sampler, roles)] == ["node-b:1"]
            sampler.begin_window("w", tuple(roles))
            window = sampler.end_window("w")
    assert sorted(names[gpu.gpu] for gpu in window.gpus) == ["node-a:0", "node-a:1", "node-b:0"]


def test_an_exporter_without_gpu_roles_is_refused_before_anything_starts(pytester: pytest.Pytester) -> None:
    pytester.makepyfile("def test_plain():\n    pass\n")
    result = pytester.runpytest("--power-source=dcgm=http://node-a:9400/metrics")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["ERROR: --power-source charges only the GPUs of the run's budget: name each with "
                                 "--gpu-role HOST:GPU=ROLE*"])  # fmt: skip

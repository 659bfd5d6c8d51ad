"""``/metrics`` parsing on text made by vLLM 0.32's own stat logger (``tests/data/vllm-metrics``, two engine cores):
sums over labels, histogram buckets and ``_created`` kept out, labels kept by ``parse_families``, garbage and dead
servers giving an empty dict, and ``scrape`` over real HTTP on loopback."""

from __future__ import annotations

import http.server
import socket
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from plugin import prometheus_text
from plugin.serving import prometheus

DATA = Path(__file__).parent / "data" / "vllm-metrics"
AFTER = (DATA / "after.txt").read_text()
"""Requests A (queue 0.25 s) and B (0.5 s) finished on engine 0, C (0.0625 s) on engine 1."""


def test_sums_each_series_over_its_labels_across_engines() -> None:
    totals = prometheus_text.parse(AFTER)
    assert totals["vllm:request_queue_time_seconds_count"] == 3.0
    assert totals["vllm:request_queue_time_seconds_sum"] == 0.25 + 0.5 + 0.0625
    assert totals["vllm:iteration_tokens_total_sum"] == 108 + 216 + 332
    assert totals["vllm:request_success_total"] == 3.0  # over engine and finished_reason
    assert totals[prometheus.TTFT_SUM] == 0.375 + 0.75 + 0.5625
    assert totals[prometheus.TTFT_COUNT] == 3.0
    assert totals[prometheus.PREFIX_CACHE_QUERIES] == 0.0


def test_buckets_and_created_timestamps_are_not_totals() -> None:
    totals = prometheus_text.parse(AFTER)
    assert not [name for name in totals if name.endswith(("_bucket", "_created"))]
    assert "vllm:request_queue_time_seconds_bucket" in AFTER and "vllm:prefix_cache_queries_created" in AFTER


def test_families_keep_labels_and_types() -> None:
    families = prometheus_text.parse_families(AFTER)
    queue = families["vllm:request_queue_time_seconds"]
    assert queue.type == "histogram"
    assert queue.help == "Histogram of time spent in WAITING phase for request."
    buckets = {(s.labels["engine"], s.labels["le"]): s.value for s in queue.samples if s.name.endswith("_bucket")}
    assert buckets[("0", "0.3")] == 1.0  # A (0.25 s) only: B took 0.5 s
    assert buckets[("0", "+Inf")] == 2.0
    assert buckets[("1", "0.3")] == 1.0
    assert {s.labels["model_name"] for s in queue.samples} == {"tiny"}
    assert families["vllm:prefix_cache_queries"].type == "counter"  # a counter's family drops `_total`


def test_a_summary_keeps_its_sum_and_count_but_not_its_quantiles() -> None:
    text = (
        "# HELP rpc_seconds RPC latency.\n# TYPE rpc_seconds summary\n"
        'rpc_seconds{quantile="0.5"} 0.25\nrpc_seconds{quantile="0.9"} 0.75\n'
        "rpc_seconds_sum 3.5\nrpc_seconds_count 7\n"
    )
    assert prometheus_text.parse(text) == {"rpc_seconds_sum": 3.5, "rpc_seconds_count": 7.0}


def test_untyped_lines_of_one_name_add_up_and_a_timestamp_is_not_the_value() -> None:
    text = 'dcgm_power_usage{gpu="0"} 100.5 1700000000000\ndcgm_power_usage{gpu="1"} 50.25 1700000000000\n'
    assert prometheus_text.parse(text) == {"dcgm_power_usage": 150.75}
    samples = prometheus_text.parse_families(text)["dcgm_power_usage"].samples
    assert [(s.labels, s.value) for s in samples] == [({"gpu": "0"}, 100.5), ({"gpu": "1"}, 50.25)]


@pytest.mark.parametrize(
    "text",
    [
        "<html><body><h1>404 Not Found</h1></body></html>\n",
        '{"detail":"Not Found"}',
        "\x00\x01\x02",
        AFTER[: AFTER.index('{engine="0"', AFTER.index("vllm:request_queue_time_seconds_sum")) + 5],  # cut mid-label
    ],
    ids=["html", "json", "binary", "truncated"],
)
def test_garbage_gives_no_totals(text: str) -> None:
    assert prometheus_text.parse(text) == {}
    with pytest.raises(prometheus_text.MetricsFormatError):
        prometheus_text.parse_families(text)


class _Handler(http.server.BaseHTTPRequestHandler):
    """Answers ``/metrics`` with the server's ``body`` and ``status``; anything else 404."""

    def do_GET(self) -> None:  # noqa: N802 (http.server's name)
        server = self.server
        assert isinstance(server, _MetricsServer)
        status = server.status if self.path == "/metrics" else 404
        body = server.body.encode()
        self.send_response(status)
        self.send_header("Content-Type", "text/plain; version=0.0.4; charset=utf-8")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002 (the base class's name)
        pass


class _MetricsServer(http.server.ThreadingHTTPServer):
    body = ""
    status = 200


@pytest.fixture
def metrics_server() -> Iterator[_MetricsServer]:
    server = _MetricsServer(("127.0.0.1", 0), _Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


def _url(server: _MetricsServer) -> str:
    host, port = server.server_address[:2]
    return f"http://{host!s}:{port}"


def test_scrape_reads_a_live_metrics_endpoint(metrics_server: _MetricsServer) -> None:
    metrics_server.body = AFTER
    assert prometheus.scrape(_url(metrics_server)) == prometheus_text.parse(AFTER)
    assert prometheus.scrape(_url(metrics_server))["vllm:request_decode_time_seconds_sum"] == 0.5 + 1.0 + 2.0


@pytest.mark.parametrize(("status", "body"), [(500, "oops"), (200, "<html>a login page</html>")])
def test_scrape_of_an_error_or_a_page_that_is_not_metrics_is_empty(
    metrics_server: _MetricsServer, status: int, body: str
) -> None:
    metrics_server.status, metrics_server.body = status, body
    assert prometheus.fetch(_url(metrics_server)) == (None if status != 200 else body)
    assert prometheus.scrape(_url(metrics_server)) == {}


def test_scrape_of_nothing_listening_is_empty() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    assert prometheus.scrape(f"http://127.0.0.1:{port}", timeout_s=2.0) == {}

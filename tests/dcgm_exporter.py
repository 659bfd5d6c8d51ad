"""A stand-in for dcgm-exporter in tests: a stdlib HTTP server on 127.0.0.1 that answers each scrape of ``/metrics``
with the next of a scripted list of payloads (the last one repeats), written as dcgm-exporter 3.x/4.x writes them:
``# HELP`` / ``# TYPE`` lines, one series per GPU labelled ``gpu``, ``UUID``, ``pci_bus_id``, ``device``,
``modelName``, ``Hostname`` and ``DCGM_FI_DRIVER_VERSION``, and fields the power source does not read in between."""

from __future__ import annotations

import http.server
import threading
import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from types import TracebackType

POWER_BLANK = 140737488355328.0
"""DCGM_FP64_BLANK: what the exporter prints for a double field that has no value."""
TEMP_BLANK = 9223372036854775794
"""One of DCGM's int64 blanks, as dcgm-exporter's README shows for DCGM_FI_DEV_MEMORY_TEMP."""

_FIELDS = (
    ("DCGM_FI_DEV_SM_CLOCK", "gauge", "SM clock frequency (in MHz).", "sm_clock_mhz"),
    ("DCGM_FI_DEV_MEMORY_TEMP", "gauge", "Memory temperature (in C).", None),
    ("DCGM_FI_DEV_POWER_USAGE", "gauge", "Power draw (in W).", "power_w"),
    ("DCGM_FI_DEV_POWER_USAGE_INSTANT", "gauge", "Current power draw (in W).", "power_instant_w"),
    ("DCGM_FI_DEV_TOTAL_ENERGY_CONSUMPTION", "counter", "Total energy consumption since boot (in mJ).", "energy_mj"),
)


@dataclass(frozen=True)
class Gpu:
    """One GPU in one payload; ``None`` leaves its line out (a field the exporter does not collect for it)."""

    host: str
    gpu: int
    power_w: float | None = 100.0
    energy_mj: int | None = 1_000_000
    sm_clock_mhz: int | None = 1980
    host_label: str = "Hostname"
    power_instant_w: float | None = None
    collected_ms: int | None = None
    """The collection time (Unix ms) the exporter stamps each of the GPU's lines with; ``None``: no stamp."""

    @property
    def uuid(self) -> str:
        return f"GPU-{zlib.crc32(self.host.encode()):08x}-5fd4-{self.gpu:04x}"


def payload(gpus: Sequence[Gpu]) -> str:
    """The exporter's answer for these GPUs."""
    lines: list[str] = []
    for name, kind, help_text, attribute in _FIELDS:
        lines += [f"# HELP {name} {help_text}", f"# TYPE {name} {kind}"]
        for gpu in gpus:
            value = TEMP_BLANK if attribute is None else getattr(gpu, attribute)
            if value is None:
                continue
            labels = (
                f'gpu="{gpu.gpu}",UUID="{gpu.uuid}",pci_bus_id="00000000:{gpu.gpu + 7:02X}:00.0",'
                f'device="nvidia{gpu.gpu}",modelName="NVIDIA H100 80GB HBM3",{gpu.host_label}="{gpu.host}",'
                'DCGM_FI_DRIVER_VERSION="550.54.15"'
            )
            stamp = "" if gpu.collected_ms is None else f" {gpu.collected_ms}"
            lines.append(
                f"{name}{{{labels}}} {value:.6f}{stamp}"
                if isinstance(value, float)
                else f"{name}{{{labels}}} {value}{stamp}"
            )
    return "\n".join(lines) + "\n"


class _Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:  # noqa: N802 (http.server's name)
        server = self.server
        assert isinstance(server, _Server)
        with server.lock:
            body = server.payloads[min(server.scrapes, len(server.payloads) - 1)].encode()
            server.scrapes += self.path == "/metrics"
        self.send_response(200 if self.path == "/metrics" else 404)
        self.send_header("Content-Type", "text/plain; version=0.0.4; charset=utf-8")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002 (the base class's name)
        pass


class _Server(http.server.ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.lock = threading.Lock()
        self.payloads: list[str] = [payload([])]
        self.scrapes = 0


class DcgmExporter:
    """``with DcgmExporter(text1, text2) as exporter:`` serves ``text1`` to the first scrape, then ``text2``..."""

    def __init__(self, *payloads: str) -> None:
        self._server = _Server()
        self.serve(*payloads)
        self._thread = threading.Thread(
            target=self._server.serve_forever, args=(0.02,), name="fake dcgm-exporter", daemon=True
        )
        self._stopped = False

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}/metrics"

    @property
    def scrapes(self) -> int:
        """Scrapes of ``/metrics`` answered since the last ``serve``."""
        with self._server.lock:
            return self._server.scrapes

    def serve(self, *payloads: str) -> None:
        """Script the next scrapes: the first gets ``payloads[0]``, and so on; the last repeats."""
        with self._server.lock:
            self._server.payloads = list(payloads) or [payload([])]
            self._server.scrapes = 0

    def stop(self) -> None:
        """Stop answering (a later scrape finds nothing listening); safe to call twice."""
        if not self._stopped:
            self._stopped = True
            if self._thread.is_alive():
                self._server.shutdown()
            self._server.server_close()
            self._thread.join()

    def __enter__(self) -> DcgmExporter:
        self._thread.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, traceback: TracebackType | None
    ) -> None:
        self.stop()

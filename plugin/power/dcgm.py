"""The DCGM exporter as a power source, for clusters the suite does not start: each scrape of an exporter's
``/metrics`` gives power, SM clock and the energy counter of all its GPUs, told apart by their labels.

Sampler indices: exporters in the order given, within one exporter its GPUs sorted by (host, ``gpu`` label), numbered
from 0 at open; ``DcgmBackend.gpu_info`` names each index (``DcgmGpu``). The exporter refreshes its values once per
collection interval (``-c``, 30 s unless set), so that interval is given or measured from the times the energy counter
changed; the sampler takes it as the sensor's update interval, so windows of only a few intervals are flagged
like any short window (``plugin.analysis.uncertainty``). Where the exporter stamps its lines with their collection
time (Prometheus text's optional timestamp), a GPU's sample and counter reading carry that time, moved onto our
clock; otherwise the middle of the scrape.
"""

from __future__ import annotations

import http.client
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field

from plugin.clock import now_s
from plugin.errors import BenchError
from plugin.option_values import POWER_SOURCE_EXAMPLE
from plugin.power.backend import PowerError, PowerReadError, Sample
from plugin.prometheus_text import MetricsFormatError, parse_families

POWER = "DCGM_FI_DEV_POWER_USAGE"  # W, gauge (a 1 s average on A100 and newer, as NVML's power usage)
POWER_INSTANT = "DCGM_FI_DEV_POWER_USAGE_INSTANT"  # W, gauge: the instant reading, where the exporter collects it
ENERGY = "DCGM_FI_DEV_TOTAL_ENERGY_CONSUMPTION"  # mJ since the driver loaded, counter
SM_CLOCK = "DCGM_FI_DEV_SM_CLOCK"  # MHz, gauge
MAX_STAMP_AGE_S = 120.0
"""A collection time older than this before the scrape (four default intervals), or after it, is taken as the
exporter's clock being off, and the scrape's own time is used."""
_BLANK = {POWER: 2.0**47, POWER_INSTANT: 2.0**47, SM_CLOCK: 2.0**47, ENERGY: 9.2e18}
"""At or above these, a value is one of DCGM's "blank" sentinels (DCGM_FP64_BLANK, DCGM_INT64_BLANK...): no value."""


@dataclass(frozen=True, slots=True)
class DcgmGpu:
    """What a sampler index stands for: ``host`` is the ``Hostname`` label (the URL's host without one), ``gpu``
    the exporter's ``gpu`` label."""

    index: int
    host: str
    gpu: int
    uuid: str | None
    url: str

    @property
    def name(self) -> str:
        return f"{self.host}:{self.gpu}"


@dataclass(frozen=True, slots=True)
class DcgmReading:
    """One GPU in one scrape; a field the exporter does not give (or gives as blank) is ``None``."""

    uuid: str | None
    power_w: float | None
    """``DCGM_FI_DEV_POWER_USAGE``: on A100 and newer a 1 s average."""
    sm_clock_mhz: float | None
    energy_mj: float | None
    power_instant_w: float | None = None
    """``DCGM_FI_DEV_POWER_USAGE_INSTANT`` where the exporter's field list has it: the sample's power then."""
    collected_s: float | None = None
    """When the exporter collected the power (else the energy) value, Unix seconds, where its line is stamped."""


_Readings = dict[tuple[str, int], DcgmReading]


@dataclass(frozen=True, slots=True)
class _Scrape:
    """One exporter's answer: ``t_s`` the middle of the request on our clock, ``collected_s`` each stamped GPU's
    collection time moved onto our clock (``DcgmReading.collected_s``)."""

    t_s: float
    readings: _Readings
    collected_s: dict[tuple[str, int], float]

    def time_of(self, key: tuple[str, int]) -> float:
        """When the GPU's values were collected: the stamp where there is one, else the scrape's time."""
        return self.collected_s.get(key, self.t_s)


@dataclass
class _Counter:
    """One GPU's energy counter made monotonic. A reading below the last is a reset (driver reload, or a wrap): the
    reading is then the energy since it, as Prometheus's ``increase`` counts it, so energy is never negative."""

    total_mj: float | None = None
    last_mj: float | None = None
    present: bool = False
    history: deque[tuple[float, float]] = field(default_factory=lambda: deque(maxlen=64))

    def feed(self, t_s: float, raw_mj: float | None) -> None:
        self.present = raw_mj is not None
        if raw_mj is None or raw_mj == self.last_mj:
            return
        if self.total_mj is None or self.last_mj is None:
            self.total_mj = raw_mj
        else:
            self.total_mj += raw_mj - self.last_mj if raw_mj > self.last_mj else raw_mj
        self.last_mj = raw_mj
        self.history.append((t_s, raw_mj))  # each new value once: enough to find the change times


def parse_scrape(text: str, default_host: str) -> _Readings:
    """Each GPU of one exporter's answer by (host, gpu). MIG instances and pods repeat a GPU's device-level values on
    several series: the first is kept. ``MetricsFormatError`` when the text is not Prometheus format."""
    fields: dict[tuple[str, int], dict[str, float | None]] = {}
    uuids: dict[tuple[str, int], str | None] = {}
    stamps: dict[tuple[str, int], float] = {}
    families = parse_families(text)
    for name in (POWER, POWER_INSTANT, SM_CLOCK, ENERGY):
        for series in families[name].samples if name in families else ():
            labels, value = series.labels, series.value
            if labels.get("gpu", "").isdigit():
                key = (labels.get("Hostname") or labels.get("hostname") or default_host, int(labels["gpu"]))
                uuids.setdefault(key, labels.get("UUID") or labels.get("uuid"))
                blank = value != value or value >= _BLANK[name]  # NaN, or a DCGM blank
                fields.setdefault(key, {}).setdefault(name, None if blank else value)
                if series.timestamp_s is not None and name != SM_CLOCK:  # power first, then the energy counter
                    stamps.setdefault(key, series.timestamp_s)
    return {
        key: DcgmReading(uuids[key], got.get(POWER), got.get(SM_CLOCK), got.get(ENERGY), got.get(POWER_INSTANT),
                         stamps.get(key))
        for key, got in fields.items()
    }  # fmt: skip


def estimate_update_interval_s(readings: Iterable[tuple[float, float | None]]) -> float | None:
    """The exporter's collection interval from successive scrapes of one value, ``(t_s, value)``: the smallest gap
    between the times it changed (a scrape sees a change up to one poll late). ``None`` before two changes."""
    known = [(t_s, value) for t_s, value in readings if value is not None]
    changes = [t_s for (_, before), (t_s, value) in zip(known, known[1:], strict=False) if value != before]
    return min((b - a for a, b in zip(changes, changes[1:], strict=False)), default=None)


class DcgmBackend:
    def __init__(
        self,
        urls: Sequence[str],
        interval_s: float | None = None,
        timeout_s: float = 5.0,
        max_age_s: float = 0.1,
        clock: Callable[[], float] = now_s,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        """Scrape each exporter once and number its GPUs; ``PowerError`` naming an exporter that does not answer.

        ``interval_s``: the collection interval where known (dcgm-exporter ``-c`` / 1000), else it is measured.
        ``max_age_s``: energy reads reuse a scrape this recent, so one scrape serves all GPUs at a window edge.
        ``wall_clock``: Unix time, to move the exporter's collection stamps onto ``clock``."""
        if not urls:
            raise PowerError(f"no DCGM exporter given: --power-source {POWER_SOURCE_EXAMPLE}")
        self._urls, self._interval_s, self._timeout_s = tuple(urls), interval_s, timeout_s
        self._max_age_s, self._clock, self._wall_clock = max_age_s, clock, wall_clock
        self._lock = threading.Lock()
        self._last_scrape_s: dict[str, float] = {}
        self._gpus: tuple[DcgmGpu, ...] = ()
        self._by_url: dict[str, list[DcgmGpu]] = {}
        self._counters: dict[int, _Counter] = {}
        for url in self._urls:
            self._open(url)
        self.gpu_info: tuple[DcgmGpu, ...] = self._gpus
        """What each sampler index stands for."""

    @property
    def name(self) -> str:
        return "dcgm"

    @property
    def gpus(self) -> tuple[int, ...]:
        return tuple(gpu.index for gpu in self._gpus)

    @property
    def unmeasured_reason(self) -> str | None:
        return None

    def read_samples(self) -> list[Sample]:
        """One scrape of every exporter; the GPUs of one that fails get an empty sample saying why. Raises
        ``PowerReadError`` when no exporter answers."""
        samples: list[Sample] = []
        failures: list[str] = []
        for url in self._urls:
            try:
                with self._lock:  # the counters see scrapes in order; a read at a window edge waits for this one
                    scrape = self._ingest(url, self._fetch(url))
            except PowerReadError as error:
                failures.append(str(error))
                samples += [_sample(self._clock(), gpu.index, None, str(error)) for gpu in self._by_url[url]]
                continue
            for gpu in self._by_url[url]:
                key = (gpu.host, gpu.gpu)
                reading = scrape.readings.get(key)
                missing = None if reading else "missing from the exporter"
                samples.append(_sample(scrape.time_of(key), gpu.index, reading, missing))
        if len(failures) == len(self._urls):
            raise PowerReadError("; ".join(failures))
        return samples

    def read_energy_mj(self, gpu: int) -> int | None:
        """The counter made monotonic (``_Counter``), from a scrape at most ``max_age_s`` old; ``None`` when the
        exporter's latest answer lacks the GPU's energy field."""
        url = self._gpu(gpu).url
        with self._lock:
            if self._clock() - self._last_scrape_s[url] > self._max_age_s:
                self._ingest(url, self._fetch(url))
            counter = self._counters[gpu]
            return round(counter.total_mj) if counter.present and counter.total_mj is not None else None

    def uuid(self, gpu: int) -> str | None:
        """The exporter's ``UUID`` label."""
        return self._gpu(gpu).uuid

    def update_interval_s(self, gpu: int) -> float | None:
        """The exporter's collection interval: as given, else measured from this GPU's counter (``None`` until the
        counter has changed twice)."""
        if self._interval_s is not None:
            return self._interval_s
        self._gpu(gpu)
        with self._lock:
            return estimate_update_interval_s(self._counters[gpu].history)

    def index_of(self, host: str, gpu: int) -> int:
        """The sampler index of ``HOST:GPU`` (``--gpu-role``); ``host`` is the Hostname label or the URL's host."""
        found = [g for g in self._gpus if g.gpu == gpu and host in (g.host, urllib.parse.urlsplit(g.url).hostname)]
        if len(found) != 1:
            known = ", ".join(g.name for g in self._gpus)
            what = "no GPU" if not found else "several GPUs"
            raise BenchError(f"--gpu-role {host}:{gpu}: the DCGM exporters list {what} of that name (known: {known})")
        return found[0].index

    def close(self) -> None:
        pass  # each scrape opens and closes its own connection

    def _gpu(self, index: int) -> DcgmGpu:
        if not 0 <= index < len(self._gpus):
            raise PowerError(f"no GPU with index {index}: the DCGM exporters list {len(self._gpus)} GPU(s)")
        return self._gpus[index]

    def _open(self, url: str) -> None:
        """The first scrape of ``url``: its GPUs get the next indices, in (host, gpu) order."""
        try:
            scrape = self._fetch(url)
        except PowerReadError as error:
            raise PowerError(f"{error}; check that dcgm-exporter runs there and answers here: curl {url}") from error
        readings = scrape.readings
        if not any(
            r.power_w is not None or r.power_instant_w is not None or r.energy_mj is not None for r in readings.values()
        ):
            raise PowerError(f"DCGM exporter {url} lists no GPU with {POWER} or {ENERGY}: add them to its -f file")
        first = len(self._gpus)
        new = [DcgmGpu(first + i, h, g, readings[h, g].uuid, url) for i, (h, g) in enumerate(sorted(readings))]
        twice = next((k for k in self._gpus for gpu in new if k.uuid is not None and k.uuid == gpu.uuid), None)
        if twice is not None:
            raise PowerError(f"GPU {twice.uuid} is listed by {twice.url} and by {url}: give each exporter once")
        self._gpus += tuple(new)
        self._by_url[url] = new
        self._counters.update((gpu.index, _Counter()) for gpu in new)
        self._ingest(url, scrape)

    def _ingest(self, url: str, scrape: _Scrape) -> _Scrape:
        """Feed one scrape of ``url`` to its GPUs' counters (under the lock, in the order of the scrapes)."""
        self._last_scrape_s[url] = scrape.t_s
        for gpu in self._by_url[url]:
            key = (gpu.host, gpu.gpu)
            reading = scrape.readings.get(key)
            self._counters[gpu.index].feed(scrape.time_of(key), None if reading is None else reading.energy_mj)
        return scrape

    def _fetch(self, url: str) -> _Scrape:
        """One HTTP GET, timed at its middle, each stamped GPU's collection time moved onto our clock (a stamp
        after the request or ``MAX_STAMP_AGE_S`` before it is not believed); ``PowerReadError`` naming ``url``
        when it fails."""
        before_s, wall_before_s = self._clock(), self._wall_clock()
        try:
            with urllib.request.urlopen(url, timeout=self._timeout_s) as response:
                text = response.read().decode()
        except urllib.error.HTTPError as error:
            error.close()
            raise PowerReadError(f"DCGM exporter {url} answered HTTP {error.code} {error.reason}") from error
        except (OSError, http.client.HTTPException, UnicodeDecodeError) as error:
            reason = getattr(error, "reason", None) or error
            raise PowerReadError(f"DCGM exporter {url} did not answer: {reason}") from error
        after_s, wall_after_s = self._clock(), self._wall_clock()
        try:
            readings = parse_scrape(text, urllib.parse.urlsplit(url).hostname or url)
        except MetricsFormatError as error:
            raise PowerReadError(f"DCGM exporter {url} answered with {error}") from error
        t_s, wall_s = (before_s + after_s) / 2, (wall_before_s + wall_after_s) / 2
        collected = {
            key: min(after_s, t_s - (wall_s - stamp_s))
            for key, reading in readings.items()
            if (stamp_s := reading.collected_s) is not None
            and wall_before_s - MAX_STAMP_AGE_S <= stamp_s <= wall_after_s
        }
        return _Scrape(t_s, readings, collected)


def _sample(t_s: float, gpu: int, reading: DcgmReading | None, error: str | None) -> Sample:
    clock = None if reading is None or reading.sm_clock_mhz is None else round(reading.sm_clock_mhz)
    instant = None if reading is None else reading.power_instant_w
    average = None if reading is None else reading.power_w
    return Sample(t_s, gpu, instant, average, clock, None, None, None, None, None, error)

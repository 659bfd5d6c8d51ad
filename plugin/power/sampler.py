"""The power sampler: a daemon thread that polls a backend, streams samples to one CSV per GPU, and measures windows.

``begin_window(name)`` / ``end_window(name)`` bracket a stretch of work, Zeus-style, and return a frozen
``WindowMeasurement``: energy from the counter (read at both edges) and from the samples, fed to the open
windows as they arrive, so that no list of samples is held in memory. The counter is also read every 10 s for
the CSV: one read spins the CPU for about 4 ms on an H100, so a once-a-second read alone would cost 0.4 % of a
core (docs/validation.md). Problems are reported as notes, never as warnings
(pytest's ``filterwarnings = error`` would turn a warning from this thread into a crash).
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

from plugin.clock import now_s
from plugin.power.backend import PowerBackend, PowerError, PowerReadError, Sample
from plugin.power.samples_csv import SampleCsvWriter, read_samples
from plugin.power.sensor import UpdateIntervalDetector
from plugin.power.window import IdleBaseline, WindowAccumulator, WindowMeasurement
from plugin.records.windows import GpuWindow


@dataclass
class _OpenWindow:
    start_s: float
    gpus: dict[int, WindowAccumulator]


class Sampler:
    def __init__(
        self,
        backend: PowerBackend,
        out_dir: Path,
        period_ms: float = 50.0,
        energy_period_s: float | None = 10.0,
        flush_period_s: float = 1.0,
        clock: Callable[[], float] = now_s,
    ) -> None:
        """Sample ``backend`` every ``period_ms`` into ``out_dir/power_gpu<N>.csv``; the sampler owns the backend.

        ``energy_period_s`` is the cadence of the extra counter reads (``None``: only at window edges).
        """
        if period_ms <= 0:
            raise PowerError(f"the power sampling period must be positive, not {period_ms} ms")
        self.backend = backend
        self.out_dir = out_dir
        self.period_s = period_ms / 1000.0
        self._energy_period_s = energy_period_s
        self._flush_period_s = flush_period_s
        self._clock = clock
        self._lock = threading.Lock()
        self._stop_event = threading.Event()
        self._thread: threading.Thread | None = None
        self._started = False
        self._stopped = False
        self._crash: BaseException | None = None
        self._writers: dict[int, SampleCsvWriter] = {}
        self._detectors = {gpu: UpdateIntervalDetector() for gpu in backend.gpus}
        self._last: dict[int, Sample] = {}
        self._windows: dict[str, _OpenWindow] = {}
        self._idle_baselines: tuple[IdleBaseline, ...] = ()
        self._notes: dict[str, str] = {}  # keyed so that each note is given once
        self._error_count = 0
        self._recent_errors: deque[str] = deque(maxlen=20)
        self._thread_cpu_s = 0.0
        self._thread_started_s: float | None = None
        self._thread_stopped_s: float | None = None

    # -- life cycle ---------------------------------------------------------------------------------------

    def start(self) -> None:
        """Open one CSV per GPU and start the thread (none without a GPU: the ``none`` backend)."""
        if self._started:
            raise PowerError("a Sampler starts once; make a new one for another run")
        self._started = True
        if not self.backend.gpus:
            return
        for gpu in self.backend.gpus:
            self._writers[gpu] = SampleCsvWriter(self.csv_path(gpu))
        self._thread = threading.Thread(target=self._run, name="pd-energy-bench power sampler", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Join the thread, close every CSV and the backend; safe to call twice. Raises if the thread crashed."""
        if self._stopped:
            return
        self._stopped = True
        self._stop_event.set()
        try:
            if self._thread is not None:
                self._thread.join()
        finally:
            with self._lock:
                for writer in self._writers.values():
                    writer.close()
            self.backend.close()
        self._check_sensor()
        if self._crash is not None:
            raise PowerError(f"the power sampler thread failed: {self._crash!r}") from self._crash

    def __enter__(self) -> Sampler:
        self.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, traceback: TracebackType | None
    ) -> None:
        try:
            self.stop()
        except PowerError:
            if exc is None:
                raise  # otherwise the body's own exception matters more

    # -- windows ------------------------------------------------------------------------------------------

    def begin_window(self, name: str, gpus: Sequence[int] | None = None) -> None:
        """Open a window over ``gpus`` (default: every GPU sampled; GPUs not sampled are left out): read each
        one's energy counter now. Several windows may be open at once."""
        self._check_running()
        if name in self._windows:
            raise PowerError(f"power window {name!r} is already open")
        watched = [gpu for gpu in self.backend.gpus if gpus is None or gpu in gpus]
        edges = {gpu: self._counter_at_edge(gpu) for gpu in watched}
        with self._lock:
            if name in self._windows:
                raise PowerError(f"power window {name!r} is already open")
            accumulators = {
                gpu: WindowAccumulator(gpu, t_s, counter_mj, seed=self._last.get(gpu))
                for gpu, (t_s, counter_mj) in edges.items()
            }
            start_s = min((t_s for t_s, _ in edges.values()), default=self._clock())
            self._windows[name] = _OpenWindow(start_s, accumulators)

    def end_window(self, name: str) -> WindowMeasurement:
        """Close a window and measure it, each GPU's energy above idle included where a baseline in use has it."""
        self._check_running()
        with self._lock:
            window = self._windows.pop(name, None)
        if window is None:
            raise PowerError(f"power window {name!r} was never begun (open: {sorted(self._windows) or 'none'})")
        gpus: list[GpuWindow] = []
        for gpu, accumulator in window.gpus.items():
            end_s, counter_mj = self._counter_at_edge(gpu)
            idle = next((baseline for baseline in self._idle_baselines if gpu in baseline.power_w), None)
            gpus.append(accumulator.finish(end_s, counter_mj, idle, self.update_interval_s(gpu)))
        end_s = max((gpu.end_s for gpu in gpus), default=self._clock())
        self._check_sensor()
        window_notes = self._window_notes(name, gpus)
        return WindowMeasurement(
            name=name,
            backend=self.backend.name,
            start_s=window.start_s,
            end_s=end_s,
            gpus=tuple(gpus),
            notes=self.notes + window_notes,
            unmeasured_reason=self.backend.unmeasured_reason,
            curves={gpu: accumulator.curve for gpu, accumulator in window.gpus.items()},
            clocks={gpu: accumulator.clocks for gpu, accumulator in window.gpus.items()},
        )

    def measure_idle(self, duration_s: float = 3.0, name: str = "idle") -> WindowMeasurement:
        """A window over ``duration_s`` of doing nothing, on every GPU; ``use_idle_baselines`` makes it a baseline."""
        self.begin_window(name)
        time.sleep(duration_s)
        return self.end_window(name)

    def use_idle_baselines(self, *baselines: IdleBaseline) -> None:
        """Windows closed from now on subtract, on each GPU, the first of ``baselines`` that has its idle power (none:
        no figure above idle); each window says which one it used."""
        self._idle_baselines = baselines

    # -- what it saw --------------------------------------------------------------------------------------

    @property
    def notes(self) -> tuple[str, ...]:
        return tuple(self._notes.values())

    @property
    def error_count(self) -> int:
        return self._error_count

    @property
    def recent_errors(self) -> tuple[str, ...]:
        return tuple(self._recent_errors)

    @property
    def cpu_share(self) -> float | None:
        """The sampler thread's own CPU time per second of running (1.0 = one core), updated about once a second."""
        if self._thread_started_s is None:
            return None
        elapsed_s = (self._thread_stopped_s or self._clock()) - self._thread_started_s
        return self._thread_cpu_s / elapsed_s if elapsed_s > 0 else None

    def update_interval_s(self, gpu: int) -> float | None:
        """The sensor's measured update interval (time between changes of the power reading), once known; a backend
        that knows its own (a DCGM exporter's collection interval) says it."""
        own = getattr(self.backend, "update_interval_s", None)
        if own is not None:
            return own(gpu)  # type: ignore[no-any-return]
        with self._lock:
            return self._detectors[gpu].interval_s() if gpu in self._detectors else None

    def csv_path(self, gpu: int) -> Path:
        return self.out_dir / f"power_gpu{gpu}.csv"

    def samples_written(self, gpu: int) -> int:
        writer = self._writers.get(gpu)
        return 0 if writer is None else writer.rows

    def samples(self, gpu: int, start_s: float | None = None, end_s: float | None = None) -> list[Sample]:
        """One GPU's samples between two times, read back from its CSV (for ``plugin.analysis.energy``)."""
        with self._lock:
            writer = self._writers.get(gpu)
            if writer is None:
                return []
            if not writer.closed:
                writer.flush()
        return read_samples(writer.path, start_s, end_s)

    # -- the thread ---------------------------------------------------------------------------------------

    def _run(self) -> None:
        now = self._clock()
        next_tick_s = now
        next_energy_s = now if self._energy_period_s is not None else float("inf")
        next_flush_s = now + self._flush_period_s
        cpu_start_s, self._thread_started_s = time.thread_time(), now
        try:
            while not self._stop_event.is_set():
                now = self._clock()
                read_energy = now >= next_energy_s
                if read_energy and self._energy_period_s is not None:
                    next_energy_s = now + self._energy_period_s
                self._tick(read_energy)
                if now >= next_flush_s:
                    next_flush_s = now + self._flush_period_s
                    self._thread_cpu_s = time.thread_time() - cpu_start_s
                    with self._lock:
                        for writer in self._writers.values():
                            writer.flush()
                next_tick_s += self.period_s
                delay_s = next_tick_s - self._clock()
                if delay_s < 0:  # fell behind (a slow read): skip the missed ticks rather than burst
                    next_tick_s = self._clock()
                    delay_s = 0.0
                self._stop_event.wait(delay_s)
        except Exception as error:  # a bug, not a read error: keep it for stop() to raise
            self._crash = error
        finally:
            self._thread_cpu_s = time.thread_time() - cpu_start_s
            self._thread_stopped_s = self._clock()

    def _tick(self, read_energy: bool) -> None:
        try:
            samples = self.backend.read_samples()
        except PowerReadError as error:
            self._record_error(str(error))
            return
        energy = {s.gpu: self._read_counter(s.gpu) for s in samples} if read_energy else {}
        with self._lock:
            for sample in samples:
                writer = self._writers.get(sample.gpu)
                if writer is None:
                    continue  # a GPU we were not asked to watch
                writer.write(sample, energy.get(sample.gpu))
                self._detectors[sample.gpu].feed(sample.t_s, sample.power_w)
                for window in self._windows.values():
                    if sample.gpu in window.gpus:
                        window.gpus[sample.gpu].add(sample)
                self._last[sample.gpu] = sample
                if sample.error is not None:
                    self._record_error(f"GPU {sample.gpu}: {sample.error}")

    # -- helpers ------------------------------------------------------------------------------------------

    def _counter_at_edge(self, gpu: int) -> tuple[float, int | None]:
        """The counter and the middle of the read as its time (the read takes milliseconds)."""
        before_s = self._clock()
        counter_mj = self._read_counter(gpu)
        return (before_s + self._clock()) / 2, counter_mj

    def _read_counter(self, gpu: int) -> int | None:
        try:
            return self.backend.read_energy_mj(gpu)
        except PowerReadError as error:
            self._record_error(str(error))
            return None

    def _record_error(self, message: str) -> None:
        self._error_count += 1
        self._recent_errors.append(message)

    def _note(self, key: str, text: str) -> None:
        self._notes.setdefault(key, text)

    def _check_running(self) -> None:
        if self._stopped:
            raise PowerError("the power sampler is stopped: end every window before stop()")

    def _check_sensor(self) -> None:
        for gpu in self.backend.gpus:
            interval_s = self.update_interval_s(gpu)
            # Polling slower than the sensor measures about the period itself: a margin keeps jitter quiet.
            if interval_s is not None and self.period_s < 0.75 * interval_s:
                self._note(
                    f"period:{gpu}",
                    f"GPU {gpu}: the power reading changes about every {interval_s * 1000:.0f} ms but the sampler "
                    f"polls every {self.period_s * 1000:.0f} ms, so samples repeat values; about "
                    f"{interval_s * 500:.0f} ms (half the update interval, as Zeus does) catches every update",
                )

    def _window_notes(self, name: str, gpus: list[GpuWindow]) -> tuple[str, ...]:
        """Notes about this window only (the sampler-wide ones, in ``notes``, go into every later window too)."""
        notes = []
        for window in gpus:
            if window.energy_counter_j is None:
                notes.append(
                    f"GPU {window.gpu}: no energy counter reading; energy comes from integrating power samples"
                )
            if window.power_source == "average":
                notes.append(f"GPU {window.gpu}: no instant power reading; the samples hold a 1 s average, which lags")
            interval_s = self.update_interval_s(window.gpu)
            if interval_s is not None and 0 < window.duration_s < 10 * interval_s:
                notes.append(
                    f"window {name!r} on GPU {window.gpu} lasted {window.duration_s:.2f} s, under 10 sensor updates "
                    f"of {interval_s * 1000:.0f} ms: its energy is uncertain by about "
                    f"{100 * interval_s / window.duration_s:.0f}%"
                )
        return tuple(notes)

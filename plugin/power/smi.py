"""Fallback backend: one long-lived ``nvidia-smi --query-gpu ... -lms N`` whose CSV lines become samples.

For machines where NVML cannot be loaded from Python. It has no energy counter and no instant power:
``power.draw`` is a 1 s average on A100 and newer, so it goes into ``power_avg_w``. A reader thread
timestamps each line as it arrives; ``read_samples`` hands over what arrived since the last call.
"""

from __future__ import annotations

import queue
import shutil
import subprocess
import threading
from collections.abc import Callable, Sequence
from typing import IO

from plugin.clock import now_s
from plugin.power.backend import PowerError, PowerReadError, Sample

QUERY = "index,power.draw,clocks.sm,clocks.mem,utilization.gpu,memory.used,temperature.gpu"


def smi_command(period_ms: int, gpus: Sequence[int] | None = None, executable: str = "nvidia-smi") -> list[str]:
    command = [executable, f"--query-gpu={QUERY}", "--format=csv,noheader,nounits", "-lms", str(period_ms)]
    if gpus is not None:
        command += ["-i", ",".join(str(gpu) for gpu in gpus)]
    return command


def parse_line(line: str, t_s: float) -> Sample | None:
    """One CSV line into a sample; ``None`` for a line that is not one (a header, a message, a cut line)."""
    fields = [field.strip() for field in line.split(",")]
    if len(fields) != len(QUERY.split(",")):
        return None
    try:
        gpu = int(fields[0])
    except ValueError:
        return None
    power_w, sm_clock, mem_clock, util, mem_used, temp = (_number(field) for field in fields[1:])
    return Sample(
        t_s=t_s,
        gpu=gpu,
        power_instant_w=None,
        power_avg_w=power_w,
        sm_clock_mhz=_int(sm_clock),
        mem_clock_mhz=_int(mem_clock),
        util_gpu_pct=_int(util),
        mem_used_mib=_int(mem_used),
        temp_c=_int(temp),
        throttle_reasons=None,
    )


class SmiBackend:
    def __init__(
        self,
        period_ms: int,
        gpus: Sequence[int] | None = None,
        executable: str = "nvidia-smi",
        clock: Callable[[], float] = now_s,
    ) -> None:
        """Start ``nvidia-smi`` (``executable`` is replaceable in tests) for ``gpus`` (default: all)."""
        if shutil.which(executable) is None:
            raise PowerError(f"{executable} is not on PATH: no NVIDIA driver here, or use --power-backend none")
        self._gpus = tuple(gpus) if gpus is not None else _all_gpus(executable)
        self._clock = clock
        self._arrived: queue.SimpleQueue[Sample] = queue.SimpleQueue()
        self._closing = False
        self._last_message = ""  # the last line that was not a sample (an error message, most likely)
        self._process = subprocess.Popen(
            smi_command(period_ms, gpus, executable),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            text=True,
        )
        assert self._process.stdout is not None
        self._reader = threading.Thread(
            target=self._read_lines, args=(self._process.stdout,), name="nvidia-smi reader", daemon=True
        )
        self._reader.start()

    @property
    def name(self) -> str:
        return "nvidia-smi"

    @property
    def gpus(self) -> tuple[int, ...]:
        return self._gpus

    @property
    def unmeasured_reason(self) -> str | None:
        return None

    def read_samples(self) -> list[Sample]:
        """What arrived since the last call; raises ``PowerReadError`` once nvidia-smi has exited."""
        samples: list[Sample] = []
        while True:
            try:
                samples.append(self._arrived.get_nowait())
            except queue.Empty:
                break
        if not samples and not self._reader.is_alive() and not self._closing:
            exit_code = self._process.poll()
            raise PowerReadError(f"nvidia-smi exited (code {exit_code}): {self._last_message or 'no message'}")
        return samples

    def uuid(self, gpu: int) -> str | None:
        return None  # the fallback reads power only; NVML's inventory (results' environment.gpus) has the UUIDs

    def read_energy_mj(self, gpu: int) -> int | None:
        return None

    def exit_code(self) -> int | None:
        return self._process.poll()

    def close(self) -> None:
        self._closing = True
        if self._process.poll() is None:
            self._process.terminate()
            try:
                self._process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait()
        self._reader.join(timeout=5)
        if self._process.stdout is not None:
            self._process.stdout.close()

    def _read_lines(self, stdout: IO[str]) -> None:
        try:
            for line in stdout:
                sample = parse_line(line, self._clock())
                if sample is not None:
                    self._arrived.put(sample)
                elif line.strip():
                    self._last_message = line.strip()
        except ValueError:
            pass  # the pipe was closed under us by close()


def _all_gpus(executable: str) -> tuple[int, ...]:
    try:
        listing = subprocess.run(
            [executable, "--query-gpu=index", "--format=csv,noheader,nounits"],
            capture_output=True,
            text=True,
            timeout=30,
            check=True,
        ).stdout
    except (OSError, subprocess.SubprocessError) as error:
        raise PowerError(f"{executable} could not list the GPUs: {error}") from error
    return tuple(int(line) for line in listing.split() if line.strip().isdigit())


def _number(field: str) -> float | None:
    """``[N/A]``, ``[Not Supported]`` and the like become ``None``."""
    try:
        return float(field)
    except ValueError:
        return None


def _int(value: float | None) -> int | None:
    return None if value is None else int(value)

"""The backend for machines without a GPU (or with power sampling turned off): it measures nothing, and says so."""

from __future__ import annotations

from plugin.power.backend import Sample


class NoneBackend:
    def __init__(self, reason: str) -> None:
        self._reason = reason

    @property
    def name(self) -> str:
        return "none"

    @property
    def gpus(self) -> tuple[int, ...]:
        return ()

    @property
    def unmeasured_reason(self) -> str | None:
        return self._reason

    def read_samples(self) -> list[Sample]:
        return []

    def read_energy_mj(self, gpu: int) -> int | None:
        return None

    def uuid(self, gpu: int) -> str | None:
        return None

    def close(self) -> None:
        pass

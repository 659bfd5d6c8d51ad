"""Which module plays ``pynvml``: nvidia-ml-py's, or a stand-in named by ``PD_ENERGY_BENCH_NVML_MODULE``.

Every NVML user goes through ``load_nvml`` (the GPU inventory, the power backend, the DVFS controller), so the
suite's own tests can run a whole pytest subprocess on one fake (``tests/fake_nvml.py``) without a GPU; every run
that uses a stand-in says so in its results and its terminal summary.
"""

from __future__ import annotations

import importlib
import os
from types import ModuleType

STAND_IN_ENV = "PD_ENERGY_BENCH_NVML_MODULE"


def load_nvml() -> ModuleType:
    """``pynvml``, or the stand-in; raises ``ImportError`` when neither can be imported."""
    return importlib.import_module(stand_in() or "pynvml")


def stand_in() -> str | None:
    return os.environ.get(STAND_IN_ENV) or None

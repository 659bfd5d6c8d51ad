"""Which module plays ``pynvml``: nvidia-ml-py's, or a stand-in named by ``PD_ENERGY_BENCH_NVML_MODULE``.

The suite's own tests use a stand-in (``tests/fake_dvfs_nvml.py``) to run the DVFS code end to end without a
GPU; every run that uses one says so in its results and its terminal summary.
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

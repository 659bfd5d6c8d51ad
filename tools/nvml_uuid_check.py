"""On a real NVIDIA GPU: the NVML power backend's GPU UUIDs (stored as ``power.gpu_uuids``) against ``nvidia-smi -L``,
and a few of its samples under a bf16 matrix-product load. Read-only: no GPU setting changes.

Usage: ``PYTHONPATH=. python3 tools/nvml_uuid_check.py`` (needs nvidia-ml-py and PyTorch)."""

from __future__ import annotations

import json
import subprocess
import threading
import time

import torch

from plugin.power.nvml import NvmlBackend

backend = NvmlBackend()
smi = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True).stdout
print(smi)
found = {gpu: backend.uuid(gpu) for gpu in backend.gpus}
print("backend uuids", found)
print("each in nvidia-smi -L:", all(uuid and uuid in smi for uuid in found.values()))
matrix = torch.randn(8192, 8192, dtype=torch.bfloat16, device="cuda")
stop = threading.Event()


def load() -> None:
    while not stop.is_set():
        for _ in range(20):
            matrix @ matrix
        torch.cuda.synchronize()


worker = threading.Thread(target=load)
worker.start()
samples = []
for _ in range(20):
    samples += backend.read_samples()
    time.sleep(0.1)
stop.set()
worker.join()
fields = ("gpu", "power_instant_w", "power_avg_w", "sm_clock_mhz", "error")
print(json.dumps([{key: getattr(sample, key) for key in fields} for sample in samples[::5]]))

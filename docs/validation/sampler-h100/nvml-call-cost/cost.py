import time, pynvml
from plugin.power.nvml import NvmlBackend
def cost(fn, n):
    c0, w0 = time.thread_time(), time.perf_counter()
    for _ in range(n): fn()
    return (time.thread_time() - c0) / n * 1e6, (time.perf_counter() - w0) / n * 1e6
b = NvmlBackend([0])
print("read_samples cpu/wall us: %.1f %.1f" % cost(b.read_samples, 300))
print("read_energy_mj cpu/wall us: %.1f %.1f" % cost(lambda: b.read_energy_mj(0), 50))
h = pynvml.nvmlDeviceGetHandleByIndex(0)
for name, fn in [
    ("power_usage", lambda: pynvml.nvmlDeviceGetPowerUsage(h)),
    ("field_values", lambda: pynvml.nvmlDeviceGetFieldValues(h, [pynvml.NVML_FI_DEV_POWER_INSTANT, pynvml.NVML_FI_DEV_POWER_AVERAGE])),
    ("clock_sm", lambda: pynvml.nvmlDeviceGetClockInfo(h, pynvml.NVML_CLOCK_SM)),
    ("utilization", lambda: pynvml.nvmlDeviceGetUtilizationRates(h)),
    ("memory", lambda: pynvml.nvmlDeviceGetMemoryInfo(h)),
    ("temperature", lambda: pynvml.nvmlDeviceGetTemperature(h, pynvml.NVML_TEMPERATURE_GPU)),
    ("clocks_event", lambda: pynvml.nvmlDeviceGetCurrentClocksEventReasons(h)),
    ("energy", lambda: pynvml.nvmlDeviceGetTotalEnergyConsumption(h)),
]:
    print(name, "cpu/wall us: %.1f %.1f" % cost(fn, 50 if name == "energy" else 300))
b.close()

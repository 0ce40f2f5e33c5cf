"""The utilisation-based on-device model, per request (compiled; a pure function of scalars).

A processor is *busy* for the inference's compute time, stretched by memory contention from
co-running apps; co-running CPU load also time-shares the processor, so the request takes longer
than its busy time and the processor idles (at idle power) for the rest. The phone's base power is
paid for the whole latency. Units: W x ms = mJ.
"""

from __future__ import annotations

from numba import njit


@njit(cache=True, inline="always")
def local_run(base_ms: float, noise: float, co_cpu_frac: float, co_mem_frac: float,
              cpu_interference: float, mem_interference: float, busy_power_w: float,
              idle_power_w: float, base_power_w: float) -> tuple[float, float]:
    """Latency (ms) and phone energy (mJ) of one inference on a phone processor.

    Args:
        base_ms: the processor's latency for the network alone (profile table).
        noise: multiplicative runtime noise (median 1).
        co_cpu_frac, co_mem_frac: co-running apps' CPU and memory use, fractions.
        cpu_interference, mem_interference: the processor's sensitivity to them.
        busy_power_w, idle_power_w, base_power_w: processor busy / idle power, phone base power.
    """
    busy_ms = base_ms * (1.0 + mem_interference * co_mem_frac) * noise
    latency = busy_ms * (1.0 + cpu_interference * co_cpu_frac)
    energy = busy_power_w * busy_ms + idle_power_w * (latency - busy_ms) + base_power_w * latency
    return latency, energy

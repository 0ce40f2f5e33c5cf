"""The utilisation-based on-device model (vectorised; pure functions).

A processor is *busy* for the inference's compute time, stretched by memory contention from
co-running apps; co-running CPU load also time-shares the processor, so the request takes longer
than its busy time and the processor idles (at idle power) for the rest. The phone's base power is
paid for the whole latency. Units: W x ms = mJ.

With ``f = 1 + cpu_interference * co_cpu_frac`` the latency is ``busy_ms * f`` and the energy
``busy_ms * (busy_w + base_w + (idle_w + base_w) * cpu_interference * co_cpu_frac)``;
:func:`energy_coefficients` precomputes the two per-processor factors so that the simulator needs
five array operations per request and target (see ``SimBackend._outcomes``).
"""

from __future__ import annotations

import numpy as np


def local_run(*, base_ms: np.ndarray, noise: np.ndarray, co_cpu_frac: np.ndarray,
              co_mem_frac: np.ndarray, cpu_interference: np.ndarray, mem_interference: np.ndarray,
              busy_power_w: np.ndarray, idle_power_w: np.ndarray,
              base_power_w: float) -> tuple[np.ndarray, np.ndarray]:
    """Latency (ms) and energy (mJ) of local inference; all arrays broadcast together.

    The readable reference of the model; the simulator evaluates the factored form of the module
    docstring (equal up to rounding).
    """
    busy_ms = base_ms * (1.0 + mem_interference * co_mem_frac) * noise
    latency = busy_ms * (1.0 + cpu_interference * co_cpu_frac)
    energy = busy_power_w * busy_ms + idle_power_w * (latency - busy_ms) + base_power_w * latency
    return latency, energy


def energy_coefficients(*, busy_power_w: np.ndarray, idle_power_w: np.ndarray,
                        cpu_interference: np.ndarray,
                        base_power_w: float) -> tuple[np.ndarray, np.ndarray]:
    """``(a, b)`` with energy (mJ) = ``busy_ms * (a + b * co_cpu_frac)`` (W)."""
    a = np.asarray(busy_power_w, dtype=float) + base_power_w
    b = (np.asarray(idle_power_w, dtype=float) + base_power_w) * np.asarray(cpu_interference)
    return a, b

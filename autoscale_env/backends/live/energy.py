"""Energy meters for the live backend: RAPL and NVML counters when readable, else nothing.

The phone's energy in AutoScale comes from a power meter. On a development host the closest
readings are the CPU package's RAPL counters (``/sys/class/powercap/intel-rapl:*``, also exposed
for AMD CPUs by recent kernels; often readable by root only) and the GPU's NVML energy counter.
When neither is readable, :func:`available_meter` returns None and the backend falls back to the
utilisation-based power model, fed with the busy time from :func:`process_cpu_seconds`.

Every meter reports a cumulative count in millijoules since it was created; take differences::

    meter = available_meter()
    e0 = meter.energy_mj(); run(); energy_mj = meter.energy_mj() - e0
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Protocol, runtime_checkable

from autoscale_env.world.errors import BackendUnavailable

__all__ = [
    "EnergyMeter",
    "MeterUnavailable",
    "NvmlMeter",
    "RaplMeter",
    "available_meter",
    "process_cpu_seconds",
]

log = logging.getLogger(__name__)

#: Where the powercap framework exposes RAPL zones.
POWERCAP_ROOT = "/sys/class/powercap"


class MeterUnavailable(BackendUnavailable):
    """This host has no readable counter of that kind."""


@runtime_checkable
class EnergyMeter(Protocol):
    """A cumulative energy counter."""

    name: str
    """``"rapl"`` or ``"nvml"`` (the ``energy_source`` an outcome reports)."""

    def energy_mj(self) -> float:
        """Energy consumed since the meter was created, mJ."""

    def close(self) -> None:
        """Release the counter; safe to call twice."""


class _Zone:
    """One RAPL zone's counter, unwrapped into a monotonic total."""

    def __init__(self, path: Path):
        self.path = path
        self.name = (path / "name").read_text().strip() if (path / "name").exists() else path.name
        self.counter = path / "energy_uj"
        try:
            self.max_uj = int((path / "max_energy_range_uj").read_text())
        except (OSError, ValueError):
            self.max_uj = 0  # unknown range: a wrap then loses the remainder (logged)
        self.last_uj = self.read_uj()
        self.total_uj = 0

    def read_uj(self) -> int:
        return int(self.counter.read_text())

    def sample(self) -> int:
        now = self.read_uj()
        if now >= self.last_uj:
            delta = now - self.last_uj
        elif self.max_uj:
            delta = self.max_uj - self.last_uj + now  # the counter wrapped around
        else:
            log.warning("RAPL zone %s wrapped with an unknown range; energy undercounted",
                        self.name)
            delta = now
        self.last_uj = now
        self.total_uj += delta
        return self.total_uj


class RaplMeter:
    """CPU energy from RAPL powercap zones.

    By default the top-level ``package-*`` zones are summed (``psys``, where present, overlaps
    them, and ``core``/``uncore``/``dram`` sub-zones are either inside a package or, for DRAM,
    optional). Counter wraparound is unwrapped using each zone's ``max_energy_range_uj``, as long
    as the meter is sampled at least once per wrap period (minutes to hours).

    Args:
        root: the powercap directory (a fake one in tests).
        domains: zone-name prefixes to sum, e.g. ``("package", "dram")``.

    Raises:
        MeterUnavailable: no matching zone, or its counter is not readable (e.g. not root).
    """

    name = "rapl"

    def __init__(self, root: str | os.PathLike[str] = POWERCAP_ROOT,
                 domains: Sequence[str] = ("package",)):
        base = Path(root)
        candidates = sorted(base.glob("intel-rapl:*")) if base.is_dir() else []
        self._zones: list[_Zone] = []
        problems = []
        for path in candidates:
            try:
                zone = _Zone(path)
            except (OSError, ValueError) as e:
                problems.append(f"{path.name}: {e}")
                continue
            if zone.name.startswith(tuple(domains)):
                self._zones.append(zone)
        if not self._zones:
            why = "; ".join(problems) or f"no zone named {'/'.join(domains)}* under {base}"
            raise MeterUnavailable(f"RAPL is not readable here ({why})")
        self._lock = threading.Lock()

    @property
    def zones(self) -> list[str]:
        """Names of the summed zones."""
        return [z.name for z in self._zones]

    def energy_mj(self) -> float:
        """Energy of the summed zones since creation, mJ."""
        with self._lock:
            return sum(z.sample() for z in self._zones) / 1e3

    def close(self) -> None:
        """Nothing to release (kept for the :class:`EnergyMeter` protocol)."""


class NvmlMeter:
    """GPU energy from NVML's total-energy counter (Volta and newer), via ``pynvml``.

    Args:
        index: the GPU's NVML index.

    Raises:
        MeterUnavailable: ``pynvml`` is not installed, no GPU, or the counter is unsupported.
    """

    name = "nvml"

    def __init__(self, index: int = 0):
        try:
            import pynvml
        except ImportError:
            raise MeterUnavailable(
                "pynvml is not installed (pip install nvidia-ml-py) - no NVML energy counter"
            ) from None
        self._nvml = pynvml
        try:
            pynvml.nvmlInit()
        except pynvml.NVMLError as e:  # no driver, no GPU
            raise MeterUnavailable(f"NVML unavailable: {e}") from None
        self._open = True
        try:
            self._handle = pynvml.nvmlDeviceGetHandleByIndex(index)
            self._start_mj = pynvml.nvmlDeviceGetTotalEnergyConsumption(self._handle)
        except pynvml.NVMLError as e:  # e.g. NotSupported before Volta
            self.close()
            raise MeterUnavailable(f"NVML energy counter unavailable on GPU {index}: {e}") \
                from None

    def energy_mj(self) -> float:
        """GPU energy since creation, mJ."""
        return float(self._nvml.nvmlDeviceGetTotalEnergyConsumption(self._handle)
                     - self._start_mj)

    def close(self) -> None:
        """Shut NVML down (once)."""
        if getattr(self, "_open", False):
            self._open = False
            try:
                self._nvml.nvmlShutdown()
            except self._nvml.NVMLError as e:  # already shut down elsewhere
                log.debug("nvmlShutdown: %s", e)


def available_meter(prefer: Sequence[str] = ("rapl", "nvml"),
                    rapl_root: str | os.PathLike[str] = POWERCAP_ROOT) -> EnergyMeter | None:
    """The first meter of ``prefer`` that works on this host, or None.

    Args:
        prefer: meter kinds in order of preference (``"rapl"``, ``"nvml"``).
        rapl_root: the powercap directory.

    Returns:
        A ready meter, or None when none is readable (the caller then models energy).
    """
    factories = {"rapl": lambda: RaplMeter(rapl_root), "nvml": NvmlMeter}
    for kind in prefer:
        if kind not in factories:
            raise ValueError(f"unknown meter {kind!r}; valid choices: {', '.join(factories)}")
        try:
            return factories[kind]()
        except MeterUnavailable as e:
            log.debug("%s meter unavailable: %s", kind, e)
    return None


def process_cpu_seconds() -> float:
    """CPU time (user + system, all threads) this process has used, seconds.

    The difference across an inference is its busy core-seconds (up to ``threads x wall``), the
    input of the utilisation-based power model. This reads ``CLOCK_PROCESS_CPUTIME_ID`` through
    :func:`time.process_time` (nanosecond resolution) rather than psutil, whose ``cpu_times``
    come from ``/proc`` in 10 ms clock ticks, as coarse as a whole MobileNet inference.
    """
    return time.process_time()

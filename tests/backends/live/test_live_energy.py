"""Energy meters: RAPL against a fake sysfs, NVML against a fake pynvml, clean absence here."""

from __future__ import annotations

import sys
import time
import types
from pathlib import Path

import psutil
import pytest

from autoscale_env.backends.live import energy
from autoscale_env.backends.live.energy import (
    EnergyMeter,
    MeterUnavailable,
    NvmlMeter,
    RaplMeter,
    available_meter,
)
from autoscale_env.world.errors import BackendUnavailable

pytestmark = pytest.mark.live


def zone(root: Path, zone_id: str, name: str, energy_uj: int, max_uj: int | None = 2**32):
    d = root / f"intel-rapl:{zone_id}"
    d.mkdir(parents=True)
    (d / "name").write_text(f"{name}\n")
    (d / "energy_uj").write_text(f"{energy_uj}\n")
    if max_uj is not None:
        (d / "max_energy_range_uj").write_text(f"{max_uj}\n")
    return d / "energy_uj"


def test_rapl_sums_packages_only_and_unwraps_the_counter(tmp_path):
    pkg0 = zone(tmp_path, "0", "package-0", 1_000_000, max_uj=10_000_000)
    pkg1 = zone(tmp_path, "1", "package-1", 500)
    zone(tmp_path, "0:0", "core", 7)  # inside package-0: not added again
    zone(tmp_path, "2", "psys", 123)  # overlaps the packages: not added
    meter = RaplMeter(tmp_path)
    assert isinstance(meter, EnergyMeter) and meter.name == "rapl"
    assert sorted(meter.zones) == ["package-0", "package-1"]
    assert meter.energy_mj() == 0.0
    pkg0.write_text("3000000\n")  # +2 J
    pkg1.write_text("1500\n")  # +1 mJ
    assert meter.energy_mj() == pytest.approx(2001.0)
    pkg0.write_text("1000000\n")  # wrapped: 10 J range, 7 J to the top + 1 J
    assert meter.energy_mj() == pytest.approx(2001.0 + 8000.0)
    meter.close()
    meter.close()


def test_rapl_without_range_file_undercounts_a_wrap_but_stays_monotonic(tmp_path):
    counter = zone(tmp_path, "0", "package-0", 5000, max_uj=None)
    meter = RaplMeter(tmp_path)
    counter.write_text("1000\n")
    assert meter.energy_mj() == pytest.approx(1.0)


def test_rapl_can_include_dram(tmp_path):
    zone(tmp_path, "0", "package-0", 0)
    dram = zone(tmp_path, "0:1", "dram", 0)
    meter = RaplMeter(tmp_path, domains=("package", "dram"))
    dram.write_text("4000\n")
    assert meter.energy_mj() == pytest.approx(4.0)


def test_rapl_absent_or_unreadable_is_unavailable(tmp_path):
    with pytest.raises(MeterUnavailable):
        RaplMeter(tmp_path / "missing")
    with pytest.raises(MeterUnavailable):
        RaplMeter(tmp_path)  # exists, no zones
    d = tmp_path / "intel-rapl:0"
    d.mkdir()
    (d / "name").write_text("package-0\n")
    (d / "energy_uj").mkdir()  # reading it fails like a root-only counter does
    with pytest.raises(MeterUnavailable, match="intel-rapl:0") as info:
        RaplMeter(tmp_path)
    assert isinstance(info.value, BackendUnavailable)
    assert available_meter(prefer=("rapl",), rapl_root=tmp_path) is None


class FakeNvml(types.ModuleType):
    """Enough of pynvml: an energy counter in mJ that we move by hand."""

    class NVMLError(Exception):
        """pynvml's error base class."""

    def __init__(self, supported: bool = True):
        super().__init__("pynvml")
        self.counter_mj = 10_000
        self.supported = supported
        self.shutdowns = 0

    def nvmlInit(self):
        pass

    def nvmlDeviceGetHandleByIndex(self, index):
        return ("gpu", index)

    def nvmlDeviceGetTotalEnergyConsumption(self, handle):
        if not self.supported:
            raise self.NVMLError("Not Supported")
        return self.counter_mj

    def nvmlShutdown(self):
        self.shutdowns += 1


def test_nvml_meter_reads_the_counter_difference(monkeypatch):
    fake = FakeNvml()
    monkeypatch.setitem(sys.modules, "pynvml", fake)
    meter = NvmlMeter()
    fake.counter_mj += 2500
    assert meter.energy_mj() == 2500.0
    meter.close()
    meter.close()
    assert fake.shutdowns == 1
    found = available_meter(prefer=("nvml",))
    assert isinstance(found, NvmlMeter)
    found.close()


def test_nvml_unsupported_counter_is_unavailable(monkeypatch):
    fake = FakeNvml(supported=False)
    monkeypatch.setitem(sys.modules, "pynvml", fake)
    with pytest.raises(MeterUnavailable, match="Not Supported"):
        NvmlMeter()
    assert fake.shutdowns == 1


def test_without_pynvml_or_rapl_there_is_no_meter(monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "pynvml", None)  # import pynvml -> ImportError
    with pytest.raises(MeterUnavailable, match="nvidia-ml-py"):
        NvmlMeter()
    assert available_meter(rapl_root=tmp_path / "none") is None
    with pytest.raises(ValueError, match="valid choices"):
        available_meter(prefer=("joulemeter",))


def test_this_host_degrades_cleanly():
    # Whatever this host has, asking never raises; with no powercap tree RAPL cannot be the meter.
    meter = available_meter()
    if meter is not None:
        assert Path(energy.POWERCAP_ROOT).exists() or type(meter).__name__ == "NvmlMeter"
        e0 = meter.energy_mj()
        assert meter.energy_mj() >= e0
        meter.close()
    assert available_meter(prefer=("rapl",), rapl_root=Path("/nonexistent/powercap")) is None


def test_process_cpu_seconds_counts_busy_time():
    # Spin until 50 ms of CPU time has passed by the kernel's per-process clock (psutil, read
    # independently of process_cpu_seconds): on a loaded machine that takes longer, not less.
    me = psutil.Process()
    t0, c0 = energy.process_cpu_seconds(), sum(me.cpu_times()[:2])
    deadline = time.monotonic() + 30
    while sum(me.cpu_times()[:2]) - c0 < 0.05 and time.monotonic() < deadline:
        pass
    busy, ticks = energy.process_cpu_seconds() - t0, sum(me.cpu_times()[:2]) - c0
    # psutil counts in 10 ms clock ticks: the two clocks agree to within two ticks.
    assert ticks >= 0.05 and busy == pytest.approx(ticks, abs=0.02)

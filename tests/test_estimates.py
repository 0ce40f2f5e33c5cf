"""The two adapters of the sensitivity analysis: which numbers are estimates, and worlds with them
moved."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pytest

from autoscale_env.world import config
from autoscale_env.backends.sim import SimBackend
from autoscale_env.world.errors import ConfigError
from autoscale_env.tools.estimates import (Address, Estimate, build_world, enumerate_estimates,
                                     from_provenance, load_world, perturbed_documents)


# -- perturbed worlds (parameters looked up by the number they move, whatever the format) -------

def param(file, *path):
    """The parameter that moves the number at ``file:path`` (or the list holding it)."""
    for e in enumerate_estimates():
        for a in e.numbers:
            if a.file == file and (a.path == path or a.path == path[:-1] or a.path[:-1] == path):
                return e
    raise AssertionError(f"{file}:{path} is not an estimate")


def _outcomes(backend, seed=3):
    rng = np.random.default_rng(seed)
    backend.reset(rng)
    b = backend.next_block()
    return b.latency_ms.copy(), b.energy_mj.copy()


@pytest.mark.parametrize("setting", ["static", "dynamic"])
def test_the_nominal_world_is_the_shipped_world_bit_for_bit(setting):
    ref = SimBackend("galaxy_s10e", "non_streaming", setting)
    mine = build_world({}, device="galaxy_s10e", scenario="non_streaming", setting=setting)
    for a, b in zip(_outcomes(ref), _outcomes(mine)):
        assert np.array_equal(a, b)


def test_a_latency_parameter_moves_exactly_its_numbers():
    e = param("devices/mi8pro.toml", "latency_ms", "mnv1", "gpu/fp32")
    world = load_world({e.name: e.high}, ("mi8pro",))
    base = config.load_device("mi8pro")
    moved = world.phones["mi8pro"].latency_ms
    mine = {a.path[1:] for a in e.numbers if a.file == "devices/mi8pro.toml"}
    for net, row in base.latency_ms.items():
        for unit, ms in row.items():
            if (net, unit) in mine:
                assert moved[net][unit] > ms
            else:
                assert moved[net][unit] == ms
    assert config.load_device("mi8pro").latency_ms == base.latency_ms  # the cache is untouched


def test_the_weak_static_signal_level_moves():
    e = param("settings.toml", "static", "rssi_p2p_dbm", 1)
    _, static, _ = config.load_settings()
    world = load_world({e.name: e.high}, ("mi8pro",))
    assert world.settings[1].rssi_p2p_dbm[1] > static.rssi_p2p_dbm[1]


def test_a_loss_parameter_scales_the_loss_against_fp32(monkeypatch):
    addr = Address("workloads.toml", ("networks", "sqz", "accuracy_int8"))
    loss = Estimate(name="sqz int8", numbers=(addr,), mode="loss", low=0.5, high=1.5, nominal=1.0,
                    reason="test", count=1)
    monkeypatch.setattr("autoscale_env.tools.estimates.enumerate_estimates", lambda: (loss,))
    docs = perturbed_documents({"sqz int8": 0.5})
    sqz = docs["workloads.toml"]["networks"]["sqz"]
    fp32 = config.load_workloads()["sqz"].accuracy["fp32"]
    int8 = config.load_workloads()["sqz"].accuracy["int8"]
    assert sqz["accuracy_fp32"] - sqz["accuracy_int8"] == pytest.approx((fp32 - int8) / 2)


def test_perturbed_worlds_change_outcomes_and_reach_the_backend():
    e = param("devices/mi8pro.toml", "processors", "cpu", "busy_power_w")
    base = _outcomes(SimBackend("mi8pro", "non_streaming", "static"))
    hot = build_world({e.name: e.high}, device="mi8pro", scenario="non_streaming", setting="static")
    lat, energy = _outcomes(hot)
    assert np.array_equal(lat, base[0])
    cpu = [str(t) for t in hot.targets].index("local/cpu/fp32")
    assert (energy[:, cpu] > base[1][:, cpu]).all()


def test_unknown_parameters_are_named():
    with pytest.raises(ConfigError, match="unknown estimate parameter 'nope'"):
        perturbed_documents({"nope": 1.0})


# -- structured provenance (autoscale_env.world.provenance entries) -----------------------------------

@dataclass(frozen=True)
class FakeEntry:
    """The shape of a provenance report entry."""

    file: str
    path: tuple
    value: object
    estimate: bool
    source: str
    range: object
    explicit_range: bool

    @property
    def name(self):
        return f"{self.file}:{'.'.join(self.path)}"

    @property
    def count(self):
        return len(self.value) if isinstance(self.value, tuple) else 1


def test_provenance_entries_become_one_parameter_each_with_their_ranges(monkeypatch):
    entries = [
        FakeEntry("devices/mi8pro.toml", ("processors", "cpu", "busy_power_w"), 3.5, True,
                  "estimate: x", (1.75, 5.25), False),
        FakeEntry("links.toml", ("wifi", "tx_power_multiplier"), (1.0, 1.29, 1.71, 2.29), True,
                  "estimate: y", ((0.8, 1.2), (0.8, 1.4), (0.8, 1.7), (0.8, 2.3)), True),
        FakeEntry("workloads.toml", ("networks", "sqz", "accuracy_int8"), 0.47, True,
                  "estimate: z", (0.235, 0.705), False),
        FakeEntry("devices/mi8pro.toml", ("base", "wifi_active_w"), 0.7, False, "PP-845", (0, 1), False),
    ]
    params = {p.name: p for p in from_provenance(entries)}
    assert list(params) == [e.name for e in entries[:3]]
    assert sum(p.count for p in params.values()) == 6
    busy = params["devices/mi8pro.toml:processors.cpu.busy_power_w"]
    tx = params["links.toml:wifi.tx_power_multiplier"]
    assert (busy.mode, busy.low, busy.high, busy.nominal) == ("span", -1.0, 1.0, 0.0)
    # an accuracy without a declared range varies its loss against FP32, not its value +-50 %
    assert params["workloads.toml:networks.sqz.accuracy_int8"].mode == "loss"
    # x = -1 / +1 reach each number's declared ends, item by item for a list
    monkeypatch.setattr("autoscale_env.tools.estimates.enumerate_estimates", lambda: tuple(params.values()))
    lo = perturbed_documents({busy.name: -1.0, tx.name: 1.0})
    mid = perturbed_documents({busy.name: 0.5})
    assert lo["devices/mi8pro.toml"]["processors"]["cpu"]["busy_power_w"] == 1.75
    assert lo["links.toml"]["wifi"]["tx_power_multiplier"] == [1.2, 1.4, 1.7, 2.3]
    assert mid["devices/mi8pro.toml"]["processors"]["cpu"]["busy_power_w"] == pytest.approx(4.375)


def test_a_link_parameter_reaches_the_remote_targets_only():
    cell = dict(device="mi8pro", scenario="streaming", setting="dynamic")
    tx = param("links.toml", "wifi", "rx_power_multiplier")  # receive power: energy, not time
    base = _outcomes(SimBackend("mi8pro", "streaming", "dynamic"))
    moved = build_world({tx.name: tx.high}, **cell)
    lat, energy = _outcomes(moved)
    assert np.array_equal(lat, base[0])  # the same requests: transmit power costs no time
    local = np.array([t.is_local for t in moved.targets])
    assert np.array_equal(energy[:, local], base[1][:, local])
    cloud = [str(t) for t in moved.targets].index("cloud/gpu/fp32")
    assert (energy[:, cloud] >= base[1][:, cloud]).all()
    assert (energy[:, cloud] > base[1][:, cloud]).any()


def test_with_the_provenance_report_the_parameters_are_its_estimates():
    from autoscale_env.world import provenance
    entries = provenance.estimates()
    params = enumerate_estimates()
    assert [p.name for p in params] == [e.name for e in entries]
    assert sum(p.count for p in params) == sum(e.count for e in entries)

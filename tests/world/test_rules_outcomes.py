"""The outcome rules (:class:`autoscale_env.world.rules.OutcomeModel`): which link, host, noise
entry and timeout each target uses, worked out by hand from the data files.

``tests/test_rules.py`` covers a phone processor and the cloud over Wi-Fi without noise; here the
edge device over Wi-Fi Direct, every noise entry (one per target, then the goodput of Wi-Fi and of
Wi-Fi Direct), each link's own timeout, and the model's bookkeeping (its tables, its arguments).
"""

from __future__ import annotations

import dataclasses
import tomllib

import numpy as np
import pytest

from autoscale_env.world import config
from autoscale_env.world.errors import ConfigError
from autoscale_env.world.rules import OutcomeModel, outcomes

DATA = config.DATA_DIR


def toml(name: str) -> dict:
    with open(DATA / name, "rb") as f:
        return tomllib.load(f)


def offload_by_hand(phone: dict, host: dict, unit: str, link: dict, network: str, rssi: float,
                    goodput_noise: float, runtime_noise: float, gap_ms: float):
    """A remote request written out from the TOML files (links.toml's rate model, the phone's
    radio power, the host's latency plus overhead)."""
    net = toml("workloads.toml")["networks"][network]
    usable = [k for k, r in enumerate(link["mcs_min_rssi_dbm"])
              if rssi >= r + link["threshold_shift_db"]]
    mcs = max(usable)  # the cases below are all above MCS 0
    rate = (link["mcs_phy_mbps"][mcs] * link["phy_multiplier"] * link["goodput_fraction"]
            * goodput_noise)                                   # Mbit/s = kbit/ms
    up_ms, down_ms = net["input_bytes"] * 8e-3 / rate, net["output_bytes"] * 8e-3 / rate
    rtt = link["rtt_ms"] + link["rtt_per_mcs_step_below_4_ms"] * max(0, 4 - mcs)
    server = (host["latency_ms"][network][unit] + host["overhead_ms"]) * runtime_noise
    latency = up_ms + rtt + server + down_ms
    active, base = phone["base"]["wifi_active_w"], phone["base"]["power_w"]
    band = sum(rssi < e for e in link["power_band_edges_dbm"])
    tx, rx = active * link["tx_power_multiplier"][band], active * link["rx_power_multiplier"][band]
    tail = active * link["tail_power_fraction"] * min(link["tail_ms"], gap_ms)
    return latency, tx * up_ms + rx * down_ms + base * latency + tail


# Sums of a dozen float operations on decimals, in a different order than the model's: equal to
# well within 1e-12 relative, while any change of a rule moves them by far more.
REL = 1e-12


@pytest.fixture(scope="module")
def mi8pro():
    return OutcomeModel("mi8pro", "non_streaming")


def column(model: OutcomeModel, target: str) -> int:
    return [str(t) for t in model.targets].index(target)


# (target, host profile, link, Wi-Fi dBm, Wi-Fi Direct dBm, runtime noise, goodput noise used,
#  goodput noise of the other link, co-running CPU and memory %)
REMOTE = {
    # mnv1 to the Galaxy Tab S6's GPU over Wi-Fi Direct at -64 dBm (MCS 5), with 0.8 x the link's
    # goodput and 1.1 x the tablet's runtime; Wi-Fi is at another RSSI and noise, unused.
    "edge over Wi-Fi Direct": ("edge/gpu/fp32", "devices/galaxy_tab_s6.toml", "p2p", -50.0, -64.0,
                               1.1, 0.8, 1.7, 60.0),
    # mnv1 to the cloud's CPU over Wi-Fi at -72 dBm with the Wi-Fi goodput noise.
    "cloud over Wi-Fi": ("cloud/cpu/fp32", "devices/cloud_server.toml", "wifi", -72.0, -45.0,
                         0.9, 1.3, 0.5, 0.0),
}


@pytest.mark.parametrize("case", list(REMOTE))
def test_remote_target_runs_over_its_link_with_that_links_noise(mi8pro, case):
    target, host_file, link, wifi_dbm, p2p_dbm, runtime, goodput, other, load = REMOTE[case]
    phone, host = toml("devices/mi8pro.toml"), toml(host_file)
    links, gap = toml("links.toml"), toml("scenarios.toml")["non_streaming"]["request_gap_ms"]
    j = column(mi8pro, target)
    T = len(mi8pro.targets)
    noise = np.ones((1, mi8pro.n_noise))
    # noise entries T and T + 1 are the Wi-Fi and the Wi-Fi Direct goodput
    wifi_noise, p2p_noise = (goodput, other) if link == "wifi" else (other, goodput)
    noise[0, j], noise[0, T], noise[0, T + 1] = runtime, wifi_noise, p2p_noise
    lat, en = mi8pro.outcomes([0], [load], [load], [wifi_dbm], [p2p_dbm], noise)
    rssi = wifi_dbm if link == "wifi" else p2p_dbm
    want = offload_by_hand(phone, host, target.split("/", 1)[1], links[link], "mnv1", rssi,
                           goodput, runtime, gap)
    assert (lat[0, j], en[0, j]) == pytest.approx(want, rel=REL)


def test_each_target_reads_its_own_runtime_noise_entry(mi8pro):
    """Noise entry j scales target j's compute time only (mi8pro's targets all run on their own
    unit for mnv1: no fallback shares an entry)."""
    T = len(mi8pro.targets)
    quiet_lat, _ = mi8pro.outcomes([0], [0.0], [0.0], [-50.0], [-50.0])
    for j in range(T):
        noise = np.ones((1, mi8pro.n_noise))
        noise[0, j] = 2.0
        lat, _ = mi8pro.outcomes([0], [0.0], [0.0], [-50.0], [-50.0], noise)
        changed = np.flatnonzero(lat[0] != quiet_lat[0]).tolist()
        assert changed == [j], (mi8pro.targets[j], changed)
        assert lat[0, j] > quiet_lat[0, j]


def test_each_remote_target_times_out_after_its_own_links_timeout():
    """Links with different timeouts, both disconnected: cloud targets wait Wi-Fi's, edge
    targets Wi-Fi Direct's, at transmit plus base power."""
    bundled = config.load_links()
    links = {"wifi": dataclasses.replace(bundled["wifi"], timeout_ms=700.0),
             "p2p": dataclasses.replace(bundled["p2p"], timeout_ms=1300.0)}
    model = OutcomeModel("mi8pro", "non_streaming", links=links)
    phone = toml("devices/mi8pro.toml")["base"]
    lat, en = model.outcomes([0], [0.0], [0.0], [-120.0], [-120.0])
    for j, t in enumerate(model.targets):
        if t.is_local:
            continue
        timeout = 700.0 if t.location == "cloud" else 1300.0
        assert lat[0, j] == timeout, t
        assert en[0, j] == pytest.approx((phone["wifi_active_w"] + phone["power_w"]) * timeout,
                                         rel=REL)


def test_noise_has_an_entry_per_target_and_one_per_link():
    assert OutcomeModel("mi8pro").n_noise == 9 + 2
    assert OutcomeModel("moto_x_force").n_noise == 8 + 2


def test_the_models_tables_are_read_only(mi8pro):
    for name in ("base_ms", "accuracy", "noise_row", "link"):
        with pytest.raises(ValueError, match="read-only"):
            getattr(mi8pro.tables, name)[0, ...] = 0


def test_link_of_each_target(mi8pro):
    """Phone targets have no link (-1), cloud ones Wi-Fi (0), edge ones Wi-Fi Direct (1)."""
    want = [-1 if t.is_local else (1 if t.location == "edge" else 0) for t in mi8pro.targets]
    assert mi8pro.tables.link.tolist() == want == [-1] * 5 + [1, 1, 0, 0]


def test_network_indices_outside_the_catalog_are_refused(mi8pro):
    W = len(mi8pro.workloads)
    assert mi8pro.outcomes([0, W - 1], 0.0, 0.0, -50.0, -50.0)[0].shape == (2, 9)
    for bad in (W, W + 5, -1):  # refused up front, naming the valid range
        with pytest.raises(IndexError, match=f"outside the catalog's 0..{W - 1}"):
            mi8pro.outcomes([0, bad], 0.0, 0.0, -50.0, -50.0)
    assert mi8pro.outcomes(np.zeros(0, dtype=int), 0.0, 0.0, -50.0, -50.0)[0].shape == (0, 9)


def test_scalar_conditions_broadcast_over_the_requests(mi8pro):
    lat, _ = mi8pro.outcomes(np.zeros((2, 3), dtype=int), 25.0, 10.0, -60.0, -55.0)
    one, _ = mi8pro.outcomes([0], [25.0], [10.0], [-60.0], [-55.0])
    assert lat.shape == (2, 3, 9) and (lat == one[0]).all()


def test_only_a_phone_profile_makes_an_outcome_model():
    for device in ("galaxy_tab_s6", "cloud_server"):
        with pytest.raises(ConfigError, match="phone"):
            OutcomeModel(device)


def test_arguments_after_the_scenario_are_keywords_only():
    model = OutcomeModel(phone="galaxy_s10e", scenario="streaming", edge="galaxy_tab_s6")
    assert model.scenario.name == "streaming" and model.phone.name == "galaxy_s10e"
    with pytest.raises(TypeError):
        OutcomeModel("mi8pro", "non_streaming", "galaxy_tab_s6")
    lat, _ = outcomes("mi8pro", [0], [0.0], [0.0], [-50.0], [-50.0], None, scenario="streaming")
    assert lat.shape == (1, 9)
    with pytest.raises(TypeError):
        outcomes("mi8pro", [0], [0.0], [0.0], [-50.0], [-50.0], None, "streaming")

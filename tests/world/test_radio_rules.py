"""The radio model (:mod:`autoscale_env.world.radio`) at each of its thresholds, from
``data/links.toml`` read as text, and with hand-made links where the bundled numbers cannot tell
two rules apart (the bundled transmit and receive multipliers are the same in every power band).

The rules (``links.toml``, ``docs/world.md``):

* MCS ``k`` is usable from ``mcs_min_rssi_dbm[k] + threshold_shift_db`` up (a signal exactly on a
  threshold reaches it); goodput is that MCS's ``phy x multiplier x fraction``;
  ``below_min_goodput_mbps`` from ``disconnect_rssi_dbm`` (inclusive) up to MCS 0, and 0 below;
* round trip: ``rtt_ms + rtt_per_mcs_step_below_4_ms x max(0, 4 - mcs)`` (mcs -1 below MCS 0);
* power band: one band further per edge strictly above the signal (edges descending);
* tail energy: ``wifi_active_w x tail_power_fraction x min(tail_ms, request gap)``;
* a remote request: up at goodput, round trip, server, down; energy transmit x up + receive x
  down + base x latency + tail; a link without goodput times out at transmit + base power.
"""

from __future__ import annotations

import dataclasses
import math
import tomllib

import numpy as np
import pytest

from autoscale_env.world import config, radio

with open(config.DATA_DIR / "links.toml", "rb") as _f:
    RAW = tomllib.load(_f)

LINKS = ("wifi", "p2p")


def down(x: float) -> float:
    return float(np.nextafter(x, -math.inf))


def params(name: str) -> radio.Link:
    return radio.link_params(config.load_links()[name])


def rate(raw: dict, k: int) -> float:
    return raw["mcs_phy_mbps"][k] * raw["phy_multiplier"] * raw["goodput_fraction"]


# The bundled goodputs are products of three decimals from the TOML; the loader multiplies them in
# the same order, so they agree to the last bit or two.
REL = 1e-12


@pytest.mark.parametrize("name", LINKS)
def test_each_mcs_is_reached_exactly_at_its_threshold(name):
    raw, link = RAW[name], params(name)
    for k, threshold in enumerate(raw["mcs_min_rssi_dbm"]):
        edge = threshold + raw["threshold_shift_db"]
        assert radio.mcs_index(link, edge) == k, (name, k)
        assert radio.goodput_mbps(link, edge) == pytest.approx(rate(raw, k), rel=REL)
        assert radio.mcs_index(link, down(edge)) == k - 1, (name, k)  # one ulp below: the MCS below
        below = rate(raw, k - 1) if k else raw["below_min_goodput_mbps"]
        assert radio.goodput_mbps(link, down(edge)) == pytest.approx(below, rel=REL)
    top = len(raw["mcs_min_rssi_dbm"]) - 1
    assert radio.mcs_index(link, -20.0) == top
    assert radio.goodput_mbps(link, -20.0) == pytest.approx(rate(raw, top), rel=REL)


@pytest.mark.parametrize("name", LINKS)
def test_below_mcs0_the_link_carries_the_below_min_rate_down_to_the_disconnect(name):
    raw, link = RAW[name], params(name)
    cut = raw["disconnect_rssi_dbm"]
    assert radio.mcs_index(link, cut) == -1
    assert radio.goodput_mbps(link, cut) == raw["below_min_goodput_mbps"]  # on the edge: on
    assert radio.goodput_mbps(link, down(cut)) == 0.0                      # below it: off
    assert radio.goodput_mbps(link, -150.0) == 0.0


@pytest.mark.parametrize("name", LINKS)
def test_round_trip_grows_by_a_step_per_mcs_below_4(name):
    raw, link = RAW[name], params(name)
    base, step = raw["rtt_ms"], raw["rtt_per_mcs_step_below_4_ms"]
    edges = raw["mcs_min_rssi_dbm"]
    assert radio.rtt_ms(link, edges[4]) == base                  # MCS 4: no extra
    assert radio.rtt_ms(link, -20.0) == base                     # top MCS: never negative steps
    assert radio.rtt_ms(link, edges[3]) == pytest.approx(base + step, rel=REL)
    assert radio.rtt_ms(link, edges[0]) == pytest.approx(base + 4 * step, rel=REL)
    assert radio.rtt_ms(link, down(edges[0])) == pytest.approx(base + 5 * step, rel=REL)  # mcs -1


BANDED = dict(power_band_edges_dbm=(-60.0, -70.0, -80.0), tx_power_multiplier=(1.0, 2.0, 3.0, 4.0),
              rx_power_multiplier=(0.5, 0.6, 0.7, 0.8))


@pytest.mark.parametrize("rssi, band", [
    (-40.0, 0), (-60.0, 0),                    # on the top edge: still band 0
    (down(-60.0), 1), (-70.0, 1),
    (down(-70.0), 2), (-80.0, 2),
    (down(-80.0), 3), (-100.0, 3),
])
def test_radio_power_band_is_the_count_of_edges_above_the_signal(rssi, band):
    link = radio.link_params(dataclasses.replace(config.load_links()["wifi"], **BANDED))
    tx, rx = radio.radio_power_w(link, 0.7, rssi)
    assert tx == pytest.approx(0.7 * BANDED["tx_power_multiplier"][band], rel=REL)
    assert rx == pytest.approx(0.7 * BANDED["rx_power_multiplier"][band], rel=REL)


def test_bundled_radio_power_is_the_active_power_times_the_multipliers():
    raw, link = RAW["wifi"], params("wifi")
    for rssi in (-50.0, -65.0, -75.0, -85.0):
        band = sum(rssi < e for e in raw["power_band_edges_dbm"])
        assert radio.radio_power_w(link, 0.6, rssi) == pytest.approx(
            (0.6 * raw["tx_power_multiplier"][band], 0.6 * raw["rx_power_multiplier"][band]),
            rel=REL)


def test_tail_energy_lasts_the_tail_or_the_gap_whichever_is_shorter():
    raw, link = RAW["wifi"], params("wifi")
    # 0.6 W x 0.35 x 200 ms = 42 mJ; a 50 ms gap cuts it to 10.5 mJ
    assert raw["tail_ms"] == 200.0 and raw["tail_power_fraction"] == 0.35
    assert radio.tail_energy_mj(link, 0.6, 1000.0) == pytest.approx(42.0, rel=REL)
    assert radio.tail_energy_mj(link, 0.6, 50.0) == pytest.approx(10.5, rel=REL)
    assert radio.tail_energy_mj(link, 0.6, 200.0) == pytest.approx(42.0, rel=REL)


def test_link_state_is_noisy_goodput_round_trip_and_radio_power():
    link = radio.link_params(dataclasses.replace(config.load_links()["wifi"], **BANDED))
    goodput, rtt, tx, rx = radio.link_state(link, 0.5, -72.0, 1.25)
    assert goodput == pytest.approx(radio.goodput_mbps(link, -72.0) * 1.25, rel=REL)
    assert rtt == radio.rtt_ms(link, -72.0)
    assert (tx, rx) == pytest.approx((0.5 * 3.0, 0.5 * 0.7), rel=REL)
    assert radio.link_state(link, 0.5, -95.0, 1.25)[0] == 0.0  # disconnected: no goodput


def test_offload_by_hand():
    """Goodput 20 Mbit/s = 20 kbit/ms: 400 kbit up take 20 ms, 40 kbit down 2 ms.
    latency = 20 + 7 (round trip) + 30 (server) + 2 = 59 ms;
    energy = 1.5 W x 20 + 0.9 W x 2 + 0.4 W x 59 + 12 mJ tail = 30 + 1.8 + 23.6 + 12 = 67.4 mJ."""
    latency, energy = radio.offload(20.0, 7.0, 1.5, 0.9, 1000.0, 400.0, 40.0, 30.0, 0.4, 12.0)
    assert latency == pytest.approx(59.0, rel=REL)
    assert energy == pytest.approx(67.4, rel=REL)


def test_a_slow_link_still_transmits():
    """Any positive goodput carries the request, however slow: at 0.5 Mbit/s the 400 kbit input
    take 800 ms and the output 80 ms, within the 1 s timeout: 800 + 7 + 30 + 80 = 917 ms."""
    latency, _ = radio.offload(0.5, 7.0, 1.5, 0.9, 1000.0, 400.0, 40.0, 30.0, 0.4, 12.0)
    assert latency == pytest.approx(917.0, rel=REL)


@pytest.mark.parametrize("goodput", [0.0, -1.0, math.nan])
def test_a_link_without_goodput_times_out_at_transmit_and_base_power(goodput):
    """No positive goodput (0 when disconnected; anything not above 0 counts as none)."""
    latency, energy = radio.offload(goodput, 7.0, 1.5, 0.9, 1000.0, 400.0, 40.0, 30.0, 0.4, 12.0)
    assert latency == 1000.0
    assert energy == pytest.approx((1.5 + 0.4) * 1000.0, rel=REL)


def test_link_params_keeps_every_field_but_the_name_as_floats():
    model = config.load_links()["p2p"]
    link = radio.link_params(model)
    assert link._fields == tuple(f.name for f in dataclasses.fields(model) if f.name != "name")
    for name in link._fields:
        value = getattr(link, name)
        if isinstance(value, tuple):
            assert value == tuple(getattr(model, name)) and all(type(v) is float for v in value)
        else:
            assert value == getattr(model, name) and type(value) is float

"""The links' RSSI -> goodput is Android's ThroughputPredictor, quantised to the MCS grid.

Expected values are computed here from the predictor's constants (AOSP
frameworks/opt/net/wifi ThroughputPredictor.java: noise floor -96 dBm at 20 MHz, +3 dB per width
doubling, 16 dB SNR margin, bits per tone log2(1 + SNR) up to 9 dB and SNR/3 above, 52 / 108 data
tones, 3.6 us symbols, default channel utilisation 95/255 at 2.4 GHz and 15/255 at 5 GHz), not
read back from links.toml, so a drifted table fails.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from autoscale_env.world import config, radio


def _predictor_mbps(bits_per_tone: float, *, tones: int, streams: int, subchannels: int,
                    utilisation: int) -> float:
    air = ((255 - utilisation) / 255) ** subchannels
    return bits_per_tone * streams * tones / 3.6 * air


def _wifi(bits: float) -> float:  # 802.11n, 2.4 GHz, 20 MHz, 2 streams
    return _predictor_mbps(bits, tones=52, streams=2, subchannels=1, utilisation=95)


def goodput(model, rssi_dbm) -> np.ndarray:
    """The world's goodput (Mbit/s) of link ``model`` at each RSSI (the one scalar rule)."""
    link = radio.link_params(model)
    return np.array([radio.goodput_mbps(link, float(r)) for r in rssi_dbm])


@pytest.mark.parametrize("rssi_dbm, expected_mbps", [
    # SNR = RSSI - (-96 + 16) = -2 dB: MCS0 (BPSK 1/2, 0.5 bit/tone, needs SNR 10 log10(2^0.5 - 1)
    # = -3.83 dB) but not MCS1 (1 bit/tone needs 0 dB): 0.5 x 2 x 52 / 3.6 x 160/255 = 9.06
    (-82.0, _wifi(0.5)),
    # SNR 0 dB: 1 bit/tone (LUT[10] = 1000/1000): MCS1, 18.13
    (-80.0, _wifi(1.0)),
    # SNR 10 dB: predictor 10/3 = 3.33 bits; highest MCS below it is MCS4 (16-QAM 3/4, 3 bits,
    # SNR 8.45 dB): 54.38
    (-70.0, _wifi(3.0)),
    # SNR 20 dB: capped at 11n's 5 bits/tone (64-QAM 5/6, MCS7): 90.63
    (-60.0, _wifi(5.0)),
])
def test_wifi_goodput_is_the_throughput_predictor_at_the_mcs_reached(rssi_dbm, expected_mbps):
    link = config.load_links()["wifi"]
    got = goodput(link, [rssi_dbm])[0]
    assert got == pytest.approx(expected_mbps, rel=2e-4)


def test_hand_computed_values_of_the_wifi_curve():
    # The same four points as literal numbers, so the formula above cannot drift with the table.
    assert [round(_wifi(b), 2) for b in (0.5, 1.0, 3.0, 5.0)] == [9.06, 18.13, 54.38, 90.63]


def test_wifi_below_mcs0_carries_the_predictors_mean_and_disconnects_at_its_zero():
    link = config.load_links()["wifi"]
    lut = [171, 212, 262, 323, 396, 484]  # SNR -9 ... -4 dB, bits x 1000
    mean = sum(_wifi(b / 1000) for b in lut) / len(lut)
    got = goodput(link, [-89.0, -86.0, -84.0, -90.5])
    assert got[:3] == pytest.approx([mean] * 3, rel=1e-3)
    assert got[3] == 0.0  # SNR <= -10 dB: LUT[0] = 0


def test_p2p_is_the_5ghz_40mhz_predictor():
    link = config.load_links()["p2p"]
    # 40 MHz: noise floor + margin = -96 + 3 + 16 = -77 dBm; -50 dBm is SNR 27 dB, capped at
    # 11ac's 6.666 bits/tone (MCS9), 108 tones, air time (240/255)^2: 354.3 Mbit/s
    top = _predictor_mbps(6.666, tones=108, streams=2, subchannels=2, utilisation=15)
    assert round(top, 1) == 354.3
    got = goodput(link, [-50.0, -77.0, -88.0])
    assert got[0] == pytest.approx(top, rel=2e-4)
    # SNR 0 dB: MCS1 (1 bit/tone)
    assert got[1] == pytest.approx(_predictor_mbps(1.0, tones=108, streams=2, subchannels=2,
                                                   utilisation=15), rel=2e-4)
    assert got[2] == 0.0


def test_mcs_steps_are_where_the_predictor_reaches_each_rate():
    link = config.load_links()["wifi"]
    bits = [0.5, 1, 1.5, 2, 3, 4, 4.5, 5]
    snr = [10 * math.log10(2 ** b - 1) if 10 * math.log10(2 ** b - 1) <= 9 else 3 * b for b in bits]
    assert link.mcs_min_rssi_dbm == pytest.approx([s - 80 for s in snr], abs=0.01)

"""The signal-strength model of a wireless link (vectorised; pure functions).

RSSI picks the highest MCS whose minimum sensitivity it clears; the MCS gives goodput and the extra
round-trip time of retransmissions; RSSI bands give the radio's transmit and receive power. See
``data/links.toml`` for the numbers and their sources.

Every quantity here is a step function of RSSI, so :func:`link_table` tabulates them once per link
(one row per interval between consecutive thresholds) and the simulator looks them up with a single
``searchsorted`` per request instead of re-evaluating each function.
"""

from __future__ import annotations

import numpy as np

from autoscale_env.world.config import LinkModel

#: Columns of :func:`link_table`'s table.
TABLE_COLUMNS = ("goodput_mbps", "rtt_ms", "tx_w", "rx_w")


def mcs_index(link: LinkModel, rssi_dbm: np.ndarray) -> np.ndarray:
    """Highest MCS usable at ``rssi_dbm`` (-1 below the lowest MCS's sensitivity)."""
    return np.searchsorted(np.asarray(link.mcs_min_rssi_dbm), rssi_dbm, side="right") - 1


def goodput_mbps(link: LinkModel, rssi_dbm: np.ndarray) -> np.ndarray:
    """Application goodput (Mbit/s) at ``rssi_dbm``; 0 where the link is disconnected."""
    mcs = mcs_index(link, rssi_dbm)
    table = np.asarray((link.below_min_goodput_mbps,) + link.mcs_goodput_mbps)
    rate = table[mcs + 1]
    return np.where(np.asarray(rssi_dbm) < link.disconnect_rssi_dbm, 0.0, rate)


def rtt_ms(link: LinkModel, rssi_dbm: np.ndarray) -> np.ndarray:
    """Round-trip time (ms): the base RTT plus retransmission delay at low MCS."""
    steps_below = np.maximum(0, 4 - mcs_index(link, rssi_dbm))
    return link.rtt_ms + link.rtt_per_mcs_step_below_4_ms * steps_below


def radio_power_w(link: LinkModel, wifi_active_w: float,
                  rssi_dbm: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(transmit, receive) radio power in W above base at ``rssi_dbm``."""
    edges = np.asarray(link.power_band_edges_dbm)
    band = (np.asarray(rssi_dbm)[..., None] < edges).sum(axis=-1)
    tx = wifi_active_w * np.asarray(link.tx_power_multiplier)[band]
    rx = wifi_active_w * np.asarray(link.rx_power_multiplier)[band]
    return tx, rx


def tail_energy_mj(link: LinkModel, wifi_active_w: float, request_gap_ms: float) -> float:
    """Energy of the radio's high-power tail after a transfer (mJ)."""
    return wifi_active_w * link.tail_power_fraction * min(link.tail_ms, request_gap_ms)


def link_table(link: LinkModel, wifi_active_w: float) -> tuple[np.ndarray, np.ndarray]:
    """Tabulate the step functions of ``link`` over RSSI.

    Returns:
        ``(edges, table)``: ``edges`` is the sorted union of every threshold (MCS sensitivities,
        power bands, disconnection); ``k = np.searchsorted(edges, rssi, side="right")`` is the
        interval of ``rssi``, and ``table[k]`` holds :data:`TABLE_COLUMNS` there, exactly the values
        :func:`goodput_mbps`, :func:`rtt_ms` and :func:`radio_power_w` give for that ``rssi``.
    """
    edges = np.unique(np.concatenate([
        np.asarray(link.mcs_min_rssi_dbm, dtype=float),
        np.asarray(link.power_band_edges_dbm, dtype=float),
        [float(link.disconnect_rssi_dbm)],
    ]))
    # One representative RSSI per interval: side="right" puts a value equal to an edge above it.
    points = np.concatenate([[edges[0] - 1.0], edges])
    tx, rx = radio_power_w(link, wifi_active_w, points)
    table = np.column_stack([goodput_mbps(link, points), rtt_ms(link, points), tx, rx])
    return edges, np.ascontiguousarray(table, dtype=float)


def offload(link: LinkModel, *, wifi_active_w: float, base_power_w: float, rssi_dbm: np.ndarray,
            goodput_noise: np.ndarray, up_bytes: np.ndarray, down_bytes: np.ndarray,
            server_ms: np.ndarray, request_gap_ms: float) -> tuple[np.ndarray, np.ndarray]:
    """Latency (ms) and phone energy (mJ) of running requests remotely over ``link``.

    The phone transmits the input, waits (base power) for the round trip and the server, receives
    the output, and keeps the radio in its high-power tail for ``min(tail_ms, request_gap_ms)``.
    A disconnected link burns ``timeout_ms`` at transmit power and base power, then gives up.
    All array arguments broadcast together. (The simulator evaluates the same formulas from
    :func:`link_table` lookups; this function is the readable reference.)
    """
    rate = goodput_mbps(link, rssi_dbm) * goodput_noise
    connected = rate > 0
    kbits_per_ms = np.where(connected, rate, 1.0)  # 1 Mbit/s = 1 kbit/ms
    up_ms = up_bytes * 8e-3 / kbits_per_ms
    down_ms = down_bytes * 8e-3 / kbits_per_ms
    latency = up_ms + rtt_ms(link, rssi_dbm) + server_ms + down_ms
    tx_w, rx_w = radio_power_w(link, wifi_active_w, rssi_dbm)
    tail_mj = tail_energy_mj(link, wifi_active_w, request_gap_ms)
    energy = tx_w * up_ms + rx_w * down_ms + base_power_w * latency + tail_mj
    latency = np.where(connected, latency, link.timeout_ms)
    energy = np.where(connected, energy, (tx_w + base_power_w) * link.timeout_ms)
    return latency, energy

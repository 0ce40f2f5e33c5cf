"""The signal-strength model of a wireless link, per request (compiled; pure functions of scalars).

RSSI picks the highest MCS whose minimum sensitivity it clears; the MCS gives goodput and the extra
round-trip time of retransmissions; RSSI bands give the radio's transmit and receive power. See
``data/links.toml`` for the numbers and their sources. :func:`offload` puts them together into one
remote request's latency and phone energy.

These functions are the model, not a reference copy of it: the simulator, the fleet's contention
and the live backend's energy model all call them. They take a :class:`Link` (the numbers of one
``links.toml`` table as a tuple of floats and tuples of floats, which numba passes around
without reference counting); :func:`link_params` makes one from a
:class:`~autoscale_env.world.config.LinkModel`. A request evaluates each link once
(:func:`link_state`) and every remote target over it (:func:`offload`). How RSSI becomes goodput is the one function
:func:`goodput_mbps`: a different rate model is a local edit there.
"""

from __future__ import annotations

from collections import namedtuple
from dataclasses import fields

from numba import njit

from autoscale_env.world.config import LinkModel


#: One link's numbers as the compiled rules take them: the fields of
#: :class:`~autoscale_env.world.config.LinkModel` (``links.toml``) but its name, lists as tuples of
#: floats (values, not arrays: no reference counting in the loops).
Link = namedtuple("Link", [f.name for f in fields(LinkModel) if f.name != "name"])


def link_params(link: LinkModel) -> Link:
    """The :class:`Link` of a loaded link model."""
    def value(v):
        return tuple(float(x) for x in v) if isinstance(v, tuple) else float(v)

    return Link(*(value(getattr(link, name)) for name in Link._fields))


@njit(cache=True, inline="always")
def mcs_index(link: Link, rssi_dbm: float) -> int:
    """Highest MCS usable at ``rssi_dbm`` (-1 below the lowest MCS's sensitivity)."""
    mcs = -1
    for k in range(len(link.mcs_min_rssi_dbm)):
        if rssi_dbm >= link.mcs_min_rssi_dbm[k]:
            mcs = k
    return mcs


@njit(cache=True, inline="always")
def goodput_mbps(link: Link, rssi_dbm: float) -> float:
    """Application goodput (Mbit/s) at ``rssi_dbm``; 0 where the link is disconnected."""
    return _goodput_at_mcs(link, rssi_dbm, mcs_index(link, rssi_dbm))


@njit(cache=True, inline="always")
def _goodput_at_mcs(link: Link, rssi_dbm: float, mcs: int) -> float:
    """:func:`goodput_mbps` given ``mcs = mcs_index(link, rssi_dbm)``."""
    if rssi_dbm < link.disconnect_rssi_dbm:
        return 0.0
    if mcs < 0:
        return link.below_min_goodput_mbps
    return link.mcs_goodput_mbps[mcs]


@njit(cache=True, inline="always")
def rtt_ms(link: Link, rssi_dbm: float) -> float:
    """Round-trip time (ms): the base RTT plus retransmission delay at low MCS."""
    return _rtt_at_mcs(link, mcs_index(link, rssi_dbm))


@njit(cache=True, inline="always")
def _rtt_at_mcs(link: Link, mcs: int) -> float:
    """:func:`rtt_ms` given the MCS (:func:`mcs_index`)."""
    steps_below = max(0, 4 - mcs)
    return link.rtt_ms + link.rtt_per_mcs_step_below_4_ms * steps_below


@njit(cache=True, inline="always")
def radio_power_w(link: Link, wifi_active_w: float, rssi_dbm: float) -> tuple[float, float]:
    """(transmit, receive) radio power in W above base at ``rssi_dbm``."""
    band = 0  # band edges are descending: one band further per edge above the signal
    for edge in link.power_band_edges_dbm:
        if rssi_dbm < edge:
            band += 1
    return (wifi_active_w * link.tx_power_multiplier[band],
            wifi_active_w * link.rx_power_multiplier[band])


@njit(cache=True)
def tail_energy_mj(link: Link, wifi_active_w: float, request_gap_ms: float) -> float:
    """Energy of the radio's high-power tail after a transfer (mJ)."""
    return wifi_active_w * link.tail_power_fraction * min(link.tail_ms, request_gap_ms)


@njit(cache=True, inline="always")
def link_state(link: Link, wifi_active_w: float, rssi_dbm: float,
               goodput_noise: float) -> tuple[float, float, float, float]:
    """``(goodput_mbps, rtt_ms, tx_w, rx_w)`` of ``link`` for one request: the goodput at
    ``rssi_dbm`` times ``goodput_noise`` (median 1; 0 when disconnected), the round trip and
    the radio's transmit and receive power."""
    tx_w, rx_w = radio_power_w(link, wifi_active_w, rssi_dbm)
    mcs = mcs_index(link, rssi_dbm)  # once for both
    return (_goodput_at_mcs(link, rssi_dbm, mcs) * goodput_noise, _rtt_at_mcs(link, mcs), tx_w,
            rx_w)


@njit(cache=True, inline="always")
def offload(goodput_mbps: float, rtt_ms: float, tx_w: float, rx_w: float, timeout_ms: float,
            up_kbit: float, down_kbit: float, server_ms: float, base_power_w: float,
            tail_mj: float) -> tuple[float, float]:
    """Latency (ms) and phone energy (mJ) of one request run remotely over a link in the state
    :func:`link_state` gives.

    The phone transmits the input (``up_kbit``), waits at base power for the round trip and the
    server (``server_ms``), receives the output, and keeps the radio in its high-power tail
    (``tail_mj``, :func:`tail_energy_mj`). A disconnected link (no goodput) burns ``timeout_ms``
    at transmit power and base power, then gives up.
    """
    if not goodput_mbps > 0.0:
        return timeout_ms, (tx_w + base_power_w) * timeout_ms
    up_ms = up_kbit / goodput_mbps  # Mbit/s = kbit/ms
    down_ms = down_kbit / goodput_mbps
    latency = up_ms + rtt_ms + server_ms + down_ms
    energy = tx_w * up_ms + rx_w * down_ms + base_power_w * latency + tail_mj
    return latency, energy

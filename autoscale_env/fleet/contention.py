"""Contention: what sharing the channel and the edge device adds to each phone's own outcome.

A phone's AutoScale-v0 outcome already holds its upload at its own goodput and its own edge service
time. When others transmit or compute at the same time, this module computes the *extra* latency
and energy from a decomposition that public configuration gives (``fleet.toml`` for the rules):

* upload: input bytes of the network over the goodput of the link at the request's RSSI
  (:func:`autoscale_env.world.radio.goodput_mbps`), shared among the round's stations by
  :func:`shared_transfer_ms` (Heusse et al.'s equal throughput, or equal airtime) with Bianchi's
  collision overhead (:func:`collision_slowdown`);
* edge service: the edge profile's latency for the network on the unit + its overhead, queued per
  processor (:func:`fifo_wait_ms` or :func:`ps_wait_ms`); a request reaches the edge when its
  shared upload ends;
* phone energy: the extra upload time at transmit + base power, the extra wait at base power
  (how :func:`autoscale_env.world.radio.offload` charges time).

Extra terms are exactly 0.0 for a phone that shares nothing, so one phone alone is AutoScale-v0
bit for bit. The rules are compiled per row (:func:`shared_transfer_row`, :func:`fifo_wait_row`,
:func:`ps_wait_row`, and :func:`contend` for a whole round); loops run them over any leading
batch axes (``(..., N)``), so a centralised oracle can evaluate thousands of joint actions at once.

This module is the only place that knows how the world is decomposed. :class:`PhoneTables` reads
the same public profiles and link models as :class:`autoscale_env.world.rules.OutcomeModel`;
``tests/test_fleet_contention.py`` checks that its service times and transfer times are exactly
the ones ``rules.outcomes`` adds up, so a change of the rules cannot slip past it.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from numba import njit

from autoscale_env.world import config
from autoscale_env.world import radio
from autoscale_env.fleet.config import DcfTiming, FleetConfig

#: Where a target runs, as stored in :attr:`PhoneTables.link`: no link (local), Wi-Fi, Wi-Fi Direct.
LOCAL, WIFI, P2P = -1, 0, 1


# ----------------------------------------------------------------------------------------------
# Channel: Bianchi's DCF saturation throughput and shared transfers


def bianchi_saturation_throughput(n: int, dcf: DcfTiming) -> float:
    """Normalised saturation throughput S(n) of ``n`` stations under 802.11 DCF, basic access.

    G. Bianchi, IEEE JSAC 18(3), 2000: the fixed point of tau (transmission probability per slot,
    eq. 7 written as ``2 / (1 + W + p W sum_{i<m} (2p)^i)``) and p (conditional collision
    probability, eq. 9), then eq. 13.
    """
    if n < 1:
        raise ValueError(f"n must be >= 1 station, got {n}")
    W = dcf.cw_min + 1
    m = max(0, round(math.log2((dcf.cw_max + 1) / W)))

    def tau_of(p: float) -> float:
        return 2.0 / (1.0 + W + p * W * sum((2.0 * p) ** i for i in range(m)))

    lo, hi = 0.0, 1.0
    for _ in range(200):  # p - (1 - (1 - tau(p))^(n-1)) is increasing in p: bisect its root
        p = 0.5 * (lo + hi)
        if p - (1.0 - (1.0 - tau_of(p)) ** (n - 1)) > 0:
            hi = p
        else:
            lo = p
    tau = tau_of(0.5 * (lo + hi))
    p_tr = 1.0 - (1.0 - tau) ** n
    p_s = n * tau * (1.0 - tau) ** (n - 1) / p_tr
    payload = dcf.payload_bytes * 8.0 / dcf.data_rate_mbps
    header = dcf.phy_header_us + dcf.mac_header_bytes * 8.0 / dcf.data_rate_mbps
    ack = dcf.phy_header_us + dcf.ack_bytes * 8.0 / dcf.basic_rate_mbps
    difs = dcf.sifs_us + 2.0 * dcf.slot_us
    delta = dcf.propagation_us
    t_s = header + payload + dcf.sifs_us + delta + ack + difs + delta
    t_c = header + payload + difs + delta
    return p_s * p_tr * payload / ((1.0 - p_tr) * dcf.slot_us + p_tr * p_s * t_s
                                  + p_tr * (1.0 - p_s) * t_c)


def collision_slowdown(max_stations: int, dcf: DcfTiming) -> np.ndarray:
    """``c[k] = S(1) / S(k)``: how much longer k contending stations take to move the bits one
    station alone would, from Bianchi's model (``c[0] = c[1] = 1`` exactly)."""
    c = np.ones(max(2, max_stations + 1))
    s1 = bianchi_saturation_throughput(1, dcf)
    for k in range(2, max_stations + 1):
        c[k] = s1 / bianchi_saturation_throughput(k, dcf)
    return c


@njit(cache=True)
def shared_transfer_row(size, weight, active, slowdown, out) -> None:
    """:func:`shared_transfer_ms` of one row (1-D arrays), into ``out``."""
    # Only the active stations are sorted: an inactive one moves nothing (it would sort first,
    # at size 0, and add exactly 0 to the clock), so leaving it out changes no result.
    stations = _active(active, out)
    m = len(stations)
    order = np.argsort(size[stations], kind="mergesort")  # stable: ties keep the lower index first
    # the weight of the stations still sending when the k-th shortest finishes (m - k of them)
    rate, total = np.empty(m), 0.0
    for k in range(m - 1, -1, -1):
        total += weight[stations[order[k]]]
        rate[k] = total
    t, previous = 0.0, 0.0
    last = len(slowdown) - 1
    for k in range(m):
        j = stations[order[k]]
        t += (size[j] - previous) * rate[k] * slowdown[min(m - k, last)]
        previous = size[j]
        out[j] = t


@njit(cache=True, inline="always")
def _active(active, out):
    """Indices of the ``active`` entries (ascending); zeroes ``out``, the result of the others."""
    stations = np.empty(len(active), dtype=np.int64)
    m = 0
    for k in range(len(active)):
        out[k] = 0.0
        if active[k]:
            stations[m] = k
            m += 1
    return stations[:m]


def shared_transfer_ms(size: np.ndarray, weight: np.ndarray, active: np.ndarray,
                       slowdown: np.ndarray) -> np.ndarray:
    """Finish times (ms) of transfers that all start at 0 and share one channel, along the last axis.

    While a set A of stations sends, each moves its ``size`` at the same pace, taking
    ``sum_{j in A} weight_j`` ms per unit of size, stretched by ``slowdown[|A|]``; a station leaves
    A when its size is done. With ``size`` in kbit and ``weight`` in ms/kbit (1 / goodput) this is
    Heusse et al.'s equal throughput; with ``size`` = ms alone and ``weight`` = 1 it is equal
    airtime. A station alone finishes at ``size * weight`` exactly. Inactive entries give 0.
    """
    shape, (size, weight, active) = _rows(size, weight, active)
    out = np.empty(size.shape)
    _shared_transfer_rows(size, weight, active, np.asarray(slowdown, dtype=np.float64), out)
    return out.reshape(shape)


@njit(cache=True)
def _shared_transfer_rows(size, weight, active, slowdown, out) -> None:
    for r in range(len(size)):
        shared_transfer_row(size[r], weight[r], active[r], slowdown, out[r])


def _rows(size, weight, active):
    """The shape the three arguments broadcast to, and them as (rows, last axis) arrays."""
    b = np.broadcast_arrays(np.asarray(size, dtype=np.float64),
                            np.asarray(weight, dtype=np.float64), np.asarray(active, dtype=bool))
    shape = b[0].shape
    n = shape[-1] if shape else 1
    return shape, [np.ascontiguousarray(a).reshape(-1, n) for a in b]


# ----------------------------------------------------------------------------------------------
# Edge: queueing disciplines over one round's arrivals


@njit(cache=True)
def fifo_wait_row(arrival_ms, service_ms, active, out) -> None:
    """:func:`fifo_wait_ms` of one row, into ``out``."""
    jobs = _active(active, out)  # only they are queued (the others wait 0)
    order = np.argsort(arrival_ms[jobs], kind="mergesort")  # ties: lower index first
    free_at = -np.inf  # when the server finishes the jobs so far
    for k in order:
        j = jobs[k]
        out[j] = max(0.0, free_at - arrival_ms[j])
        free_at = max(free_at, arrival_ms[j]) + service_ms[j]


def fifo_wait_ms(arrival_ms: np.ndarray, service_ms: np.ndarray, active: np.ndarray) -> np.ndarray:
    """Waiting time before service, first come first served, along the last axis (ties: lower
    index first): a job waits until the server has finished every earlier job, exactly 0 when the
    server is free. Inactive entries give 0."""
    shape, (arrival_ms, service_ms, active) = _rows(arrival_ms, service_ms, active)
    out = np.empty(arrival_ms.shape)
    _wait_rows(arrival_ms, service_ms, active, False, out)
    return out.reshape(shape)


@njit(cache=True)
def ps_wait_row(arrival_ms, service_ms, active, out) -> None:
    """:func:`ps_wait_ms` of one row, into ``out``."""
    n = len(arrival_ms)
    left = np.empty(n)
    present = np.zeros(n, dtype=np.bool_)
    pending = np.empty(n, dtype=np.bool_)
    for k in range(n):
        left[k] = service_ms[k] if active[k] else 0.0
        pending[k] = active[k]
        out[k] = 0.0
    t = 0.0
    for _ in range(2 * n + 1):  # every event is an arrival or a completion
        k_present = 0
        next_arrival, least = np.inf, np.inf
        for j in range(n):
            if present[j]:
                k_present += 1
                least = min(least, left[j])
            elif pending[j]:
                next_arrival = min(next_arrival, arrival_ms[j])
        if k_present == 0 and next_arrival == np.inf:
            break
        next_done = t + least * k_present if k_present > 0 else np.inf
        t_next = min(next_arrival, next_done)
        dt = t_next - t
        for j in range(n):
            if present[j]:
                out[j] += dt - dt / k_present  # each of k jobs progresses at 1/k
                finishing = left[j] == least and next_done <= next_arrival
                left[j] = 0.0 if finishing else left[j] - dt / k_present
                if finishing:
                    present[j] = False
        for j in range(n):
            if pending[j] and arrival_ms[j] <= t_next:
                present[j], pending[j] = True, False
        t = t_next


def ps_wait_ms(arrival_ms: np.ndarray, service_ms: np.ndarray, active: np.ndarray) -> np.ndarray:
    """Extra time over the service time under egalitarian processor sharing, along the last axis.

    Event by event (arrivals and completions, at most 2N per row): while k jobs are present each
    progresses at 1/k, so in an interval of length dt each accrues ``dt * (1 - 1/k)`` of delay,
    exactly 0 when it is alone. Inactive entries give 0.
    """
    shape, (arrival_ms, service_ms, active) = _rows(arrival_ms, service_ms, active)
    out = np.empty(arrival_ms.shape)
    _wait_rows(arrival_ms, service_ms, active, True, out)
    return out.reshape(shape)


@njit(cache=True)
def wait_row(arrival_ms, service_ms, active, processor_sharing, out) -> None:
    """The edge's discipline: :func:`ps_wait_row` or :func:`fifo_wait_row`."""
    if processor_sharing:
        ps_wait_row(arrival_ms, service_ms, active, out)
    else:
        fifo_wait_row(arrival_ms, service_ms, active, out)


@njit(cache=True)
def _wait_rows(arrival_ms, service_ms, active, processor_sharing, out) -> None:
    for r in range(len(arrival_ms)):
        wait_row(arrival_ms[r], service_ms[r], active[r], processor_sharing, out[r])


# ----------------------------------------------------------------------------------------------
# The decomposition of each phone's outcome, from public configuration


@dataclass
class PhoneTables:
    """Per-phone constants of the decomposition, stacked over the fleet (N phones, T = most
    targets of any phone, W workloads; padded targets are local and never chosen).

    Attributes:
        link: (N, T) ``LOCAL``, ``WIFI`` or ``P2P``: the link a target's input crosses.
        queue: (N, T) edge processor of the target (index into ``queues``), -1 when not the edge.
        service_ms: (N, W, T) edge service time of the network on the target (0 elsewhere).
        up_kbit: (W,) input size of each workload, kbit.
        base_w: (N,) phone base power, W.
        wifi_active_w: (N,) phone radio power, W.
        links: the (Wi-Fi, Wi-Fi Direct) :class:`~autoscale_env.world.radio.Link` every phone uses.
    """

    link: np.ndarray
    queue: np.ndarray
    queues: tuple[str, ...]
    service_ms: np.ndarray
    up_kbit: np.ndarray
    base_w: np.ndarray
    wifi_active_w: np.ndarray
    links: tuple

    @classmethod
    def build(cls, devices: Sequence[str], workloads, edge_device: str | None = None) -> PhoneTables:
        """Tables for phones ``devices`` (profile names or paths), one shared edge device.

        Raises ConfigError when the phones' profiles name different edge devices (there is one).
        """
        phones = [config.load_device(d) for d in devices]
        edges = {p.edge for p in phones}
        if edge_device is None:
            if len(edges) != 1:
                raise config.ConfigError(
                    f"a fleet shares one edge device, but the phone profiles name {sorted(edges)}; "
                    f"pass edge_device= or use phones with the same 'edge'")
            edge_device = edges.pop()
        elif edges != {edge_device}:
            raise config.ConfigError(f"edge_device={edge_device!r} but the phone profiles name "
                                     f"{sorted(edges)}: their outcomes would be for another edge")
        edge = config.load_device(edge_device)
        links = config.load_links()
        names = [w.name for w in workloads]
        N, T, W = len(phones), max(len(p.targets) for p in phones), len(names)
        queues = tuple(sorted({t.processor for t in edge.targets}
                              | {edge.fallback_unit.split("/")[0]}))
        link = np.full((N, T), LOCAL, dtype=np.int64)
        queue = np.full((N, T), -1, dtype=np.int64)
        service = np.zeros((N, W, T))
        for n, p in enumerate(phones):
            for j, t in enumerate(p.targets):
                if t.location == "edge":
                    link[n, j] = P2P
                    for i, net in enumerate(names):
                        unit, ms = edge.unit_latency_ms(net, t.unit)
                        service[n, i, j] = ms + edge.overhead_ms
                    # the processor that really runs it (a fallback runs on the fallback's)
                    queue[n, j] = queues.index(edge.unit_latency_ms(names[0], t.unit)[0]
                                               .split("/")[0])
                elif t.location == "cloud":
                    link[n, j] = WIFI
        return cls(link=link, queue=queue, queues=queues, service_ms=service,
                   up_kbit=np.array([w.input_bytes * 8e-3 for w in workloads]),
                   base_w=np.array([p.base_power_w for p in phones]),
                   wifi_active_w=np.array([p.wifi_active_w for p in phones], dtype=np.float64),
                   links=tuple(radio.link_params(links[k]) for k in ("wifi", "p2p")))

    def link_state(self, rssi_wifi_dbm: np.ndarray, rssi_p2p_dbm: np.ndarray):
        """Per request, both links' (ms per kbit, transmit power W, connected): three arrays of
        shape ``rssi.shape + (2,)`` for RSSI arrays whose last axis is the phone."""
        wifi = np.asarray(rssi_wifi_dbm, dtype=np.float64)
        shape = wifi.shape + (2,)
        N = len(self.base_w)
        rssi = np.stack([wifi, np.broadcast_to(np.asarray(rssi_p2p_dbm, dtype=np.float64),
                                               wifi.shape)], axis=-1).reshape(-1, N, 2)
        ms_per_kbit, tx_w = np.empty(rssi.shape), np.empty(rssi.shape)
        _link_state(self.links, self.wifi_active_w, rssi, ms_per_kbit, tx_w)
        ms_per_kbit, tx_w = ms_per_kbit.reshape(shape), tx_w.reshape(shape)
        return ms_per_kbit, tx_w, ms_per_kbit > 0


@njit(cache=True)
def _link_state(links, wifi_active_w, rssi_dbm, ms_per_kbit, tx_w) -> None:
    """(rows, N, 2) per phone and link: 1 / goodput (0 when disconnected) and transmit power."""
    for r in range(rssi_dbm.shape[0]):
        for n in range(rssi_dbm.shape[1]):
            phone_link_state(links, wifi_active_w[n], rssi_dbm[r, n, 0], rssi_dbm[r, n, 1],
                             ms_per_kbit[r, n], tx_w[r, n], 0)


@njit(cache=True, inline="always")
def phone_link_state(links, wifi_active_w, rssi_wifi_dbm, rssi_p2p_dbm, ms_per_kbit, tx_w,
                     col) -> None:
    """One request's two links (:meth:`PhoneTables.link_state`), into ``ms_per_kbit[col]`` and
    ``tx_w[col]`` (Wi-Fi) and ``[col + 1]`` (Wi-Fi Direct): 1 / goodput, 0 when disconnected,
    and the transmit power. ``links``: :attr:`PhoneTables.links`."""
    # The two links are indexed by constants: their MCS tables differ in length (2.4 GHz 11n vs
    # 5 GHz 11ac), so they are records of different types and a runtime index cannot pick one.
    _one_link(links[0], wifi_active_w, rssi_wifi_dbm, ms_per_kbit, tx_w, col)
    _one_link(links[1], wifi_active_w, rssi_p2p_dbm, ms_per_kbit, tx_w, col + 1)


@njit(cache=True, inline="always")
def _one_link(link, wifi_active_w, rssi_dbm, ms_per_kbit, tx_w, k) -> None:
    goodput = radio.goodput_mbps(link, rssi_dbm)  # Mbit/s = kbit/ms
    ms_per_kbit[k] = 1.0 / goodput if goodput > 0 else 0.0
    tx_w[k] = radio.radio_power_w(link, wifi_active_w, rssi_dbm)[0]


class Contention:
    """Extra latency and energy of a round of actions (see the module docstring).

    Args:
        tables: the fleet's :class:`PhoneTables`.
        fleet: the rules (``fleet.toml``).
    """

    def __init__(self, tables: PhoneTables, fleet: FleetConfig):
        self.tables = tables
        self.fleet = fleet
        N, T = tables.link.shape
        self.n_phones, self.n_targets = N, T
        self.slowdown = collision_slowdown(N, fleet.dcf)
        # channel of each link: Wi-Fi Direct is its own domain unless it shares the AP's channel
        self.n_domains = 1 if fleet.p2p_shares_ap_channel else 2
        # per (phone, target), flat: link, channel domain (-1: local), edge queue (-1: not the edge)
        self._link = np.ascontiguousarray(tables.link.reshape(-1), dtype=np.int64)
        self._domain = np.where(self._link == P2P, self.n_domains - 1, self._link)
        self._queue = np.ascontiguousarray(tables.queue.reshape(-1), dtype=np.int64)
        self._n_queues = len(tables.queues)
        self._processor_sharing = fleet.discipline == "processor_sharing"
        self._equal_airtime = fleet.sharing == "equal_airtime"
        self._base_w = np.ascontiguousarray(tables.base_w, dtype=np.float64)
        #: :func:`contend`'s arguments that are the same every round, in its order around the
        #: round's inputs: ``(link, domain, queue)`` and ``(base_w, slowdown, n_domains,
        #: n_queues, equal_airtime, processor_sharing)`` (for callers that compile a round).
        self.rules = ((self._link, self._domain, self._queue),
                      (self._base_w, self.slowdown, self.n_domains, self._n_queues,
                       self._equal_airtime, self._processor_sharing))

    def adjust(self, flat: np.ndarray, service_ms: np.ndarray, up_kbit: np.ndarray,
               ms_per_kbit: np.ndarray, tx_w: np.ndarray, connected: np.ndarray) -> dict:
        """Extra latency and energy of one round's joint actions, for any batch of them.

        Args:
            flat: ``(..., N)`` flat (phone, target) index of each phone's action,
                ``phone * T + action``.
            service_ms: ``(..., N)`` edge service time of each phone's request on its target.
            up_kbit: (N,) input size of each pending request, kbit.
            ms_per_kbit, tx_w, connected: (N * 2,) link state per phone (Wi-Fi, Wi-Fi Direct).

        Returns:
            dict of ``(..., N)`` arrays: ``extra_latency_ms``, ``extra_energy_mj``,
            ``upload_extra_ms``, ``edge_wait_ms``, ``link`` (LOCAL / WIFI / P2P per phone) and
            ``connected`` (the phone's request crossed a working link).
        """
        flat = np.asarray(flat, dtype=np.int64)
        shape, N = flat.shape, self.n_phones
        rows = np.ascontiguousarray(flat).reshape(-1, N)
        if np.shape(service_ms) != shape:
            service_ms = np.broadcast_to(service_ms, shape)
        service = np.ascontiguousarray(service_ms, dtype=np.float64).reshape(-1, N)
        out = np.empty((4,) + rows.shape)
        link = np.empty(rows.shape, dtype=np.int64)
        conn = np.empty(rows.shape, dtype=np.bool_)
        before, after = self.rules
        _contend(*before, rows, service, np.asarray(up_kbit, dtype=np.float64),
                 np.asarray(ms_per_kbit, dtype=np.float64), np.asarray(tx_w, dtype=np.float64),
                 np.asarray(connected, dtype=np.bool_), *after, out[0], out[1], out[2], out[3],
                 link, conn)
        return {"extra_latency_ms": out[0].reshape(shape), "extra_energy_mj": out[1].reshape(shape),
                "upload_extra_ms": out[2].reshape(shape), "edge_wait_ms": out[3].reshape(shape),
                "link": link.reshape(shape), "connected": conn.reshape(shape)}


@njit(cache=True)
def contend(link, domain, queue, flat, service_ms, up_kbit, ms_per_kbit, tx_w, connected, base_w,
            slowdown, n_domains, n_queues, equal_airtime, processor_sharing, extra_latency_ms,
            extra_energy_mj, upload_extra_ms, edge_wait_ms, link_out, connected_out) -> None:
    """One round: what sharing the channels and the edge adds to each phone's own outcome.

    ``flat`` (N,) each phone's (phone, target) index; the other inputs as
    :meth:`Contention.adjust`; outputs (N,).
    """
    N = len(flat)
    alone, ms_per, arrival = np.empty(N), np.empty(N), np.zeros(N)
    finish, wait = np.empty(N), np.empty(N)
    active = np.empty(N, dtype=np.bool_)
    for n in range(N):  # each phone's link and its upload time alone
        k = link[flat[n]]
        col = 2 * n + max(k, 0)
        ms_per[n] = ms_per_kbit[col]
        link_out[n] = k
        connected_out[n] = connected[col] and k >= 0
        alone[n] = up_kbit[n] * ms_per[n]
    for d in range(n_domains):  # uploads share each channel
        for n in range(N):
            active[n] = connected_out[n] and domain[flat[n]] == d
        if equal_airtime:
            shared_transfer_row(alone, np.ones(N), active, slowdown, finish)
        else:
            shared_transfer_row(up_kbit, ms_per, active, slowdown, finish)
        arrival += finish
    for n in range(N):
        upload_extra_ms[n] = arrival[n] - alone[n] if connected_out[n] else 0.0
        edge_wait_ms[n] = 0.0
    for q in range(n_queues):  # requests queue at the edge processor they asked for
        anyone = False
        for n in range(N):
            active[n] = connected_out[n] and queue[flat[n]] == q
            anyone |= active[n]
        if anyone:
            wait_row(arrival, service_ms, active, processor_sharing, wait)
            edge_wait_ms += wait
    for n in range(N):
        col = 2 * n + max(link_out[n], 0)
        extra_latency_ms[n] = upload_extra_ms[n] + edge_wait_ms[n]
        extra_energy_mj[n] = ((tx_w[col] + base_w[n]) * upload_extra_ms[n]
                              + base_w[n] * edge_wait_ms[n])


@njit(cache=True)
def _contend(link, domain, queue, flat, service_ms, up_kbit, ms_per_kbit, tx_w, connected,
             base_w, slowdown, n_domains, n_queues, equal_airtime, processor_sharing,
             extra_latency_ms, extra_energy_mj, upload_extra_ms, edge_wait_ms, link_out,
             connected_out) -> None:
    for r in range(len(flat)):
        contend(link, domain, queue, flat[r], service_ms[r], up_kbit, ms_per_kbit, tx_w,
                connected, base_w, slowdown, n_domains, n_queues, equal_airtime,
                processor_sharing, extra_latency_ms[r], extra_energy_mj[r], upload_extra_ms[r],
                edge_wait_ms[r], link_out[r], connected_out[r])

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
bit for bit. Everything works on arrays with any leading batch axes (``(..., N)``), so a
centralised oracle can evaluate thousands of joint actions at once.

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


def shared_transfer_ms(size: np.ndarray, weight: np.ndarray, active: np.ndarray,
                       slowdown: np.ndarray) -> np.ndarray:
    """Finish times (ms) of transfers that all start at 0 and share one channel, along the last axis.

    While a set A of stations sends, each moves its ``size`` at the same pace, taking
    ``sum_{j in A} weight_j`` ms per unit of size, stretched by ``slowdown[|A|]``; a station leaves
    A when its size is done. With ``size`` in kbit and ``weight`` in ms/kbit (1 / goodput) this is
    Heusse et al.'s equal throughput; with ``size`` = ms alone and ``weight`` = 1 it is equal
    airtime. A station alone finishes at ``size * weight`` exactly. Inactive entries give 0.
    """
    x = np.where(active, size, 0.0)
    v = np.where(active, weight, 0.0)
    index = _sorted_index(x)
    xs = x.take(index)
    vs = v.take(index)
    ks = active.take(index)
    rate = _suffix_sum(vs)  # sum of the weights still sending
    count = _suffix_sum(ks, np.int64)
    step = xs.copy()
    step[..., 1:] -= xs[..., :-1]
    step *= rate
    step *= slowdown.take(count, mode="clip")
    finish = np.empty_like(step)
    finish.reshape(-1)[index] = np.cumsum(step, axis=-1)
    return np.where(active, finish, 0.0)


def _sorted_index(x: np.ndarray) -> np.ndarray:
    """Flat indices into ``x`` that sort each row along the last axis (stable)."""
    order = np.argsort(x, axis=-1, kind="stable")
    if x.ndim > 1:
        order += _row_starts(x.shape)
    return order


def _row_starts(shape: tuple[int, ...]) -> np.ndarray:
    key = shape
    out = _ROW_STARTS.get(key)
    if out is None:
        n = shape[-1]
        out = (np.arange(int(np.prod(shape[:-1]))) * n).reshape(shape[:-1] + (1,))
        if len(_ROW_STARTS) < 64:
            _ROW_STARTS[key] = out
    return out


_ROW_STARTS: dict[tuple[int, ...], np.ndarray] = {}


def _suffix_sum(a: np.ndarray, dtype=None) -> np.ndarray:
    """``out[..., j] = a[..., j:].sum(-1)``."""
    return np.cumsum(a[..., ::-1], axis=-1, dtype=dtype)[..., ::-1]


# ----------------------------------------------------------------------------------------------
# Edge: queueing disciplines over one round's arrivals

#: Arrival time given to entries that do not use a queue (sorts them last, adds no work).
_NEVER_MS = 1e15


def fifo_wait_ms(arrival_ms: np.ndarray, service_ms: np.ndarray, active: np.ndarray) -> np.ndarray:
    """Waiting time before service, first come first served, along the last axis (ties: lower
    index first). ``c_i = max(c_{i-1}, a_i) + s_i`` in closed form: with ``S`` the running sum of
    service times in arrival order, ``c_i = S_i + max_{j<=i} (a_j - S_{j-1})``; a job waits
    ``max(0, c_{i-1} - a_i)``, exactly 0 when the server is free. Inactive entries give 0.
    """
    a = np.where(active, arrival_ms, _NEVER_MS)
    s = np.where(active, service_ms, 0.0)
    index = _sorted_index(a)
    a_s = a.take(index)
    s_s = s.take(index)
    done_work = np.cumsum(s_s, axis=-1)
    slack = a_s - done_work
    slack += s_s
    np.maximum.accumulate(slack, axis=-1, out=slack)
    completion = np.add(done_work, slack, out=done_work)
    wait_sorted = np.zeros_like(completion)
    np.subtract(completion[..., :-1], a_s[..., 1:], out=wait_sorted[..., 1:])
    np.maximum(wait_sorted, 0.0, out=wait_sorted)
    wait = np.empty_like(wait_sorted)
    wait.reshape(-1)[index] = wait_sorted
    return np.where(active, wait, 0.0)


def ps_wait_ms(arrival_ms: np.ndarray, service_ms: np.ndarray, active: np.ndarray) -> np.ndarray:
    """Extra time over the service time under egalitarian processor sharing, along the last axis.

    Event by event (arrivals and completions, at most 2N per row, every row at once): while k
    jobs are present each progresses at 1/k, so in an interval of length dt each accrues
    ``dt * (1 - 1/k)`` of delay, exactly 0 when it is alone. Inactive entries give 0.
    """
    shape = np.broadcast_shapes(np.shape(arrival_ms), np.shape(service_ms), np.shape(active))
    a = np.where(active, arrival_ms, np.inf)
    left = np.where(active, service_ms, 0.0).astype(float)
    present = np.zeros(shape, bool)
    pending = np.broadcast_to(active, shape).copy()
    delay = np.zeros(shape)
    t = np.zeros(shape[:-1])
    for _ in range(2 * shape[-1] + 1):
        if not (present.any() or pending.any()):
            break
        k = present.sum(axis=-1)
        next_arrival = np.where(pending, a, np.inf).min(axis=-1)
        least = np.where(present, left, np.inf).min(axis=-1)
        next_done = np.where(k > 0, t + least * np.maximum(k, 1), np.inf)
        t_next = np.minimum(next_arrival, next_done)
        idle = ~np.isfinite(t_next)
        t_next = np.where(idle, t, t_next)
        dt = (t_next - t)[..., None]
        kk = np.maximum(k, 1)[..., None]
        delay += np.where(present, dt - dt / kk, 0.0)
        finishing = present & (left == least[..., None]) & (next_done <= next_arrival)[..., None]
        left = np.where(present, left - dt / kk, left)
        left = np.where(finishing, 0.0, left)
        present &= ~finishing
        arriving = pending & (a <= t_next[..., None])
        present |= arriving
        pending &= ~arriving
        t = t_next
    return np.where(active, delay, 0.0)


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
            for k in range(2):
                goodput = radio.goodput_mbps(links[k], rssi_dbm[r, n, k])  # Mbit/s = kbit/ms
                ms_per_kbit[r, n, k] = 1.0 / goodput if goodput > 0 else 0.0
                tx_w[r, n, k] = radio.radio_power_w(links[k], wifi_active_w[n],
                                                    rssi_dbm[r, n, k])[0]


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
        # domain of each target per phone (-1: local), and the edge queue (-1: not the edge)
        domain = np.where(tables.link == P2P, self.n_domains - 1, tables.link)
        # per (phone, target), one row each: link, channel domain, edge queue (one take per round)
        self._static = np.stack([tables.link, domain, tables.queue]).reshape(3, -1)
        self._domains = np.arange(self.n_domains)
        self._queues = np.arange(len(tables.queues))
        self._cols = np.arange(N) * 2
        self._wait = ps_wait_ms if fleet.discipline == "processor_sharing" else fifo_wait_ms
        self._equal_airtime = fleet.sharing == "equal_airtime"

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
        link, domain, queue = self._static.take(flat, axis=1)
        col = np.maximum(link, 0)
        col += self._cols
        w = ms_per_kbit.take(col)
        conn = connected.take(col)
        conn &= link >= 0
        alone = np.multiply(up_kbit, w)
        # (D, ..., N): who sends on each channel this round
        sending = domain == self._domains.reshape((-1,) + (1,) * link.ndim)
        sending &= conn
        if self._equal_airtime:
            finish = shared_transfer_ms(alone, 1.0, sending, self.slowdown)
        else:
            finish = shared_transfer_ms(up_kbit, w, sending, self.slowdown)
        arrival = finish.sum(axis=0) if self.n_domains > 1 else finish[0]
        extra_up = np.subtract(arrival, alone, out=np.zeros_like(arrival), where=conn)
        # (Q, ..., N): who queues at each edge processor
        at_edge = queue == self._queues.reshape((-1,) + (1,) * link.ndim)
        at_edge &= conn
        if at_edge.any():
            wait = self._wait(arrival, service_ms, at_edge).sum(axis=0)
        else:
            wait = np.zeros(link.shape)
        base = self.tables.base_w
        extra_energy = tx_w.take(col)
        extra_energy += base
        extra_energy *= extra_up
        extra_energy += base * wait
        return {"extra_latency_ms": extra_up + wait, "extra_energy_mj": extra_energy,
                "upload_extra_ms": extra_up, "edge_wait_ms": wait, "link": link,
                "connected": conn}

"""The world's rules, written once, per request: outcome, reward, oracle.

One request's story, in the order of :func:`request_outcomes` and :func:`score_request`:

1. **compute**: on the phone, :func:`autoscale_env.world.power.local_run` (the processor's busy
   time, stretched by co-running apps); remotely, the server's time;
2. **transfer**: :func:`autoscale_env.world.radio.offload` (input up and output down at the link's
   goodput for the request's RSSI, the round trip, a timeout when the link is down);
3. **energy**: busy, idle, base and radio power over those times;
4. **reward**: :func:`autoscale_env.world.reward.request_reward` of each target's outcome, and
   the **oracle**, the target with the best reward (:func:`best_target`).

These are small functions of scalars, compiled with numba (``@njit(cache=True)``); loops over
requests call them (:func:`outcomes_loop`, :func:`score_loop`, and the simulator's generation
loop in :mod:`autoscale_env.backends.sim`). The single env, the native vector env, the fleet, the
recorder, the drift backend and the harness's oracle all go through these loops; none of them
re-implements a rule. With ``NUMBA_DISABLE_JIT=1`` the same functions run as plain Python (slow,
but a debugger steps through them; ``docs/performance.md``).

Arrays are **request-major**: one request's targets are a contiguous row, ``(..., n_targets)``.
Nothing here draws random numbers: noise is an input, so the same inputs give the same results
whatever the batch shape.

* :class:`OutcomeModel`: a phone's tables (:class:`PhoneWorld`) and every target's latency and
  energy for requests given as arrays (:meth:`OutcomeModel.outcomes`).
* :class:`Scorer`: reward, ``qos_met``, ``accuracy_met`` and oracle of outcomes for one scenario,
  reward preset and ``E_ref`` (:func:`reference_energy_mj`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import numpy as np
from numba import njit

from autoscale_env.world import config
from autoscale_env.world.compiled import batch_loop
from autoscale_env.world.power import local_run
from autoscale_env.world.radio import link_params, link_state, offload, tail_energy_mj
from autoscale_env.world.reward import request_reward, weights
from autoscale_env.world.types import Target, Workload

#: The target whose interference-free energy is ``E_ref``.
REFERENCE_TARGET = Target("local", "cpu", "fp32")

#: ``PhoneWorld.link`` of a target that runs on the phone.
LOCAL = -1


def _profile(device: str | config.DeviceProfile) -> config.DeviceProfile:
    return device if isinstance(device, config.DeviceProfile) else config.load_device(device)


def reference_energy_mj(phone: str | config.DeviceProfile,
                        workloads: Sequence[Workload] | None = None) -> np.ndarray:
    """``E_ref`` per workload (mJ): the energy of ``local/cpu/fp32`` with no interference and no
    noise (:func:`~autoscale_env.world.power.local_run`), a pure function of the phone profile;
    ``workloads`` defaults to the bundled catalog, in its order."""
    phone = _profile(phone)
    if workloads is None:
        workloads = tuple(config.load_workloads().values())
    out = np.empty(len(workloads))
    for i, w in enumerate(workloads):
        unit, ms = phone.unit_latency_ms(w.name, REFERENCE_TARGET.unit)
        proc = phone.processors[unit.split("/")[0]]
        out[i] = local_run(float(ms), 1.0, 0.0, 0.0, proc.cpu_interference, proc.mem_interference,
                           proc.busy_power_w, proc.idle_power_w, phone.base_power_w)[1]
    return out


class PhoneWorld(NamedTuple):
    """One phone's numbers per (workload, target), as the compiled rules take them.

    ``T`` targets, ``W`` workloads. Noise rows (see :meth:`OutcomeModel.outcomes`): ``0..T-1``
    the runtime of each target's unit, ``T`` and ``T + 1`` the goodput of Wi-Fi and Wi-Fi Direct.
    """

    link: np.ndarray               # (T,) LOCAL, 0 (Wi-Fi, the cloud path) or 1 (Wi-Fi Direct)
    base_ms: np.ndarray            # (W, T) latency alone: phone unit, or server + its overhead
    noise_row: np.ndarray          # (W, T) noise row of the unit that really runs it (fallbacks)
    cpu_interference: np.ndarray   # (W, T) of the phone processor (local targets)
    mem_interference: np.ndarray   # (W, T)
    busy_power_w: np.ndarray       # (W, T)
    idle_power_w: np.ndarray       # (W, T)
    accuracy: np.ndarray           # (W, T) accuracy fraction (a fallback runs at its precision)
    up_kbit: np.ndarray            # (W,) input size
    down_kbit: np.ndarray          # (W,) output size
    base_power_w: float
    wifi_active_w: float
    links: tuple                   # (Wi-Fi, Wi-Fi Direct) radio.Link
    tail_mj: tuple                 # (2,) radio tail energy per link


@njit(cache=True, inline="always")
def request_outcomes(world: PhoneWorld, network: int, co_cpu_pct: float, co_mem_pct: float,
                     rssi_wifi_dbm: float, rssi_p2p_dbm: float, noise: np.ndarray,
                     latency_ms: np.ndarray, energy_mj: np.ndarray) -> None:
    """Every target's latency and phone energy for one request, into ``latency_ms`` and
    ``energy_mj`` (n_targets,). ``noise``: (n_targets + 2,) multiplicative noise, median 1."""
    link_of = world.link
    T = len(link_of)
    cpu_frac = co_cpu_pct / 100.0
    mem_frac = co_mem_pct / 100.0
    # the two links' state at this request's signal (tuples indexed with constants: a run-time
    # index into a tuple of records would copy it)
    wifi = link_state(world.links[0], world.wifi_active_w, rssi_wifi_dbm, noise[T])
    p2p = link_state(world.links[1], world.wifi_active_w, rssi_p2p_dbm, noise[T + 1])
    # each table read once per request, and indexed in two dimensions ([network, j]): a row
    # view would cost a reference count (an atomic operation) per request and table
    base_ms, noise_row = world.base_ms, world.noise_row
    kc, km = world.cpu_interference, world.mem_interference
    busy_w, idle_w = world.busy_power_w, world.idle_power_w
    up_kbit, down_kbit = world.up_kbit[network], world.down_kbit[network]
    w = network
    for j in range(T):
        runtime_noise = noise[noise_row[w, j]]
        k = link_of[j]
        if k == LOCAL:  # compute on the phone
            latency_ms[j], energy_mj[j] = local_run(
                base_ms[w, j], runtime_noise, cpu_frac, mem_frac, kc[w, j], km[w, j],
                busy_w[w, j], idle_w[w, j], world.base_power_w)
        else:  # transfer, compute on the server, transfer back
            goodput, rtt, tx_w, rx_w = wifi if k == 0 else p2p
            latency_ms[j], energy_mj[j] = offload(
                goodput, rtt, tx_w, rx_w, world.links[0].timeout_ms if k == 0 else
                world.links[1].timeout_ms, up_kbit, down_kbit, base_ms[w, j] * runtime_noise,
                world.base_power_w, world.tail_mj[k])


@batch_loop()
def outcomes_loop(world: PhoneWorld, network, co_cpu_pct, co_mem_pct, rssi_wifi_dbm,
                  rssi_p2p_dbm, noise, latency_ms, energy_mj) -> None:
    """:func:`request_outcomes` of every request: inputs (n,), ``noise`` (n, n_noise), outputs
    (n, n_targets)."""
    for i in range(len(network)):
        request_outcomes(world, network[i], co_cpu_pct[i], co_mem_pct[i], rssi_wifi_dbm[i],
                         rssi_p2p_dbm[i], noise[i], latency_ms[i], energy_mj[i])


class OutcomeModel:
    """Latency and phone energy of every target of one phone, for requests in arrays.

    Args:
        phone: a phone profile (name, path or an already loaded :class:`config.DeviceProfile`,
            e.g. one with a perturbed number for a sensitivity analysis).
        scenario: the scenario (its request gap sets the radio tail energy).
        edge, cloud: the remote hosts' profiles (default: those the phone names).
        links: the link models (default: ``data/links.toml``).
        workloads: the catalog (default: the bundled one); ``network`` arrays index it.

    Attributes:
        targets: the phone's targets (the order of the outcome columns).
        workloads: the catalog.
        accuracy: (n_workloads, n_targets) accuracy fraction of each network on each target.
        tables: the :class:`PhoneWorld` the compiled rules take.
    """

    def __init__(self, phone: str | config.DeviceProfile,
                 scenario: str | config.Scenario = "non_streaming", *,
                 edge: str | config.DeviceProfile | None = None,
                 cloud: str | config.DeviceProfile | None = None,
                 links: dict[str, config.LinkModel] | None = None,
                 workloads: Sequence[Workload] | None = None):
        self.phone = _profile(phone)
        if self.phone.kind != "phone":
            raise config.ConfigError(
                f"{self.phone.path}: device must be a phone profile, got kind {self.phone.kind!r}")
        self.scenario = scenario if isinstance(scenario, config.Scenario) else \
            config.get_scenario(scenario)
        self.edge = _profile(edge if edge is not None else self.phone.edge)
        self.cloud = _profile(cloud if cloud is not None else self.phone.cloud)
        self.links = links if links is not None else config.load_links()
        self.workloads: tuple[Workload, ...] = tuple(
            workloads if workloads is not None else config.load_workloads().values())
        self.targets: tuple[Target, ...] = tuple(self.phone.targets)
        self.tables = self._tabulate()
        self.accuracy = self.tables.accuracy

    def _tabulate(self) -> PhoneWorld:
        phone = self.phone
        W, T = len(self.workloads), len(self.targets)
        base_ms, accuracy = np.zeros((W, T)), np.zeros((W, T))
        busy, idle, kc, km = (np.zeros((W, T)) for _ in range(4))
        noise_row = np.zeros((W, T), dtype=np.int64)
        link = np.array([LOCAL if t.is_local else (1 if t.location == "edge" else 0)
                         for t in self.targets], dtype=np.int64)
        for j, t in enumerate(self.targets):
            for i, w in enumerate(self.workloads):
                if t.is_local:
                    unit, ms = phone.unit_latency_ms(w.name, t.unit)
                    proc = phone.processors[unit.split("/")[0]]
                    base_ms[i, j] = ms
                    busy[i, j], idle[i, j] = proc.busy_power_w, proc.idle_power_w
                    kc[i, j], km[i, j] = proc.cpu_interference, proc.mem_interference
                else:
                    host = self.edge if t.location == "edge" else self.cloud
                    unit, ms = host.unit_latency_ms(w.name, t.unit)
                    base_ms[i, j] = ms + host.overhead_ms
                # A target that falls back to another unit shares that unit's noise row, so a
                # fallback is reliably a little worse than asking for the unit directly.
                runs_on = Target(t.location, *unit.split("/"))
                noise_row[i, j] = self.targets.index(runs_on) if runs_on in self.targets else j
                accuracy[i, j] = w.accuracy[unit.split("/")[1]]
        link_models = (self.links["wifi"], self.links["p2p"])
        tables = PhoneWorld(
            link=link, base_ms=base_ms, noise_row=noise_row, cpu_interference=kc,
            mem_interference=km, busy_power_w=busy, idle_power_w=idle, accuracy=accuracy,
            up_kbit=np.array([w.input_bytes * 8e-3 for w in self.workloads]),
            down_kbit=np.array([w.output_bytes * 8e-3 for w in self.workloads]),
            base_power_w=float(phone.base_power_w), wifi_active_w=float(phone.wifi_active_w),
            links=tuple(link_params(m) for m in link_models), tail_mj=(0.0, 0.0))
        tables = tables._replace(tail_mj=tuple(
            tail_energy_mj(link, float(phone.wifi_active_w), float(self.scenario.request_gap_ms))
            for link in tables.links))
        for a in (base_ms, accuracy, noise_row, link):
            a.flags.writeable = False
        return tables

    @property
    def n_noise(self) -> int:
        """Noise values per request (:meth:`outcomes`): one per target, then the two links."""
        return len(self.targets) + 2

    def outcomes(self, network, co_cpu_pct, co_mem_pct, rssi_wifi_dbm, rssi_p2p_dbm,
                 noise=None) -> tuple[np.ndarray, np.ndarray]:
        """``(latency_ms, energy_mj)`` of every target, each ``S + (n_targets,)``.

        Args:
            network: int workload indices, shape ``S`` (any shape).
            co_cpu_pct, co_mem_pct: co-running apps' CPU and memory use (%), shape ``S``.
            rssi_wifi_dbm, rssi_p2p_dbm: signal of the cloud link and the edge link (dBm), ``S``.
            noise: ``S + (n_noise,)`` multiplicative noise (median 1): entries ``0..T-1`` the
                runtime of each target's unit (a target that falls back to another unit uses
                that unit's target's entry), ``T`` and ``T + 1`` the goodput of Wi-Fi and Wi-Fi
                Direct. ``None``: noise-free.
        """
        network = np.asarray(network, dtype=np.int64)
        S, n, T = network.shape, network.size, len(self.targets)
        W = len(self.workloads)
        if n and (network.min() < 0 or network.max() >= W):
            raise IndexError(f"network index outside the catalog's 0..{W - 1}")
        ctx = [np.ascontiguousarray(np.broadcast_to(np.asarray(x, dtype=np.float64), S)).reshape(-1)
               for x in (co_cpu_pct, co_mem_pct, rssi_wifi_dbm, rssi_p2p_dbm)]
        if noise is None:
            noise = np.ones((n, self.n_noise))
        else:
            noise = np.ascontiguousarray(noise, dtype=np.float64).reshape(n, self.n_noise)
        latency, energy = np.empty((n, T)), np.empty((n, T))
        outcomes_loop(self.tables, network.reshape(-1), *ctx, noise, latency, energy)
        return latency.reshape(S + (T,)), energy.reshape(S + (T,))


def outcomes(device: str | config.DeviceProfile, network, co_cpu_pct, co_mem_pct, rssi_wifi_dbm,
             rssi_p2p_dbm, noise=None, *,
             scenario: str | config.Scenario = "non_streaming") -> tuple[np.ndarray, np.ndarray]:
    """Every target's ``(latency_ms, energy_mj)`` for requests given as arrays of any shape ``S``.

    A one-call form of :meth:`OutcomeModel.outcomes` (see it for the arguments and the noise
    entries) for a phone name, path or loaded profile; results are ``S + (n_targets,)`` in
    ``OutcomeModel(device).targets`` order. For repeated calls build the model once.

    Example: ``rules.outcomes("mi8pro", [0, 3], [0.0, 50.0], [0.0, 30.0], [-55.0, -85.0],
    [-50.0, -50.0])`` gives two (2, 9) arrays, noise-free.
    """
    return OutcomeModel(device, scenario).outcomes(network, co_cpu_pct, co_mem_pct,
                                                   rssi_wifi_dbm, rssi_p2p_dbm, noise)


# ----------------------------------------------------------------------------------------------
# Reward and oracle


@njit(cache=True, inline="always")
def best_target(rewards: np.ndarray) -> int:
    """The target with the highest reward (ties: the lowest index); -1 when any reward is
    unknown (NaN): the best action cannot be known without every target's outcome."""
    best = 0
    for j in range(len(rewards)):
        if rewards[j] != rewards[j]:
            return -1
        if rewards[j] > rewards[best]:
            best = j
    return best


class Scoring(NamedTuple):
    """What the compiled scorer needs: per-workload ``E_ref`` and accuracy target, the scenario's
    latency target and the preset's weights."""

    reference_energy_mj: np.ndarray   # (W,)
    accuracy_target: np.ndarray       # (W,) fp32 accuracy minus the scenario's tolerance
    qos_ms: float
    weights: tuple                    # (violation_penalty, latency_weight, accuracy_weight)


@njit(cache=True, inline="always")
def score_request(scoring: Scoring, network: int, latency_ms: np.ndarray, energy_mj: np.ndarray,
                  accuracy: np.ndarray, reward: np.ndarray, qos_met: np.ndarray,
                  accuracy_met: np.ndarray) -> int:
    """Reward and flags of every target of one request (into the (n_targets,) outputs); returns
    the oracle action (:func:`best_target`)."""
    c, w_lat, w_acc = scoring.weights
    ref = scoring.reference_energy_mj[network]
    target = scoring.accuracy_target[network]
    for j in range(len(latency_ms)):
        reward[j], qos_met[j], accuracy_met[j] = request_reward(
            latency_ms[j], energy_mj[j], accuracy[j], ref, target, scoring.qos_ms, c, w_lat, w_acc)
    return best_target(reward)


@batch_loop()
def score_loop(scoring: Scoring, network, latency_ms, energy_mj, accuracy, reward, qos_met,
               accuracy_met, oracle) -> None:
    """:func:`score_request` of every request: ``network`` (n,), the rest (n, n_targets),
    ``oracle`` (n,)."""
    for i in range(len(network)):
        oracle[i] = score_request(scoring, network[i], latency_ms[i], energy_mj[i], accuracy[i],
                                  reward[i], qos_met[i], accuracy_met[i])


@batch_loop()
def _oracle_loop(rewards, out) -> None:
    for i in range(len(out)):
        out[i] = best_target(rewards[i])


def oracle_actions(rewards) -> np.ndarray:
    """:func:`best_target` of every request of a request-major ``S + (n_targets,)`` reward
    array: int64 of shape ``S`` (-1 where a reward is unknown)."""
    rewards = np.asarray(rewards, dtype=np.float64)
    S, T = rewards.shape[:-1], rewards.shape[-1]
    out = np.empty(int(np.prod(S)), dtype=np.int64)
    _oracle_loop(np.ascontiguousarray(rewards).reshape(-1, T), out)
    return out.reshape(S)


class Scorer:
    """Reward, constraint flags and oracle of outcomes: :func:`request_reward` for one scenario,
    phone and reward preset.

    Args:
        preset: the reward preset.
        scenario: its ``qos_ms`` and ``accuracy_tolerance``.
        workloads: the catalog (``network`` arrays index it).
        reference_energy_mj: ``E_ref`` per workload (:func:`reference_energy_mj` for a profile).
        accuracy: optional (n_workloads, n_targets) accuracy table of a world whose accuracy
            depends only on (network, target) (the sim): :meth:`score` then takes it by default.
    """

    def __init__(self, preset: config.RewardPreset, scenario: config.Scenario,
                 workloads: Sequence[Workload], reference_energy_mj: np.ndarray,
                 accuracy: np.ndarray | None = None):
        self.preset = preset
        self.qos_ms = float(scenario.qos_ms)
        self.reference_energy_mj = np.asarray(reference_energy_mj, dtype=np.float64)
        #: per workload: fp32 accuracy minus the scenario's tolerance
        self.accuracy_target = np.array(
            [w.accuracy["fp32"] - scenario.accuracy_tolerance for w in workloads])
        self.accuracy = None if accuracy is None else np.asarray(accuracy, dtype=np.float64)
        self.tables = Scoring(np.ascontiguousarray(self.reference_energy_mj),
                              self.accuracy_target, self.qos_ms, weights(preset))

    def score_all(self, network, latency_ms, energy_mj, accuracy=None):
        """``(reward, qos_met, accuracy_met, oracle)`` of request-major outcomes.

        Args:
            network: workload indices, shape ``S``.
            latency_ms, energy_mj: ``S + (k,)`` for ``k`` targets (NaN = unknown outcome, which
                scores NaN with ``qos_met`` False and makes the oracle -1).
            accuracy: ``S + (k,)``; default the table given at construction.
        """
        network = np.asarray(network, dtype=np.int64)
        S = network.shape
        latency_ms = np.asarray(latency_ms, dtype=np.float64)
        k = latency_ms.shape[-1]
        n = network.size
        if accuracy is None:
            if self.accuracy is None:
                raise ValueError("Scorer.score needs accuracy= (this scorer was built without an "
                                 "accuracy table)")
            accuracy = self.accuracy[network]
        args = []
        for x in (latency_ms, energy_mj, accuracy):
            x = np.asarray(x, dtype=np.float64)
            if x.shape != S + (k,):
                x = np.broadcast_to(x, S + (k,))
            args.append(np.ascontiguousarray(x).reshape(n, k))
        if n and (network.min() < 0 or network.max() >= len(self.reference_energy_mj)):
            raise IndexError("network index outside the catalog")
        reward = np.empty((n, k))
        qos, met = np.empty((n, k), dtype=np.bool_), np.empty((n, k), dtype=np.bool_)
        oracle = np.empty(n, dtype=np.int64)
        score_loop(self.tables, network.reshape(-1), *args, reward, qos, met, oracle)
        return (reward.reshape(S + (k,)), qos.reshape(S + (k,)), met.reshape(S + (k,)),
                oracle.reshape(S))

    def score(self, network, latency_ms, energy_mj, accuracy=None):
        """``(reward, qos_met, accuracy_met)`` of request-major outcomes (:meth:`score_all`)."""
        return self.score_all(network, latency_ms, energy_mj, accuracy)[:3]

"""The fleet as arrays: N phones step together, one round per step (see :mod:`autoscale_env.fleet`)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from gymnasium.utils import seeding
from numba import njit

from autoscale_env.backends.sim import run_split
from autoscale_env.world import config
from autoscale_env.world.compiled import batch_loop
from autoscale_env.world.types import Backend
from autoscale_env.world.errors import InvalidActionError
from autoscale_env.fleet.config import FleetConfig, load_fleet_config
from autoscale_env.fleet.contention import (P2P, WIFI, Contention, PhoneTables, contend,
                                            phone_link_state)
from autoscale_env.fleet.worlds import FleetWorlds
from autoscale_env.world.observation import StateEncoder, encode_request
from autoscale_env.world.reward import request_reward, reward, weights
from autoscale_env.world.rules import best_target

#: Shared resources of the optional load signal, in observation order after the paper state.
LOAD_RESOURCES = ("edge", "access_point")


def phone_rngs(seed: int | None, n: int) -> list[np.random.Generator]:
    """Generators of ``n`` phones: phone 0 gets exactly what ``env.reset(seed=seed)`` of
    AutoScale-v0 uses (Gymnasium's ``np_random(seed)``); phone ``k >= 1`` gets child ``k`` of the
    same seed sequence (``SeedSequence(seed, spawn_key=(k,))``), independent of phone 0."""
    first, _ = seeding.np_random(seed)
    entropy = first.bit_generator.seed_seq.entropy if seed is None else seed
    return [first] + [np.random.Generator(np.random.PCG64(
        np.random.SeedSequence(entropy, spawn_key=(k,)))) for k in range(1, n)]


class FleetCore:
    """N phones sharing one edge device and one access point, stepped as arrays.

    ``step(actions)`` takes one action per phone (an int array of shape (N,)) and returns the next
    observations (N, F), the rewards (N,) and an info dict of (N,) arrays. Everything else as in
    :class:`autoscale_env.fleet.FleetParallelEnv`, which wraps this class for PettingZoo.

    Args:
        phones: ``(device, scenario, setting)`` per phone.
        reward: reward preset (``data/rewards.toml``).
        features: state bins (as AutoScale-v0's ``features``).
        load_signal: append the binned number of phones that used the edge and the access point in
            the previous round to each observation.
        fleet: the contention rules (default: the bundled ``fleet.toml``).
        backend, backend_options: as :class:`~autoscale_env.fleet.worlds.FleetWorlds`.
        batched: allow the batched sim path (identical results).
        threads: threads generating and scoring a big fleet's blocks (identical results;
            default numba's thread count).
    """

    def __init__(self, phones: Sequence[tuple[str, str, str]], *, reward: str = "energy",
                 features: str | None = None, load_signal: bool = False,
                 fleet: FleetConfig | None = None, backend: str | Sequence[Backend] = "sim",
                 backend_options: dict[str, Any] | None = None, batched: bool = True,
                 threads: int | None = None):
        self.fleet = fleet or load_fleet_config()
        self.reward_preset = config.get_reward_preset(reward)
        self._weights = weights(self.reward_preset)
        self.worlds = FleetWorlds(phones, backend, backend_options, batched=batched,
                                  threads=threads)
        w = self.worlds
        self.n_phones = N = w.n_phones
        self.targets = w.targets
        self.n_targets = w.n_targets
        self.T = w.T
        self.workloads = w.workloads
        self.scenarios = [b.scenario for b in w.backends]
        self.phones = [tuple(p) for p in phones]
        self.energy_sources = [str(getattr(b, "energy_source", "model")) for b in w.backends]
        self.encoder = StateEncoder(config.load_features(features), self.workloads)
        self.load_signal = bool(load_signal)
        self._load_edges = np.array(self.fleet.load_edges)
        n_load = len(self._load_edges) + 1
        self.nvec = np.concatenate([self.encoder.nvec, [n_load] * (2 if load_signal else 0)]).astype(np.int64)
        self.n_states = int(np.prod(self.nvec))
        self._strides = np.cumprod(np.concatenate([self.nvec[1:], [1]])[::-1])[::-1].astype(np.int64)
        profiles = [getattr(getattr(b, "phone", None), "path", None) for b in w.backends]
        if any(p is None for p in profiles):
            profiles = [p[0] for p in phones]
        self.tables = PhoneTables.build(profiles, self.workloads)
        self.contention = Contention(self.tables, self.fleet)
        self.qos_ms = np.array([s.qos_ms for s in self.scenarios], dtype=np.float64)
        self._reference = w.reference_energy_mj  # (N, W)
        self._accuracy_target = np.array(
            [[wl.accuracy["fp32"] - s.accuracy_tolerance for wl in self.workloads]
             for s in self.scenarios])  # (N, W)
        self.valid_actions = np.arange(self.T)[None, :] < self.n_targets[:, None]  # (N, T)
        self._phone = np.arange(N)
        self._rows = self._phone * self.T  # flat (phone, target) index of each phone's target 0
        self._block = None
        self._i = 0
        self._load = np.zeros(2, dtype=np.int64)

    # ------------------------------------------------------------------------------------------

    def reset(self, seed: int | None = None) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        """Start every phone's episode; with ``seed`` the whole run is fixed (phone generators:
        :func:`phone_rngs`). Without one, the phones' generators carry on (as ``env.reset()``)."""
        if seed is not None or not hasattr(self, "_rngs"):
            self._rngs = phone_rngs(seed, self.n_phones)
        self.worlds.reset(self._rngs)
        self._load[:] = 0
        self._next_block()
        return self.observation(), self.context()

    def step(self, actions) -> tuple[np.ndarray, np.ndarray, dict[str, np.ndarray]]:
        """Run every phone's pending request on its chosen target, together; see the class doc."""
        if self._block is None:
            raise RuntimeError("call reset() before step()")
        out = self._play(self._check(actions), self._load)  # also counts the round's load
        i = self._i
        # the executed request's context (copies: the next block refills the block's arrays);
        # its oracle action is replaced by the next request's below
        info = {"latency_ms": out["latency_ms"], "energy_mj": out["energy_mj"],
                "accuracy": out["accuracy"], "qos_met": out["qos_met"],
                "accuracy_met": out["accuracy_met"], **self.context(),
                "upload_extra_ms": out["upload_extra_ms"], "edge_wait_ms": out["edge_wait_ms"],
                "link": out["link"], "connected": out["connected"]}
        i += 1
        if i == self._n:
            self._next_block()
        else:
            self._i = i
        info["oracle_action"] = self._oracle[self._i].copy()
        return self.observation(), out["reward"], info

    def evaluate(self, actions: np.ndarray) -> dict[str, np.ndarray]:
        """Outcomes of joint ``actions`` (shape ``(..., N)``, checked by the caller) for the
        pending round, without advancing: latency, energy, accuracy, reward, flags, contention.

        One joint action (shape ``(N,)``) is one compiled pass (:func:`play_round`, as
        :meth:`step`); a batch is evaluated with the array forms of the same rules
        (:meth:`Contention.adjust`, :func:`~autoscale_env.world.reward.reward`), with the same
        results bit for bit."""
        actions = np.asarray(actions)
        if actions.ndim == 1:
            return self._play(self._check(actions), np.empty(2, dtype=np.int64))
        i, b, flat = self._i, self._block, actions + self._rows
        lat, energy, acc = (x[i].take(flat) for x in (b.latency_ms, b.energy_mj, b.accuracy))
        net = b.network[i]
        service = self.tables.service_ms[self._phone, net].take(flat)
        c = self.contention.adjust(flat, service, self.tables.up_kbit[net], self._ms_per_kbit[i],
                                   self._tx_w[i], self._connected[i])
        lat += c["extra_latency_ms"]
        energy += c["extra_energy_mj"]
        r, qos, acc_met = reward(self.reward_preset, latency_ms=lat, energy_mj=energy,
                                 accuracy=acc, reference_energy_mj=self._ref[i],
                                 qos_ms=self.qos_ms, accuracy_target=self._acc_target[i])
        return {"latency_ms": lat, "energy_mj": energy, "accuracy": acc, "reward": r,
                "qos_met": qos, "accuracy_met": acc_met, **c}

    def observation(self) -> np.ndarray:
        """Observations of the pending requests, (N, F) int64 (a fresh array)."""
        obs = self._obs[self._i]
        if not self.load_signal:
            return obs.copy()
        level = np.searchsorted(self._load_edges, self._load, side="right")
        return np.concatenate([obs, np.broadcast_to(level, (self.n_phones, 2))], axis=1)

    def context(self) -> dict[str, np.ndarray]:
        """Raw values of the pending requests and the per-phone oracle (ignoring the others),
        fresh arrays."""
        i, b = self._i, self._block
        return {"network": b.network[i].copy(), "co_cpu_pct": b.co_cpu_pct[i].copy(),
                "co_mem_pct": b.co_mem_pct[i].copy(), "rssi_wifi_dbm": b.rssi_wifi_dbm[i].copy(),
                "rssi_p2p_dbm": b.rssi_p2p_dbm[i].copy(), "oracle_action": self._oracle[i].copy()}

    def counterfactual_rewards(self) -> np.ndarray:
        """(N, T) reward of every target for each pending request *alone* (no contention);
        padded targets of phones with fewer targets hold -inf."""
        return self._rewards_alone[self._i].copy()

    def flat_state(self, obs: np.ndarray) -> np.ndarray:
        """Row-major index of (N, F) observations into a table of ``n_states`` rows."""
        return np.asarray(obs) @ self._strides

    def close(self) -> None:
        """Close the phones' backends."""
        self.worlds.close()

    # ------------------------------------------------------------------------------------------

    def _check(self, actions) -> np.ndarray:
        """``actions`` as int64 of shape (N,); the range of each is checked by :meth:`_play`."""
        a = np.asarray(actions)
        if a.shape != (self.n_phones,) or a.dtype.kind not in "iu":
            raise InvalidActionError(f"actions must be {self.n_phones} integers (one per phone), "
                                     f"got shape {a.shape} dtype {a.dtype}")
        return a.astype(np.int64, copy=False)

    def _play(self, a: np.ndarray, load: np.ndarray) -> dict[str, np.ndarray]:
        """The pending round under joint action ``a`` (int64, (N,)) in one compiled pass
        (:func:`play_round`), into fresh arrays (a caller may keep them); ``load`` gets the
        round's (edge, access point) users. Raises InvalidActionError for an action out of
        range, before anything is written."""
        N = self.n_phones
        values = np.empty((8, N))
        flags = np.empty((3, N), dtype=np.bool_)
        link = np.empty(N, dtype=np.int64)
        bad = play_round(self._i, a, *self._round, values, flags, link, load)
        if bad >= 0:
            names = ", ".join(str(t) for t in self.targets[bad])
            raise InvalidActionError(f"phone {bad}: action {int(a[bad])} outside "
                                     f"Discrete({self.n_targets[bad]}); valid actions are "
                                     f"0..{self.n_targets[bad] - 1} ({names})")
        lat, energy, acc, r, extra_lat, extra_energy, upload, wait = values
        qos, acc_met, connected = flags
        return {"latency_ms": lat, "energy_mj": energy, "accuracy": acc, "reward": r,
                "qos_met": qos, "accuracy_met": acc_met, "extra_latency_ms": extra_lat,
                "extra_energy_mj": extra_energy, "upload_extra_ms": upload, "edge_wait_ms": wait,
                "link": link, "connected": connected}

    def _next_block(self) -> None:
        """Draw every phone's next block and compute what its rounds need, in one compiled pass
        (:func:`score_block`, phones split across threads as the worlds' generation is): each
        request's rewards alone and oracle, its observation, its ``E_ref`` and accuracy target,
        and both links' state. The last block's arrays are filled again (fresh ones would cost
        a page fault per 4 KiB, a large part of a block's time): nothing outside this class
        holds them, its methods return copies."""
        last, self._block = self._block, None  # until the new block is complete: reset() again
        b = self.worlds.next_block(last)
        (B, N, T), W = b.latency_ms.shape, len(self.workloads)
        if b.network.size and (b.network.min() < 0 or b.network.max() >= W):
            raise IndexError(f"network index outside the catalog's 0..{W - 1}")
        if b is not last:
            self._allocate(B, N, T)
        # every argument but the phones is the tail: the threads share them all
        run_split(score_block, (), self._phone, self._phone,
                  (b.network, b.co_cpu_pct, b.co_mem_pct, b.rssi_wifi_dbm, b.rssi_p2p_dbm,
                   b.latency_ms, b.energy_mj, b.accuracy, self.n_targets, self._reference,
                   self._accuracy_target, self.qos_ms, self._weights, self.encoder.tables,
                   self.tables.links, self.tables.wifi_active_w, self._ref, self._acc_target,
                   self._rewards_alone, self._oracle, self._obs, self._ms_per_kbit, self._tx_w,
                   self._connected), B, self.worlds.threads)
        # play_round's arguments between the actions and the outputs, the same every round
        before, after = self.contention.rules
        self._round = (self.n_targets, b.network, b.latency_ms, b.energy_mj, b.accuracy,
                       self._ref, self._acc_target, self.qos_ms, self._weights,
                       self.tables.service_ms, self.tables.up_kbit, self._ms_per_kbit, self._tx_w,
                       self._connected, *before, *after)
        self._block, self._n, self._i = b, B, 0

    def _allocate(self, B: int, N: int, T: int) -> None:
        """The per-block arrays :func:`score_block` fills, for blocks of ``B`` requests."""
        self._ref, self._acc_target = np.empty((2, B, N))
        self._rewards_alone = np.empty((B, N, T))
        self._oracle = np.empty((B, N), dtype=np.int64)
        self._obs = np.empty((B, N, len(self.encoder.nvec)), dtype=np.int64)
        # per request, both links of each phone side by side: column 2n + link, as contend reads
        self._ms_per_kbit, self._tx_w = np.empty((2, B, 2 * N))
        self._connected = np.empty((B, 2 * N), dtype=np.bool_)


# ----------------------------------------------------------------------------------------------
# The compiled passes: per block and per round, built from the per-request rules

@batch_loop(nogil=True)
def score_block(phones, columns, network, co_cpu_pct, co_mem_pct, rssi_wifi_dbm, rssi_p2p_dbm,
                latency_ms, energy_mj, accuracy, n_targets, reference_energy_mj,
                accuracy_target_table, qos_ms, weights, enc, links, wifi_active_w, ref,
                acc_target, rewards_alone, oracle, obs, ms_per_kbit, tx_w, connected) -> None:
    """Everything a block's rounds need that does not depend on the actions, for the requests
    of phone ``phones[k]`` of a :class:`~autoscale_env.fleet.worlds.FleetBlock` (``(B, N)``
    requests), written to column ``columns[k]`` of the outputs. The fleet passes its phones
    twice (the pair is what :func:`~autoscale_env.backends.sim.run_split` splits across
    threads); phones are independent, so any split gives the same results.

    Inputs: the block's arrays; per phone ``n_targets`` (N,), ``reference_energy_mj`` and
    ``accuracy_target_table`` (N, W), ``qos_ms`` (N,) and ``wifi_active_w`` (N,); the reward
    ``weights``, the encoder's ``enc`` and the links' :attr:`PhoneTables.links`.

    Outputs: ``ref``, ``acc_target`` (B, N) the request's ``E_ref`` and accuracy target;
    ``rewards_alone`` (B, N, T) each target's :func:`request_reward` alone (-inf on a phone's
    padded targets, so its oracle never picks one); ``oracle`` (B, N) :func:`best_target`;
    ``obs`` (B, N, F) :func:`encode_request`; ``ms_per_kbit``, ``tx_w``, ``connected`` (B, 2N)
    :func:`phone_link_state` at columns ``2n`` (Wi-Fi) and ``2n + 1`` (Wi-Fi Direct).
    """
    c, w_lat, w_acc = weights
    B, T = latency_ms.shape[0], latency_ms.shape[2]
    for b in range(B):  # request by request, each phone in turn: contiguous reads and writes
        for k in range(len(phones)):
            n, col = phones[k], columns[k]
            net = network[b, n]
            e_ref, target = reference_energy_mj[n, net], accuracy_target_table[n, net]
            ref[b, col], acc_target[b, col] = e_ref, target
            for j in range(T):
                if j < n_targets[n]:
                    rewards_alone[b, col, j] = request_reward(
                        latency_ms[b, n, j], energy_mj[b, n, j], accuracy[b, n, j], e_ref, target,
                        qos_ms[n], c, w_lat, w_acc)[0]
                else:
                    rewards_alone[b, col, j] = -np.inf
            oracle[b, col] = best_target(rewards_alone[b, col])
            encode_request(enc, net, co_cpu_pct[b, n], co_mem_pct[b, n], rssi_wifi_dbm[b, n],
                           rssi_p2p_dbm[b, n], obs[b, col])
            phone_link_state(links, wifi_active_w[n], rssi_wifi_dbm[b, n], rssi_p2p_dbm[b, n],
                             ms_per_kbit[b], tx_w[b], 2 * col)
            connected[b, 2 * col] = ms_per_kbit[b, 2 * col] > 0
            connected[b, 2 * col + 1] = ms_per_kbit[b, 2 * col + 1] > 0


@njit(cache=True)
def play_round(i, actions, n_targets, network, latency_ms, energy_mj, accuracy, ref, acc_target,
               qos_ms, weights, service_ms, up_kbit, ms_per_kbit, tx_w, connected, link, domain,
               queue, base_w, slowdown, n_domains, n_queues, equal_airtime, processor_sharing,
               values, flags, link_out, load) -> int:
    """Round ``i`` of a block (arrays as :func:`score_block` reads and writes them) under joint
    ``actions`` (N,): each phone's outcome alone, plus what sharing adds (:func:`contend`, with
    :attr:`Contention.rules` as ``link`` .. ``queue`` and ``base_w`` .. ``processor_sharing``),
    scored by :func:`request_reward`.

    Writes the rows of ``values`` (8, N): latency, energy, accuracy, reward, extra latency,
    extra energy, upload extra, edge wait; of ``flags`` (3, N): qos met, accuracy met,
    connected; ``link_out`` (N,); and ``load`` (2,): how many phones reached the edge and the
    access point. Returns -1; or, writing nothing, the first phone whose action is outside
    ``0..n_targets - 1``.
    """
    N, T = latency_ms.shape[1], latency_ms.shape[2]
    for n in range(N):
        if actions[n] < 0 or actions[n] >= n_targets[n]:
            return n
    flat, service, up = np.empty(N, dtype=np.int64), np.empty(N), np.empty(N)
    for n in range(N):
        flat[n] = n * T + actions[n]
        service[n] = service_ms[n, network[i, n], actions[n]]
        up[n] = up_kbit[network[i, n]]
    contend(link, domain, queue, flat, service, up, ms_per_kbit[i], tx_w[i], connected[i], base_w,
            slowdown, n_domains, n_queues, equal_airtime, processor_sharing, values[4], values[5],
            values[6], values[7], link_out, flags[2])
    c, w_lat, w_acc = weights
    load[0] = load[1] = 0
    for n in range(N):
        a = actions[n]
        values[0, n] = latency_ms[i, n, a] + values[4, n]
        values[1, n] = energy_mj[i, n, a] + values[5, n]
        values[2, n] = accuracy[i, n, a]
        values[3, n], flags[0, n], flags[1, n] = request_reward(
            values[0, n], values[1, n], values[2, n], ref[i, n], acc_target[i, n], qos_ms[n], c,
            w_lat, w_acc)
        if flags[2, n] and link_out[n] == P2P:  # reached the edge over Wi-Fi Direct
            load[0] += 1
        elif flags[2, n] and link_out[n] == WIFI:  # reached the access point
            load[1] += 1
    return -1

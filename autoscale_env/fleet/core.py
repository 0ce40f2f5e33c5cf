"""The fleet as arrays: N phones step together, one round per step (see :mod:`autoscale_env.fleet`)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from gymnasium.utils import seeding

from autoscale_env.world import config
from autoscale_env.world.types import Backend
from autoscale_env.world.errors import InvalidActionError
from autoscale_env.fleet.config import FleetConfig, load_fleet_config
from autoscale_env.fleet.contention import Contention, PhoneTables
from autoscale_env.fleet.worlds import FleetWorlds
from autoscale_env.world.observation import StateEncoder
from autoscale_env.world.reward import reward, reward_loop, weights
from autoscale_env.world.rules import oracle_actions

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
        threads: threads generating a big fleet's blocks (identical results; default numba's
            thread count).
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
        self._n_targets_u = self.n_targets.astype(np.uint64)
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
        self.qos_ms = np.array([s.qos_ms for s in self.scenarios])
        self._reference = w.reference_energy_mj  # (N, W)
        self._accuracy_target = np.array(
            [[wl.accuracy["fp32"] - s.accuracy_tolerance for wl in self.workloads]
             for s in self.scenarios])  # (N, W)
        self.valid_actions = np.arange(self.T)[None, :] < self.n_targets[:, None]  # (N, T)
        self._phone = np.arange(N)
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
        a = self._check(actions)
        out = self.evaluate(a)
        i = self._i
        info = {"latency_ms": out["latency_ms"], "energy_mj": out["energy_mj"],
                "accuracy": out["accuracy"], "qos_met": out["qos_met"],
                "accuracy_met": out["accuracy_met"], "network": self._net[i],
                "co_cpu_pct": self._ctx[0, i], "co_mem_pct": self._ctx[1, i],
                "rssi_wifi_dbm": self._ctx[2, i], "rssi_p2p_dbm": self._ctx[3, i],
                "upload_extra_ms": out["upload_extra_ms"], "edge_wait_ms": out["edge_wait_ms"],
                "link": out["link"], "connected": out["connected"]}
        # phones that reached the edge (Wi-Fi Direct, link 1) and the access point (link 0)
        used = np.bincount(out["link"][out["connected"]], minlength=2)
        self._load[0], self._load[1] = used[1], used[0]
        i += 1
        if i == self._n:
            self._next_block()
        else:
            self._i = i
        info["oracle_action"] = self._oracle[self._i]
        return self.observation(), out["reward"], info

    def evaluate(self, actions: np.ndarray) -> dict[str, np.ndarray]:
        """Outcomes of joint ``actions`` (shape ``(..., N)``, checked by the caller) for the
        pending round, without advancing: latency, energy, accuracy, reward, flags, contention."""
        i, flat = self._i, actions + self._rows
        lat, energy, acc, service = self._table[i].take(flat, axis=1)
        c = self.contention.adjust(flat, service, self._up_kbit[i], self._ms_per_kbit[i],
                                   self._tx_w[i], self._connected[i])
        lat += c["extra_latency_ms"]
        energy += c["extra_energy_mj"]
        if lat.ndim == 1:  # one joint action (a step): the compiled loop, no broadcasting
            r = np.empty(len(lat))
            qos, acc_met = np.empty((2, len(lat)), dtype=bool)
            reward_loop(lat, energy, acc, self._ref[i], self._acc_target[i], self.qos_ms,
                        self._weights, r, qos, acc_met)
        else:
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
        """Raw values of the pending requests and the per-phone oracle (ignoring the others)."""
        i = self._i
        return {"network": self._net[i], "co_cpu_pct": self._ctx[0, i],
                "co_mem_pct": self._ctx[1, i], "rssi_wifi_dbm": self._ctx[2, i],
                "rssi_p2p_dbm": self._ctx[3, i], "oracle_action": self._oracle[i]}

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
        a = np.asarray(actions)
        N = self.n_phones
        if a.shape != (N,) or a.dtype.kind not in "iu":
            raise InvalidActionError(f"actions must be {N} integers (one per phone), got shape "
                                     f"{a.shape} dtype {a.dtype}")
        a = a.astype(np.int64, copy=False)
        if (a.view(np.uint64) >= self._n_targets_u).any():  # negatives wrap to huge unsigned values
            bad = (a < 0) | (a >= self.n_targets)
            k = int(np.flatnonzero(bad)[0])
            names = ", ".join(str(t) for t in self.targets[k])
            raise InvalidActionError(f"phone {k}: action {int(a[k])} outside "
                                     f"Discrete({self.n_targets[k]}); valid actions are "
                                     f"0..{self.n_targets[k] - 1} ({names})")
        return a

    def _next_block(self) -> None:
        # per round i, one (4, N * T) table of (phone, target) values, so that a round's
        # outcomes are one take(): latency, energy, accuracy, edge service time
        N, T = self.n_phones, self.T
        b = self.worlds.next_block()
        B = len(b)
        self._block, self._n, self._i = b, B, 0
        self._rows = np.arange(N) * T
        net = self._net = b.network
        self._ctx = np.stack([b.co_cpu_pct, b.co_mem_pct, b.rssi_wifi_dbm, b.rssi_p2p_dbm])
        self._obs = self.encoder.encode(net, co_cpu_pct=b.co_cpu_pct, co_mem_pct=b.co_mem_pct,
                                        rssi_wifi_dbm=b.rssi_wifi_dbm, rssi_p2p_dbm=b.rssi_p2p_dbm)
        phone = self._phone
        self._ref = self._reference[phone, net]  # (B, N)
        self._acc_target = self._accuracy_target[phone, net]  # (B, N)
        r, _, _ = reward(self.reward_preset, latency_ms=b.latency_ms, energy_mj=b.energy_mj,
                         accuracy=b.accuracy, reference_energy_mj=self._ref[..., None],
                         qos_ms=self.qos_ms[:, None], accuracy_target=self._acc_target[..., None])
        r[:, ~self.valid_actions] = -np.inf
        self._rewards_alone = r
        self._oracle = oracle_actions(r)
        self._table = np.stack([b.latency_ms, b.energy_mj, b.accuracy,
                                self.tables.service_ms[phone, net]], axis=1).reshape(B, 4, N * T)
        self._up_kbit = self.tables.up_kbit[net]
        self._ms_per_kbit, self._tx_w, self._connected = (
            x.reshape(B, N * 2) for x in self.tables.link_state(b.rssi_wifi_dbm, b.rssi_p2p_dbm))

"""A native vector version of AutoScale-v0 for the sim backend.

``gym.make_vec("AutoScale-v0", num_envs=N, vectorization_mode="vector_entry_point")`` returns an
:class:`AutoScaleVectorEnv`: N simulated phones stepped with array operations, each equal to a
single ``gym.make("AutoScale-v0")`` env (with its ``TimeLimit``) seeded with ``seed + i``.
"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium.utils import seeding
from gymnasium.vector import AutoresetMode, VectorEnv
from gymnasium.vector.utils import batch_space

from autoscale_env.world.types import MAX_EPISODE_STEPS
from autoscale_env.backends.sim import SimBackend, SimState
from autoscale_env.env import RAW_HIGH, RAW_LOW, AutoScaleEnv
from autoscale_env.world.errors import InvalidActionError
from autoscale_env.world.rules import Scorer, Scratch, oracle_actions

#: Sub-envs whose blocks are generated in one pass: big enough to amortise numpy's per-call cost,
#: small enough that a pass's temporaries stay near the CPU.
DEFAULT_CHUNK = 64

#: Threads generating blocks (numpy releases the GIL inside its loops, so chunks of sub-envs run
#: in parallel on the machine's cores; results do not depend on it).
DEFAULT_THREADS = min(2, os.cpu_count() or 1)

#: Per-env ``info`` keys of :meth:`AutoScaleVectorEnv.step` (each with its ``_key`` mask).
STEP_KEYS = ("latency_ms", "energy_mj", "accuracy", "qos_met", "accuracy_met")
#: Context keys (about the executed request after a step, the pending one after a reset).
CONTEXT_KEYS = ("co_cpu_pct", "co_mem_pct", "rssi_wifi_dbm", "rssi_p2p_dbm")


class AutoScaleVectorEnv(VectorEnv):
    """``num_envs`` AutoScale-v0 sim envs stepped together with array operations.

    Sub-env ``i`` behaves exactly like ``gym.make("AutoScale-v0", **kwargs)`` reset with seed
    ``seed + i`` (gymnasium's convention for vector seeds), truncated after
    ``max_episode_steps`` steps as ``TimeLimit`` does, and autoreset in gymnasium's default
    ``NEXT_STEP`` mode: the step after a truncation resets that sub-env (its action is ignored,
    its reward is 0). Observations, rewards, flags and the info values below are bit-identical to
    the single envs' (``tests/test_vector.py`` checks it).

    Each sub-env has its own ``np.random.Generator`` (the single env's ``np_random``), which keys
    one fresh stream per episode, and draws its random numbers as ``autoscale_env.backends.sim``
    documents; the rules that turn draws into requests, outcomes, rewards, oracle actions and
    observations (:mod:`autoscale_env.world.rules`, :class:`~autoscale_env.world.observation.StateEncoder`) run
    once for a whole chunk of sub-envs. Blocks of ``block_size`` requests (one default episode)
    are prepared per sub-env; a step then only gathers one entry per sub-env.

    ``infos`` follow gymnasium's dict-of-arrays convention (``infos["_key"]`` marks the sub-envs
    that have ``key``): after a step, ``latency_ms``, ``energy_mj``, ``accuracy``, ``qos_met`` and
    ``accuracy_met`` for the sub-envs that executed a request; ``co_cpu_pct``, ``co_mem_pct``,
    ``rssi_wifi_dbm``, ``rssi_p2p_dbm`` (the executed request's context, or the pending request's
    for a sub-env that was just reset) and ``oracle_action`` (for the request in the returned
    observation) for all. String-valued keys of the single env (``target``, ``network``,
    ``energy_source``, ``error``) are left out: ``target`` is ``targets[action]``.

    Args:
        num_envs: number of sub-envs.
        max_episode_steps: truncation length (the registered ``TimeLimit``, 100).
        device, scenario, setting, reward, obs_mode, features, backend_options: as for
            :class:`~autoscale_env.env.AutoScaleEnv`.
        backend: only ``"sim"`` (use ``vectorization_mode="sync"`` for the others).
        chunk_size: sub-envs per generation pass (performance only; results do not depend on it).
        threads: threads generating blocks, chunk by chunk (performance only, as above).
    """

    metadata = {"render_modes": [], "autoreset_mode": AutoresetMode.NEXT_STEP}

    def __init__(self, num_envs: int = 1, max_episode_steps: int | None = MAX_EPISODE_STEPS,
                 device: str | None = None, scenario: str | None = None,
                 setting: str | None = None, backend: str = "sim", trace: str | None = None,
                 reward: str = "energy", obs_mode: str = "paper", features: str | None = None,
                 backend_options: dict[str, Any] | None = None, render_mode: str | None = None,
                 chunk_size: int = DEFAULT_CHUNK, threads: int = DEFAULT_THREADS):
        if backend != "sim":
            raise ValueError(
                f"the native vector env runs the sim backend only, got backend={backend!r}; use "
                f"gym.make_vec('AutoScale-v0', vectorization_mode='sync', backend={backend!r}) instead")
        if int(num_envs) < 1:
            raise ValueError(f"num_envs must be >= 1, got {num_envs}")
        # One template env: spaces, encoder, reward constants and the (shared, read-only) sim.
        self._env = AutoScaleEnv(device=device, scenario=scenario, setting=setting, backend="sim",
                                 trace=trace, reward=reward, obs_mode=obs_mode, features=features,
                                 backend_options=backend_options, render_mode=render_mode)
        env = self._env
        sim: SimBackend = env.backend
        self.sim = sim
        self.num_envs = N = int(num_envs)
        self.max_episode_steps = None if max_episode_steps is None else int(max_episode_steps)
        self.render_mode = None
        self.chunk_size = max(1, int(chunk_size))
        self.threads = max(1, int(threads))
        self._scratch = [Scratch() for _ in range(self.threads)]  # one per thread
        self._pool: ThreadPoolExecutor | None = None
        self.targets = env.targets
        self.encoder = env.encoder
        self.obs_mode = obs_mode
        self.reward_preset = env.reward_preset
        self.single_observation_space = env.observation_space
        self.single_action_space = env.action_space
        self.observation_space = batch_space(self.single_observation_space, N)
        self.action_space = batch_space(self.single_action_space, N)

        T = self._T = len(env.targets)
        B = self._B = sim.block_size
        F = len(self.encoder.nvec)
        self._qos_ms = env.scenario.qos_ms
        # The template's rules with the sim's accuracy table: the accuracy terms are looked up
        # per (network, target) instead of recomputed (the same elementwise arithmetic).
        self.scorer = Scorer(env.reward_preset, env.scenario, sim.workloads,
                             sim.reference_energy_mj, accuracy=sim.accuracy_table)
        # flat (W * n_targets) for the per-step look-up at network * n_targets + action
        self._accuracy_flat = np.ascontiguousarray(sim.accuracy_table).reshape(-1)
        self._acc_met_flat = np.ascontiguousarray(self.scorer.accuracy_met).reshape(-1)
        self._workload_raw = np.array([[w.conv, w.fc, w.rc] for w in sim.workloads], dtype=float)

        # Per sub-env: generator, process state, current block, position in it, episode length.
        self._rngs: list[np.random.Generator | None] = [None] * N
        self._state = SimState(N)
        self._obs = np.zeros((N * B, F), dtype=np.int64)
        self._raw = np.zeros((N * B, len(RAW_LOW)), dtype=np.float32) if obs_mode != "paper" else None
        # reward, latency, energy, each target-major (n_targets, N * B): the entry of action a for
        # row r (= sub-env * B + position) is at a * N * B + r
        self._outcomes = np.zeros((3, T, N * B))
        self._reward, self._latency, self._energy = self._outcomes
        self._oracle = np.zeros((N * B,), dtype=np.int64)
        self._network = np.zeros((N * B,), dtype=np.int64)
        self._context = np.zeros((4, N * B))
        self._row0 = np.arange(N, dtype=np.int64) * B
        self._pos = np.zeros(N, dtype=np.int64)
        self._steps = np.zeros(N, dtype=np.int64)
        self._autoreset = np.zeros(N, dtype=bool)
        self._started = False

    # ---------------------------------------------------------------------------------------
    # Gymnasium VectorEnv API

    def reset(self, *, seed: int | list[int | None] | None = None,
              options: dict[str, Any] | None = None):
        """Reset all sub-envs (or those in ``options["reset_mask"]``); sub-env i gets ``seed + i``."""
        super().reset(seed=seed if isinstance(seed, int) else None)
        N = self.num_envs
        if seed is None:
            seeds: list[int | None] = [None] * N
        elif isinstance(seed, (int, np.integer)):
            seeds = [int(seed) + i for i in range(N)]
        else:
            seeds = list(seed)
            if len(seeds) != N:
                raise ValueError(f"seed list must have num_envs={N} entries, got {len(seeds)}")
        mask = None if options is None else options.get("reset_mask")
        if mask is None:
            envs = np.arange(N)
        else:
            mask = np.asarray(mask)
            if mask.shape != (N,) or mask.dtype != np.bool_ or not mask.any():
                raise ValueError(f"options['reset_mask'] must be a bool array of shape ({N},) with "
                                 f"at least one True, got {mask!r}")
            if not self._started:
                raise RuntimeError("reset with a reset_mask needs a full reset() first")
            envs = np.flatnonzero(mask)
        for e in envs.tolist():
            if seeds[e] is not None or self._rngs[e] is None:
                self._rngs[e] = seeding.np_random(seeds[e])[0]
        self._start_episodes(envs)
        self._started = True
        rows = self._row0 + self._pos
        obs = self._observation(rows)
        infos = self._context_infos(rows)
        infos["oracle_action"] = self._oracle.take(rows)
        infos["_oracle_action"] = np.ones(N, dtype=bool)
        if mask is not None:
            for key in (*CONTEXT_KEYS, "oracle_action"):
                infos[f"_{key}"] = mask.copy()
        return obs, infos

    def step(self, actions):
        """Step every sub-env; sub-envs truncated at the previous step are reset instead."""
        if not self._started:
            raise gym.error.ResetNeeded("call reset() before step()")
        a = self._check_actions(actions)
        N, T, B = self.num_envs, self._T, self._B
        resetting = self._autoreset.copy()
        any_reset = bool(resetting.any())
        if any_reset:
            self._start_episodes(np.flatnonzero(resetting))
        rows = self._row0 + self._pos
        flat = a * (N * B)
        flat += rows
        rewards, latency, energy = self._outcomes.reshape(3, -1).take(flat, axis=1)
        by_net = self._network.take(rows)
        by_net *= T
        by_net += a
        accuracy = self._accuracy_flat.take(by_net)
        acc_met = self._acc_met_flat.take(by_net)
        qos = latency <= self._qos_ms
        infos = self._context_infos(rows)
        if any_reset:
            stepped = ~resetting
            self._pos += stepped
            self._steps += stepped
            for arr in (rewards, latency, energy, accuracy):
                arr[resetting] = 0.0
            qos[resetting] = False
            acc_met[resetting] = False
        else:
            stepped = infos["_co_cpu_pct"]  # all True
            self._pos += 1
            self._steps += 1
        exhausted = self._pos == B
        if exhausted.any():
            envs = np.flatnonzero(exhausted)
            self._generate(envs)
            self._pos[envs] = 0
        terminations = np.zeros(N, dtype=bool)
        if self.max_episode_steps is None:
            truncations = np.zeros(N, dtype=bool)
        else:
            truncations = self._steps >= self.max_episode_steps
            if any_reset:
                truncations &= stepped
        self._autoreset = terminations | truncations
        next_rows = self._row0 + self._pos
        for key, value in zip(STEP_KEYS, (latency, energy, accuracy, qos, acc_met)):
            infos[key] = value
            infos[f"_{key}"] = stepped  # masks are shared between keys, never modified
        infos["oracle_action"] = self._oracle.take(next_rows)
        infos["_oracle_action"] = infos["_co_cpu_pct"]
        return self._observation(next_rows), rewards, terminations, truncations, infos

    def close_extras(self, **kwargs: Any) -> None:
        """Stop the generation threads (the sim itself holds no processes or sockets)."""
        if self._pool is not None:
            self._pool.shutdown(wait=True)
            self._pool = None
        self._env.close()

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_pool"] = None  # threads are not picklable; started again on demand
        return state

    # ---------------------------------------------------------------------------------------
    # Internals

    def _check_actions(self, actions) -> np.ndarray:
        a = np.asarray(actions)
        T = self._T
        if a.shape != (self.num_envs,) or a.dtype.kind not in "iu":
            raise InvalidActionError(
                f"actions must be {self.num_envs} integers in 0..{T - 1} (one per sub-env), got "
                f"shape {a.shape} dtype {a.dtype}")
        a = a.astype(np.int64, copy=False)
        if (a.view(np.uint64) >= T).any():  # negatives wrap to huge unsigned values
            bad = a[(a < 0) | (a >= T)][0]
            raise InvalidActionError(
                f"action {bad} outside Discrete({T}); valid actions are 0..{T - 1} "
                f"({', '.join(str(t) for t in self.targets)})")
        return a

    def _start_episodes(self, envs: np.ndarray) -> None:
        """New episodes for ``envs``: what ``AutoScaleEnv.reset`` does, per sub-env."""
        rngs = self._rngs
        self.sim.reset_worlds([rngs[e] for e in envs.tolist()], self._state, envs)
        self._generate(envs)
        self._pos[envs] = 0
        self._steps[envs] = 0
        self._autoreset[envs] = False

    def _generate(self, envs: np.ndarray) -> None:
        """Draw and compute the next block of every sub-env in ``envs`` (sorted indices)."""
        C = self.chunk_size
        chunks = []
        for start in range(0, len(envs), C):
            chunk = envs[start:start + C]
            first, last = int(chunk[0]), int(chunk[-1])
            contiguous = last - first + 1 == len(chunk)
            chunks.append((chunk, slice(first, last + 1) if contiguous else chunk, contiguous))
        if self.threads == 1 or len(chunks) == 1:
            for chunk in chunks:
                self._generate_chunk(*chunk, self._scratch[0])
            return
        # Chunks touch disjoint sub-envs (generators, state rows, storage rows), so they can run
        # in any order on any thread: worker k takes chunks k, k + threads, ...
        if self._pool is None:
            self._pool = ThreadPoolExecutor(self.threads - 1, thread_name_prefix="autoscale-vec")
        futures = [self._pool.submit(self._generate_chunks, chunks[k::self.threads],
                                     self._scratch[k]) for k in range(1, self.threads)]
        self._generate_chunks(chunks[0::self.threads], self._scratch[0])
        for f in futures:
            f.result()

    def _generate_chunks(self, chunks, scratch: Scratch) -> None:
        for chunk in chunks:
            self._generate_chunk(*chunk, scratch)

    def _generate_chunk(self, chunk: np.ndarray, worlds, contiguous: bool,
                        ws: Scratch) -> None:
        sim, B, T = self.sim, self._B, self._T
        E = len(chunk)
        raw = ws("vec.raw", (E, B, sim.words_per_request), np.uint64)
        draw, state = sim.draw, self._state
        for i, e in enumerate(chunk.tolist()):  # each sub-env from its own episode stream
            draw(state, e, raw[i])
        if contiguous:  # write straight into the storage (views)
            rows = slice(int(chunk[0]) * B, (int(chunk[-1]) + 1) * B)
            lat_out = self._latency[:, rows].reshape(T, E, B)
            energy_out = self._energy[:, rows].reshape(T, E, B)
        else:
            rows = (chunk[:, None] * B + np.arange(B)).reshape(-1)
            lat_out, energy_out = ws("vec.latency", (T, E, B)), ws("vec.energy", (T, E, B))
        net, cpu, mem, wifi, p2p, latency, energy = sim.generate(
            raw, state, worlds, out=(lat_out, energy_out), scratch=ws)
        # The rules the single env applies to its blocks, on (n_targets, E, B) arrays.
        r, _, _ = self.scorer.score(net, latency, energy, scratch=ws)
        if contiguous:
            self._reward[:, rows].reshape(T, E, B)[...] = r
            self._oracle[rows].reshape(E, B)[...] = oracle_actions(r, ws)
            self.encoder.encode(net, out=self._obs[rows].reshape(E, B, -1), co_cpu_pct=cpu,
                                co_mem_pct=mem, rssi_wifi_dbm=wifi, rssi_p2p_dbm=p2p)
        else:
            self._latency[:, rows] = latency.reshape(T, -1)
            self._energy[:, rows] = energy.reshape(T, -1)
            self._reward[:, rows] = r.reshape(T, -1)
            self._oracle[rows] = oracle_actions(r, ws).reshape(-1)
            self._obs[rows] = self.encoder.encode(
                net, co_cpu_pct=cpu, co_mem_pct=mem, rssi_wifi_dbm=wifi,
                rssi_p2p_dbm=p2p).reshape(E * B, -1)
        self._network[rows] = net.reshape(-1)
        for k, column in enumerate((cpu, mem, wifi, p2p)):
            self._context[k, rows] = column.reshape(-1)
        if self._raw is not None:
            raw = np.concatenate([self._workload_raw[net], cpu[..., None], mem[..., None],
                                  wifi[..., None], p2p[..., None]], axis=-1).astype(np.float32)
            self._raw[rows] = np.clip(raw, RAW_LOW, RAW_HIGH).reshape(E * B, -1)

    def _observation(self, rows: np.ndarray):
        obs = self._obs.take(rows, axis=0)
        if self._raw is None:
            return obs
        return {"state": obs, "raw": self._raw.take(rows, axis=0)}

    def _context_infos(self, rows: np.ndarray) -> dict[str, np.ndarray]:
        infos: dict[str, np.ndarray] = {}
        present = np.ones(self.num_envs, dtype=bool)
        for key, values in zip(CONTEXT_KEYS, self._context.take(rows, axis=1)):
            infos[key] = values
            infos[f"_{key}"] = present  # shared by the keys every sub-env has
        return infos

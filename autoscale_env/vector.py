"""A native vector version of AutoScale-v0 for the sim backend.

``gym.make_vec("AutoScale-v0", num_envs=N, vectorization_mode="vector_entry_point")`` returns an
:class:`AutoScaleVectorEnv`: N simulated phones stepped with array operations, each equal to a
single ``gym.make("AutoScale-v0")`` env (with its ``TimeLimit``) seeded with ``seed + i``.
"""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium.utils import seeding
from gymnasium.vector import AutoresetMode, VectorEnv
from gymnasium.vector.utils import batch_space
from numba import njit

from autoscale_env.backends.sim import SimBackend, SimState, run_split, simulate_request
from autoscale_env.env import RAW_HIGH, RAW_LOW, AutoScaleEnv
from autoscale_env.world.compiled import batch_loop
from autoscale_env.world.errors import InvalidActionError
from autoscale_env.world.observation import encode_request
from autoscale_env.world.reward import request_reward
from autoscale_env.world.rules import Scorer, score_request
from autoscale_env.world.types import MAX_EPISODE_STEPS

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
    observations are the single env's compiled per-request functions, run by one loop per
    sub-env (sub-envs split across threads). Blocks of ``block_size`` requests (one default
    episode; ``backend_options={"block_size": n}``) are prepared per sub-env, stored request-step
    first (``(block_size, num_envs, ...)``: sub-envs that step together read one contiguous row);
    a step is then one compiled call that gathers one entry per sub-env.

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
        threads: threads computing blocks (default: numba's thread count,
            ``NUMBA_NUM_THREADS``); performance only, results do not depend on it.
    """

    metadata = {"render_modes": [], "autoreset_mode": AutoresetMode.NEXT_STEP}

    def __init__(self, num_envs: int = 1, max_episode_steps: int | None = MAX_EPISODE_STEPS,
                 device: str | None = None, scenario: str | None = None,
                 setting: str | None = None, backend: str = "sim", trace: str | None = None,
                 reward: str = "energy", obs_mode: str = "paper", features: str | None = None,
                 backend_options: dict[str, Any] | None = None, render_mode: str | None = None,
                 threads: int | None = None):
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
        self.threads = None if threads is None else max(1, int(threads))
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
        # The template's rules with the sim's accuracy table.
        self.scorer = Scorer(env.reward_preset, env.scenario, sim.workloads,
                             sim.reference_energy_mj, accuracy=sim.accuracy_table)
        self._workload_raw = np.array([[w.conv, w.fc, w.rc] for w in sim.workloads], dtype=float)

        # Per sub-env: generator, episode state, current block, position in it, episode length.
        # Blocks are stored position first, (B, N, ...): sub-envs at the same position (all of
        # them, unless some were reset on their own) read one contiguous row per step; the
        # sub-env-first layout costs a cache miss per sub-env and array at every step.
        self._rngs: list[np.random.Generator | None] = [None] * N
        self._state = SimState(N)
        self._network = np.zeros((B, N), dtype=np.int64)
        #: co_cpu_pct, co_mem_pct, rssi_wifi_dbm, rssi_p2p_dbm of each sub-env's block
        self._context = np.zeros((4, B, N))
        self._latency, self._energy, self._reward = np.zeros((3, B, N, T))
        self._oracle = np.zeros((B, N), dtype=np.int64)
        self._obs = np.zeros((B, N, F), dtype=np.int64)
        self._raw = np.zeros((B, N, len(RAW_LOW)), dtype=np.float32) if obs_mode != "paper" else None
        self._max_steps = -1 if self.max_episode_steps is None else self.max_episode_steps
        self._pos = np.zeros(N, dtype=np.int64)
        self._steps = np.zeros(N, dtype=np.int64)
        self._autoreset = np.zeros(N, dtype=bool)
        self._all = np.ones(N, dtype=bool)
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
        obs, oracle = self._pending()
        infos = self._context_infos(self._context[:, self._pos, np.arange(N)])
        infos["oracle_action"] = oracle
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
        N = self.num_envs
        resetting = self._autoreset
        if resetting.any():
            stepped = ~resetting
            self._start_episodes(np.flatnonzero(resetting))
        else:
            stepped = self._all
        out = np.empty((4, N))  # reward, latency, energy, accuracy
        rewards, latency, energy, accuracy = out[0], out[1], out[2], out[3]
        flags = np.empty((4, N), dtype=bool)  # qos_met, accuracy_met, truncated, terminated
        qos, acc_met, truncations, terminations = flags[0], flags[1], flags[2], flags[3]
        context = np.empty((4, N))
        obs = np.empty((N, self._obs.shape[-1]), dtype=np.int64)
        oracle = np.empty(N, dtype=np.int64)
        exhausted = _step_loop(
            self.scorer.tables, self.sim.accuracy_table, a, stepped, self._pos, self._steps,
            self._max_steps, self._network, self._context, self._latency, self._energy,
            self._reward, self._oracle, self._obs, rewards, latency, energy, accuracy, qos,
            acc_met, truncations, terminations, context, obs, oracle)
        if exhausted:  # new blocks for the sub-envs that used theirs up, then their pending rows
            envs = np.flatnonzero(self._pos == self._B)
            self._generate(envs)
            self._pos[envs] = 0
            _pending(self._pos, self._obs, self._oracle, obs, oracle)
        self._autoreset = truncations  # terminations never happen (requests keep coming)
        infos = self._context_infos(context)
        for key, value in zip(STEP_KEYS, (latency, energy, accuracy, qos, acc_met)):
            infos[key] = value
            infos[f"_{key}"] = stepped  # masks are shared between keys, never modified
        infos["oracle_action"] = oracle
        infos["_oracle_action"] = self._all
        if self._raw is not None:
            obs = {"state": obs, "raw": self._raw[self._pos, np.arange(N)]}
        return obs, rewards, terminations, truncations, infos

    def close_extras(self, **kwargs: Any) -> None:
        """Close the template env (the sim itself holds no processes or sockets)."""
        self._env.close()

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
        # a new array: the old one was returned as a step's truncations
        self._autoreset = self._autoreset.copy()
        self._autoreset[envs] = False

    def _generate(self, envs: np.ndarray) -> None:
        """Compute the next block of every sub-env in ``envs``: requests, outcomes, rewards,
        oracle actions and observations, sub-envs split across threads."""
        sim = self.sim
        envs = np.ascontiguousarray(envs, dtype=np.int64)
        run_split(_block_loop, (sim.processes, sim.model.tables, self.scorer.tables,
                                self.encoder.tables, *self._state.arrays()),
                  envs, envs, (self._network, *self._context, self._latency, self._energy,
                               self._reward, self._oracle, self._obs), self._B, self.threads)
        if self._raw is not None:
            raw = np.concatenate([self._workload_raw[self._network[:, envs]],
                                  np.moveaxis(self._context[:, :, envs], 0, -1)], axis=-1)
            self._raw[:, envs] = np.clip(raw, RAW_LOW, RAW_HIGH).astype(np.float32)

    def _pending(self):
        """Observations and oracle actions of every sub-env's pending request."""
        N = self.num_envs
        obs = np.empty((N, self._obs.shape[-1]), dtype=np.int64)
        oracle = np.empty(N, dtype=np.int64)
        _pending(self._pos, self._obs, self._oracle, obs, oracle)
        if self._raw is not None:
            obs = {"state": obs, "raw": self._raw[self._pos, np.arange(N)]}
        return obs, oracle

    def _context_infos(self, context: np.ndarray) -> dict[str, np.ndarray]:
        infos: dict[str, np.ndarray] = {}
        for key, values in zip(CONTEXT_KEYS, context):
            infos[key] = values
            infos[f"_{key}"] = self._all  # shared by the keys every sub-env has
        return infos


# ----------------------------------------------------------------------------------------------
# The compiled loops: the sim's requests, the rules' scores and the observation, per sub-env


@njit(cache=True, nogil=True)
def _block_loop(proc, world, scoring, enc, keys, position, app, mean_dbm, drop_left, worlds, cols,
                network, co_cpu_pct, co_mem_pct, rssi_wifi_dbm, rssi_p2p_dbm, latency_ms,
                energy_mj, reward, oracle, obs) -> None:
    """The next block of each sub-env ``worlds[k]`` (into column ``cols[k]`` of the (B, N, ...)
    outputs): per request, the sim's :func:`~autoscale_env.backends.sim.simulate_request`, the
    rules' :func:`~autoscale_env.world.rules.score_request` and the observation's
    :func:`~autoscale_env.world.observation.encode_request`."""
    T = latency_ms.shape[2]
    _block_rows(proc, world, scoring, enc, keys, position, app, mean_dbm, drop_left, worlds, cols,
                network, co_cpu_pct, co_mem_pct, rssi_wifi_dbm, rssi_p2p_dbm, latency_ms,
                energy_mj, reward, oracle, obs, np.empty(len(proc.noise_sigma)),
                np.empty(T, dtype=np.bool_), np.empty(T, dtype=np.bool_))


@batch_loop(nogil=True)
def _block_rows(proc, world, scoring, enc, keys, position, app, mean_dbm, drop_left, worlds, cols,
                network, co_cpu_pct, co_mem_pct, rssi_wifi_dbm, rssi_p2p_dbm, latency_ms,
                energy_mj, reward, oracle, obs, noise, qos_met, accuracy_met) -> None:
    """:func:`_block_loop`'s loop (``noise``, ``qos_met``, ``accuracy_met``: work space),
    compiled without reference counting (:mod:`autoscale_env.world.compiled`)."""
    n = network.shape[0]
    # request by request, each sub-env in turn: the writes of one request of consecutive
    # sub-envs are contiguous (sub-env by sub-env, each request's row would be a cache miss)
    for r in range(n):
        for k in range(len(worlds)):
            e, col = worlds[k], cols[k]
            net, cpu, mem, wifi, p2p = simulate_request(
                proc, world, keys[e], position[e] + r, app[e:e + 1], mean_dbm[e], drop_left[e],
                noise, latency_ms[r, col], energy_mj[r, col])
            network[r, col] = net
            co_cpu_pct[r, col], co_mem_pct[r, col] = cpu, mem
            rssi_wifi_dbm[r, col], rssi_p2p_dbm[r, col] = wifi, p2p
            oracle[r, col] = score_request(scoring, net, latency_ms[r, col], energy_mj[r, col],
                                           world.accuracy[net], reward[r, col], qos_met,
                                           accuracy_met)
            encode_request(enc, net, cpu, mem, wifi, p2p, obs[r, col])
    for k in range(len(worlds)):
        position[worlds[k]] += n


@batch_loop()
def _step_loop(scoring, accuracy_table, actions, stepped, pos, steps, max_steps, network, context,
               latency_ms, energy_mj, reward, oracle, obs, out_reward, out_latency, out_energy,
               out_accuracy, out_qos, out_accuracy_met, out_truncated, out_terminated,
               out_context, out_obs, out_oracle) -> int:
    """One step of every sub-env, in one pass: the executed request's reward, outcome and
    context (zeros and False for a sub-env that was reset instead; its context is then the new
    pending request's), the advance of its position and episode length, truncation
    (``max_steps`` < 0: never), and the pending request's observation and oracle action.
    Returns how many sub-envs used their block up: their position is then ``B`` and their
    pending rows are left for the caller to fill once their next block is made."""
    c, w_lat, w_acc = scoring.weights
    reference, accuracy_target = scoring.reference_energy_mj, scoring.accuracy_target
    B, F = network.shape[0], obs.shape[2]
    exhausted = 0
    for e in range(len(actions)):
        p = pos[e]
        for k in range(4):
            out_context[k, e] = context[k, p, e]
        out_terminated[e] = False
        if not stepped[e]:
            out_reward[e] = out_latency[e] = out_energy[e] = out_accuracy[e] = 0.0
            out_qos[e] = out_accuracy_met[e] = out_truncated[e] = False
        else:
            a, net = actions[e], network[p, e]
            out_reward[e] = reward[p, e, a]
            out_latency[e] = latency_ms[p, e, a]
            out_energy[e] = energy_mj[p, e, a]
            out_accuracy[e] = accuracy_table[net, a]
            _, out_qos[e], out_accuracy_met[e] = request_reward(
                out_latency[e], out_energy[e], out_accuracy[e], reference[net],
                accuracy_target[net], scoring.qos_ms, c, w_lat, w_acc)
            p += 1
            pos[e] = p
            steps[e] += 1
            out_truncated[e] = max_steps >= 0 and steps[e] >= max_steps
        if p == B:
            exhausted += 1
            continue
        for f in range(F):  # element by element: a row view costs a reference count
            out_obs[e, f] = obs[p, e, f]
        out_oracle[e] = oracle[p, e]
    return exhausted


@batch_loop()
def _pending(pos, obs, oracle, out_obs, out_oracle) -> None:
    for e in range(len(pos)):
        p = pos[e]
        for f in range(obs.shape[2]):  # element by element: a row view costs a reference count
            out_obs[e, f] = obs[p, e, f]
        out_oracle[e] = oracle[p, e]

"""The AutoScale-v0 environment."""

from __future__ import annotations

from typing import Any, NamedTuple

import gymnasium as gym
import numpy as np

from autoscale_env.world import config
from autoscale_env.backends import make_backend
from autoscale_env.world.types import Backend, RequestBlock, Target
from autoscale_env.world.actions import check_action, check_open, check_reset_options
from autoscale_env.world.errors import UnknownNameError
from autoscale_env.world.rules import Scorer
from autoscale_env.world.observation import StateEncoder

OBS_MODES = ("paper", "extended")
RAW_FIELDS = ("conv", "fc", "rc", "co_cpu_pct", "co_mem_pct", "rssi_wifi_dbm", "rssi_p2p_dbm")
RAW_LOW = np.array([0, 0, 0, 0, 0, -120, -120], dtype=np.float32)
RAW_HIGH = np.array([1000, 1000, 1000, 100, 100, 0, 0], dtype=np.float32)


class AutoScaleEnv(gym.Env):
    """Where should this DNN inference run? One step is one inference request of a phone app.

    ## Description

    A reimplementation of AutoScale (Kim & Wu, 2020). For every request the agent picks an execution
    target: the phone's CPU, GPU or DSP at FP32/FP16/INT8, a connected edge device (a Galaxy Tab S6
    over Wi-Fi Direct) or the cloud (over Wi-Fi). The request runs there and the agent is rewarded
    for low phone energy, provided the latency target (QoS) and the accuracy target hold. What is best
    depends on the network (conv-heavy or FC/recurrent-heavy, size), co-running apps loading CPU
    and memory, and the signal strength of both wireless links; these vary stochastically.

    The world lives behind a backend: ``sim`` (calibrated analytical model, default), ``replay``
    (recorded traces) or ``live`` (real inference on this host and on loopback servers).
    A backend may also define ``observe_action(block, index, action)``: the env then calls it after
    every step (the ``drift`` backend's thermal model, where running locally heats the phone).

    ## Action Space

    ``Discrete(n_targets)``: one action per target of the device, in the profile's order;
    ``env.unwrapped.targets[a]`` names it (``str(...)`` gives e.g. ``"local/gpu/fp16"``). Mi 8 Pro and
    Galaxy S10e have 9 targets; the Moto X Force has no DSP and 8. ``env.unwrapped.target_index(name)``
    maps a name back to its action.

    ## Observation Space

    ``obs_mode="paper"`` (default): ``MultiDiscrete(nvec)`` of the seven state features of the paper,
    binned as ``autoscale_env/data/features.toml`` says (defaults below; 4x2x2x4x4x2x2 = 1024 states):

    | index | feature     | raw value                                 | bins                      |
    |-------|-------------|-------------------------------------------|---------------------------|
    | 0     | `conv`      | CONV layers of the requested network      | 0: none, 1: 1-29, 2: 30-59, 3: >=60 |
    | 1     | `fc`        | fully connected layers                    | 0: <10, 1: >=10           |
    | 2     | `rc`        | recurrent layers                          | 0: none, 1: >=1           |
    | 3     | `co_cpu`    | co-running apps' CPU utilisation (%)      | 0: 0, 1: <25, 2: <75, 3: >=75 |
    | 4     | `co_mem`    | co-running apps' memory use (%)           | 0: 0, 1: <25, 2: <75, 3: >=75 |
    | 5     | `rssi_wifi` | Wi-Fi RSSI on the cloud path (dBm)        | 0: regular (> -80), 1: weak |
    | 6     | `rssi_p2p`  | Wi-Fi Direct RSSI to the edge device (dBm)| 0: regular (> -80), 1: weak |

    ``env.unwrapped.encoder.flat_index(obs)`` gives the row of a 1024-row Q-table.

    ``obs_mode="extended"``: ``Dict(state=<the MultiDiscrete above>, raw=Box(7,))`` where ``raw``
    holds the unbinned values in the order of the table (layer counts, %, dBm), for learners that can
    use continuous inputs.

    ## Rewards

    Energy first, with the constraints dominating ([reconstructed], ``data/rewards.toml``). With E the
    phone energy, E_ref the energy of ``local/cpu/fp32`` for the network without interference:
    ``r = -min(E/E_ref, C)`` when latency <= QoS and accuracy >= target, otherwise
    ``r = -(C + E/E_ref + w_lat * max(0, L/L_qos - 1) + w_acc * 100 * max(0, acc_target - acc))``.
    Default preset ``energy``: C = 10, w_lat = 1, w_acc = 1. Any request that meets both targets
    scores above any that misses one.

    ## Starting State

    ``reset`` starts a new episode of the backend: the static setting draws the co-running apps and
    both signal strengths and holds them for the episode; the dynamic setting starts its processes
    (apps switching, signal drifting and dropping). The first request is returned.

    ## Episode End

    Never terminates (requests keep coming). Truncation comes from ``max_episode_steps`` (100 by
    default) through Gymnasium's ``TimeLimit``.

    ## Information

    ``step`` returns, for the request that was **just executed**: ``latency_ms``, ``energy_mj``,
    ``accuracy`` (fraction), ``qos_met``, ``accuracy_met`` (bool), ``target`` (name), ``network``,
    ``co_cpu_pct``, ``co_mem_pct``, ``rssi_wifi_dbm``, ``rssi_p2p_dbm`` (its raw context),
    ``energy_source`` (``model``, ``rapl``, ``nvml`` or ``measured``), ``error`` (empty unless the
    request failed). ``oracle_action`` is the best target for the request **in the returned
    observation** (the action with the highest reward given every target's outcome under that
    request's actual conditions), or -1 when the backend cannot know it (live, partial traces).
    ``reset`` returns the pending request's ``network``, context keys and ``oracle_action``.

    ## Arguments

    | argument   | type        | default           | description |
    |------------|-------------|-------------------|-------------|
    | `device`   | str         | `"mi8pro"`        | `mi8pro`, `galaxy_s10e`, `moto_x_force`, or a path to a profile; `host` for live |
    | `scenario` | str         | `"non_streaming"` | `non_streaming` (50 ms), `streaming` (33.3 ms), `translation` (100 ms) |
    | `setting`  | str         | `"dynamic"`       | `static` or `dynamic` |
    | `backend`  | str/Backend | `"sim"`           | `sim`, `replay`, `live`, a `core.Backend` instance, or a class/factory called with `backend_options` |
    | `trace`    | str         | `None`            | replay: a trace path or bundled trace name |
    | `reward`   | str         | `"energy"`        | reward preset of `data/rewards.toml` |
    | `obs_mode` | str         | `"paper"`         | `paper` or `extended` |
    | `features` | str         | `None`            | state bins: `paper` (default), `per_network`, or a path to a `features.toml` |
    | `backend_options` | dict | `None`            | extra keyword arguments for the backend |
    | `render_mode` | str      | `None`            | `"ansi"`: `render()` returns a line on the last request |

    ## Batches of requests (for compiled agents)

    On a backend that knows every target's outcome in advance and does not observe actions (sim,
    full replay traces), the pending request and the rest of the current block are available as
    arrays: :meth:`pending_block` returns them (read-only), and :meth:`advance` executes ``k``
    actions at once with exactly the effects of ``k`` calls of ``step`` on the unwrapped env
    (``tests/test_env_blocks.py`` proves it bit for bit). A compiled agent can then decide and
    learn a whole episode in one call (``agents.base.OnlineAgent.learn``,
    ``agents.experiments.evaluation.evaluate``). ``step`` stays the reference. Truncation is the
    ``TimeLimit`` wrapper's business: a caller that bypasses ``step`` advances the wrapper's count.

    A backend may compute the first blocks of several coming episodes in one call (the sim
    backend does: ``autoscale_env.backends.sim.FirstBlocks``, the same trajectory as one episode
    at a time) and say so through its optional ``block_batch(block)`` hook; the env then scores
    and encodes such a batch once, since a whole episode fits in one block by default and
    per-episode overheads would otherwise outweigh a compiled agent's steps.

    ## References

    Y. G. Kim and C.-J. Wu, "AutoScale: Energy Efficiency Optimization for Stochastic Edge Inference
    Using Reinforcement Learning", MICRO 2020 (arXiv 2005.02544).

    ## Version History

    * v0: initial release.
    """

    # "ansi": one text line per request; 30 fps is the streaming scenario's frame rate
    metadata = {"render_modes": ["ansi"], "render_fps": 30}

    def __init__(self, device: str | None = None, scenario: str | None = None,
                 setting: str | None = None, backend: str | Backend = "sim",
                 trace: str | None = None, reward: str = "energy", obs_mode: str = "paper",
                 features: str | None = None, backend_options: dict[str, Any] | None = None,
                 render_mode: str | None = None):
        if obs_mode not in OBS_MODES:
            raise UnknownNameError("obs_mode", obs_mode, OBS_MODES)
        if render_mode is not None and render_mode not in self.metadata["render_modes"]:
            raise UnknownNameError("render_mode", render_mode, self.metadata["render_modes"])
        self.render_mode = render_mode
        self._last_step: tuple[int, float, dict[str, Any]] | None = None
        if render_mode == "ansi":  # remember each step for render(); the plain step stays lean
            self.step = self._step_and_remember
        self.reward_preset = config.get_reward_preset(reward)
        options = dict(backend_options or {})
        if isinstance(backend, str):
            if backend == "replay":
                options.update(trace=trace, device=device, scenario=scenario, setting=setting)
            else:
                if trace is not None:
                    raise ValueError(f"trace={trace!r} is only used with backend='replay'")
                options.update(device=device or ("host" if backend == "live" else "mi8pro"), scenario=scenario or "non_streaming",
                               setting=setting or "dynamic")
            self.backend: Backend = make_backend(backend, **options)
        elif isinstance(backend, type) or (callable(backend) and not isinstance(backend, Backend)):
            self.backend = backend(**options)  # a factory: one backend per env (sync vector envs)
        else:
            self.backend = backend
        b = self.backend
        self.targets: tuple[Target, ...] = tuple(b.targets)
        self._target_names = [str(t) for t in self.targets]
        self.scenario = b.scenario
        self.workloads = tuple(b.workloads)
        self._network_names = [w.name for w in self.workloads]
        self.encoder = StateEncoder(config.load_features(features), self.workloads)
        self.obs_mode = obs_mode
        state_space = gym.spaces.MultiDiscrete(self.encoder.nvec)
        if obs_mode == "paper":
            self.observation_space = state_space
        else:
            self.observation_space = gym.spaces.Dict({
                "state": state_space,
                "raw": gym.spaces.Box(RAW_LOW, RAW_HIGH, dtype=np.float32),
            })
        self.action_space = gym.spaces.Discrete(len(self.targets))
        self._n_actions = len(self.targets)
        #: reward, constraint flags and oracle (the one implementation, :mod:`autoscale_env.world.rules`)
        self.scorer = Scorer(self.reward_preset, self.scenario, self.workloads,
                             b.reference_energy_mj)
        self._workload_raw = np.array([[w.conv, w.fc, w.rc] for w in self.workloads], dtype=float)
        self._block: RequestBlock | None = None
        self._obs: list | None = None
        self._i = 0
        # Optional backend hook: ``observe_action(block, index, action)`` is called after each step
        # with the request just executed, for worlds where an action affects later requests (the
        # drift backend's thermal model). Backends without it cost one ``is None`` test per step.
        self._observe_action = getattr(b, "observe_action", None)
        # Optional backend hook: ``block_batch(block)`` says when a block is one row of a batch
        # computed together (see "Batches of requests"); the batch is scored and encoded once.
        self._block_batch = getattr(b, "block_batch", None)
        self._batch: tuple | None = None  # (batch, observations, scores) of the last batch seen

    # -----------------------------------------------------------------------------------------
    # Gymnasium API

    #: Keys ``reset(options=...)`` understands (none yet); any other key is refused.
    RESET_OPTIONS: tuple[str, ...] = ()

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None):
        """Start an episode; ``seed`` fixes the whole trajectory on deterministic backends.

        ``options`` keys outside :attr:`RESET_OPTIONS` raise ``ValueError`` (a typo must not be
        ignored); a closed env raises ``gymnasium.error.ClosedEnvironmentError``.
        """
        check_reset_options(options, self.RESET_OPTIONS)
        check_open(getattr(self, "_closed", False), "reset()")
        super().reset(seed=seed)
        self.backend.reset(self.np_random)
        self._load_block()
        return self._observation(0), {
            "network": self._net[0], "co_cpu_pct": self._cpu[0], "co_mem_pct": self._mem[0],
            "rssi_wifi_dbm": self._wifi[0], "rssi_p2p_dbm": self._p2p[0],
            "oracle_action": self._oracle[0]}

    def step(self, action):
        """Run the pending request on ``targets[action]``; see the class docstring for ``info``."""
        # The hot path: everything per request was prepared by _load_block; only Python list
        # look-ups remain here (scripts/bench.py measures it against CartPole).
        a = check_action(action, self._n_actions, self._target_names)  # shared with the fleet
        i = self._i
        if self._obs is None:  # block arrays not yet turned into lists (or no block at all)
            if self._block is None:
                check_open(getattr(self, "_closed", False), "step()")
                raise gym.error.ResetNeeded("call reset() before step()")
            self._materialize()
        if self._known:
            k = i * self._n_actions + a
            latency = self._lat[k]
            energy = self._energy[k]
            accuracy = self._acc[k]
            r = self._reward[k]
            qos = self._qos[k]
            acc_met = self._accmet[k]
            source = self._source
            if latency == latency:
                error = ""
            else:  # unknown outcome of a partial trace: scored as a violation
                error = "outcome not recorded for this target"
                if r != r:
                    r = -self.reward_preset.violation_penalty
        else:
            latency, energy, accuracy, r, qos, acc_met, source, error = self._execute(i, a)
        if self._observe_action is not None:
            self._observe_action(self._block, i, a)
        network, cpu, mem = self._net[i], self._cpu[i], self._mem[i]
        wifi, p2p = self._wifi[i], self._p2p[i]
        i += 1
        if i == self._n:
            self._load_block()
            self._materialize()
            i = 0
        else:
            self._i = i
        return self._obs[i], r, False, False, {
            "latency_ms": latency, "energy_mj": energy, "accuracy": accuracy, "qos_met": qos,
            "accuracy_met": acc_met, "target": self._target_names[a], "network": network,
            "co_cpu_pct": cpu, "co_mem_pct": mem, "rssi_wifi_dbm": wifi, "rssi_p2p_dbm": p2p,
            "energy_source": source, "error": error, "oracle_action": self._oracle[i],
        }

    def _step_and_remember(self, action):
        oracle = self._oracle[self._i] if self._block is not None else -1
        result = type(self).step(self, action)
        self._last_step = (oracle, result[1], result[4])
        return result

    def render(self) -> str | None:
        """``render_mode="ansi"``: one line on the last executed request (None otherwise).

        Example: ``mnv2 -> local/dsp/int8: 9.8 ms (QoS 50 ms ok), 31.2 mJ, acc ok,
        oracle local/dsp/int8 (match), reward -0.11``.
        """
        if self.render_mode != "ansi":
            return None
        if self._last_step is None:
            return "no request executed yet"
        oracle, reward_value, info = self._last_step
        qos = "ok" if info["qos_met"] else "MISSED"
        oracle_name = self._target_names[oracle] if oracle >= 0 else "unknown"
        match = "" if oracle < 0 else (" (match)" if oracle_name == info["target"] else " (differs)")
        error = f", error: {info['error']}" if info["error"] else ""
        return (f"{info['network']} -> {info['target']}: {info['latency_ms']:.1f} ms "
                f"(QoS {self.scenario.qos_ms:g} ms {qos}), {info['energy_mj']:.1f} mJ, "
                f"acc {'ok' if info['accuracy_met'] else 'MISSED'}, oracle {oracle_name}{match}, "
                f"reward {reward_value:.3f}{error}")

    def close(self) -> None:
        """Release the backend's processes and sockets; later ``step``/``reset`` calls raise."""
        self.backend.close()
        self._closed = True
        self._block = None  # step() checks it anyway, so a closed env costs the hot path nothing
        self._obs = None
        self._batch = None

    # -----------------------------------------------------------------------------------------
    # Structure exposed to agents and tools

    def target_index(self, name: str) -> int:
        """Action of the target called ``name`` (e.g. ``"local/cpu/fp32"``)."""
        try:
            return self._target_names.index(str(name))
        except ValueError:
            raise UnknownNameError("target", name, self._target_names) from None

    def oracle_action(self) -> int:
        """Best action for the pending request (-1 when the backend cannot know it)."""
        self._require_reset("oracle_action()")
        return self._oracle[self._i]

    def counterfactuals(self) -> dict[str, np.ndarray] | None:
        """Every target's outcome for the pending request (None when unknown until executed)."""
        self._require_reset("counterfactuals()")
        if not self._known:
            return None
        i = self._i
        latency, energy, accuracy, reward = (np.array(f[i], dtype=np.float64)
                                             for f in (self._a_lat, self._a_energy, self._a_acc,
                                                       self._a_reward))
        return {"latency_ms": latency, "energy_mj": energy, "accuracy": accuracy, "reward": reward}

    @property
    def context(self) -> dict[str, Any]:
        """Raw values of the pending request."""
        self._require_reset("context")
        i = self._i
        return {"network": self._net[i], "co_cpu_pct": self._cpu[i], "co_mem_pct": self._mem[i],
                "rssi_wifi_dbm": self._wifi[i], "rssi_p2p_dbm": self._p2p[i]}

    def _require_reset(self, what: str) -> None:
        if self._block is None:
            raise gym.error.ResetNeeded(f"call reset() before {what}")

    # -----------------------------------------------------------------------------------------
    # Batches of requests (class docstring): the pending block as arrays, k steps at once

    def pending_block(self) -> BlockArrays | None:
        """The pending request and the rest of the current block, as read-only arrays.

        Row 0 is the pending request (the one the last returned observation shows). None when the
        requests cannot be executed in a batch: outcomes unknown until executed (live, partial
        traces), a backend that observes actions (``observe_action``), or ``render_mode`` set
        (rendering remembers each step). See :class:`BlockArrays` for the fields.
        """
        self._require_reset("pending_block()")
        if not self._batchable():
            return None
        v = self._view
        if v is None:
            obs = self._a_obs
            v = self._view = _read_only(BlockArrays(
                state=np.asarray(self.encoder.flat_index(obs), dtype=np.int64).reshape(-1),
                observation=obs, reward=self._a_reward, latency_ms=self._a_lat,
                energy_mj=self._a_energy, accuracy=self._a_acc, qos_met=self._a_qos,
                accuracy_met=self._a_accmet, oracle_action=self._a_oracle,
                network=self._a_net, co_cpu_pct=self._block.co_cpu_pct,
                co_mem_pct=self._block.co_mem_pct, rssi_wifi_dbm=self._block.rssi_wifi_dbm,
                rssi_p2p_dbm=self._block.rssi_p2p_dbm))
        i = self._i
        return v if i == 0 else BlockArrays(*(a[i:] for a in v))

    def advance(self, actions) -> ExecutedArrays:
        """Execute ``actions`` (1-D ints, at most ``len(pending_block().state)``) on the pending
        requests, with exactly the effects of one ``step`` per action on the unwrapped env: the
        next block is loaded when this one ends, and the env's generator is touched only as
        ``step`` would touch it. Returns what the ``step`` calls would have returned, per step
        (:class:`ExecutedArrays`); the new pending observation is :meth:`observation`.

        Raises ``ValueError`` when :meth:`pending_block` is None (use ``step``), for an action out
        of range, or for more actions than the block has requests.
        """
        self._require_reset("advance()")
        if not self._batchable():
            raise ValueError("advance() needs a block of known outcomes and no observe_action "
                             "backend hook (pending_block() is None here): use step()")
        a = np.asarray(actions)
        if a.ndim != 1 or a.dtype.kind not in "iu":
            raise ValueError(f"advance() takes a 1-D integer array of actions, got {a.dtype} "
                             f"{a.shape}")
        a = a.astype(np.int64)
        i, k = self._i, len(a)
        if k > self._n - i:
            raise ValueError(f"advance(): {k} actions, but only {self._n - i} requests remain "
                             "in the block")
        if k and (a.min() < 0 or a.max() >= self._n_actions):
            raise ValueError(f"advance(): actions must lie in [0, {self._n_actions})")
        rows = np.arange(i, i + k)
        b = self._block
        next_oracle = self._a_oracle[i + 1:i + k + 1]
        ex = ExecutedArrays(
            action=a, reward=self._a_reward[rows, a], latency_ms=self._a_lat[rows, a],
            energy_mj=self._a_energy[rows, a], accuracy=self._a_acc[rows, a],
            qos_met=self._a_qos[rows, a], accuracy_met=self._a_accmet[rows, a],
            network=self._a_net[i:i + k], co_cpu_pct=b.co_cpu_pct[i:i + k],
            co_mem_pct=b.co_mem_pct[i:i + k], rssi_wifi_dbm=b.rssi_wifi_dbm[i:i + k],
            rssi_p2p_dbm=b.rssi_p2p_dbm[i:i + k], oracle_action=next_oracle)
        if i + k == self._n:  # as step: the block ends, the next one is loaded
            self._load_block()
            ex = ex._replace(oracle_action=np.append(next_oracle, self._a_oracle[0]))
        else:
            self._i = i + k
        return ex

    def observation(self) -> Any:
        """The pending request's observation (what the last ``step``/``reset`` returned, or what
        ``step`` would have returned after :meth:`advance`)."""
        self._require_reset("observation()")
        return self._observation(self._i)

    def _observation(self, i: int) -> Any:
        if self._obs is not None:
            return self._obs[i]
        if self.obs_mode == "paper":
            return self._a_obs[i]
        return {"state": self._a_obs[i], "raw": self._a_raw[i]}

    def _batchable(self) -> bool:
        if self._nan_outcomes is None:
            self._nan_outcomes = (not self._known) or bool(np.isnan(self._a_lat).any())
        return (not self._nan_outcomes and self._observe_action is None
                and self.render_mode is None)

    # -----------------------------------------------------------------------------------------
    # Block handling: everything per request that does not depend on the action is done here, by
    # the compiled rules, as arrays; step() turns them into flat Python lists on first use
    # (:meth:`_materialize`), request-major: the entry of action a for request i is at
    # i * n_targets + a. The batch API reads the arrays and never pays for the lists.

    def _load_block(self) -> None:
        b = self.backend.next_block()
        if len(b) == 0:
            raise RuntimeError(f"{type(self.backend).__name__}.next_block() returned no requests")
        batch = self._block_batch(b) if self._block_batch is not None else None
        if batch is not None and batch[0].latency_ms is not None:
            whole, j = batch
            if self._batch is None or self._batch[0] is not whole:
                self._batch = (whole, self.encoder.encode_block(whole), self.scorer.score_all(
                    whole.network, whole.latency_ms, whole.energy_mj, whole.accuracy))
            self._install(b, self._batch[1][j], tuple(x[j] for x in self._batch[2]))
            return
        obs = self.encoder.encode_block(b)
        if b.latency_ms is not None:
            scores = self.scorer.score_all(b.network, b.latency_ms, b.energy_mj, b.accuracy)
        else:
            scores = None
        self._install(b, obs, scores)

    def _install(self, b: RequestBlock, obs: np.ndarray, scores: tuple | None) -> None:
        n = len(b)
        self._block, self._n, self._i = b, n, 0
        net = b.network
        self._a_net = net
        self._a_obs = obs
        if self.obs_mode != "paper":
            raw = np.column_stack([self._workload_raw[net], b.co_cpu_pct, b.co_mem_pct,
                                   b.rssi_wifi_dbm, b.rssi_p2p_dbm]).astype(np.float32)
            self._a_raw = np.clip(raw, RAW_LOW, RAW_HIGH)
        names = self._network_names
        self._net = [names[k] for k in net.tolist()]
        self._cpu = b.co_cpu_pct.tolist()
        self._mem = b.co_mem_pct.tolist()
        self._wifi = b.rssi_wifi_dbm.tolist()
        self._p2p = b.rssi_p2p_dbm.tolist()
        self._source = b.energy_source
        self._known = b.latency_ms is not None
        self._obs = None  # the lists, made by _materialize on the first step
        self._view = None
        self._nan_outcomes = None
        if self._known:
            r, qos, acc, oracle = scores
            T = self._n_actions
            self._a_lat, self._a_energy, self._a_acc = (
                np.asarray(m, dtype=np.float64).reshape(n, T)
                for m in (b.latency_ms, b.energy_mj, b.accuracy))
            self._a_reward, self._a_qos, self._a_accmet = r, qos, acc
            self._a_oracle = oracle
            self._oracle = oracle.tolist()
        else:
            self._a_oracle = np.full(n, -1, dtype=np.int64)
            self._oracle = [-1] * n

    def _materialize(self) -> None:
        """The block's observations and outcomes as the Python lists ``step`` indexes."""
        if self.obs_mode == "paper":
            self._obs = list(self._a_obs)  # one view per request: a distinct array object per step
        else:
            self._obs = [{"state": o, "raw": r} for o, r in zip(self._a_obs, self._a_raw)]
        if self._known:
            self._lat, self._energy, self._acc, self._reward, self._qos, self._accmet = (
                m.reshape(-1).tolist() for m in (self._a_lat, self._a_energy, self._a_acc,
                                                  self._a_reward, self._a_qos, self._a_accmet))

    def _execute(self, i: int, a: int):
        outcome = self.backend.execute(self._block, i, a)
        net = self._block.network[i:i + 1]
        r, qos, acc = self.scorer.score(
            net, np.array([[outcome.latency_ms]], dtype=float),
            np.array([[outcome.energy_mj]], dtype=float), np.array([[outcome.accuracy]], dtype=float))
        r, qos = float(r[0, 0]), bool(qos[0, 0]) and not outcome.error
        if outcome.error:
            r = -self.reward_preset.violation_penalty - outcome.energy_mj / float(
                self.scorer.reference_energy_mj[net[0]])
        return (float(outcome.latency_ms), float(outcome.energy_mj), float(outcome.accuracy),
                r, qos, bool(acc[0, 0]), outcome.energy_source, outcome.error)


class BlockArrays(NamedTuple):
    """The pending request (row 0) and the rest of the block (:meth:`AutoScaleEnv.pending_block`).

    Per request: ``state`` (flat index of its paper state, :meth:`StateEncoder.flat_index`),
    ``observation`` (its state features), ``oracle_action``, ``network`` (index into
    ``env.workloads``) and its raw context; per (request, target): ``reward``, ``latency_ms``,
    ``energy_mj``, ``accuracy``, ``qos_met``, ``accuracy_met``. Read-only.
    """

    state: np.ndarray
    observation: np.ndarray
    reward: np.ndarray
    latency_ms: np.ndarray
    energy_mj: np.ndarray
    accuracy: np.ndarray
    qos_met: np.ndarray
    accuracy_met: np.ndarray
    oracle_action: np.ndarray
    network: np.ndarray
    co_cpu_pct: np.ndarray
    co_mem_pct: np.ndarray
    rssi_wifi_dbm: np.ndarray
    rssi_p2p_dbm: np.ndarray


class ExecutedArrays(NamedTuple):
    """What ``k`` calls of ``step`` returned, one entry per step (:meth:`AutoScaleEnv.advance`):
    the ``info`` fields of the executed requests as arrays (``network`` as an index into
    ``env.workloads``; ``oracle_action`` of the request each step's observation shows) and each
    step's ``reward``. ``terminated`` and ``truncated`` are always False on the unwrapped env."""

    action: np.ndarray
    reward: np.ndarray
    latency_ms: np.ndarray
    energy_mj: np.ndarray
    accuracy: np.ndarray
    qos_met: np.ndarray
    accuracy_met: np.ndarray
    network: np.ndarray
    co_cpu_pct: np.ndarray
    co_mem_pct: np.ndarray
    rssi_wifi_dbm: np.ndarray
    rssi_p2p_dbm: np.ndarray
    oracle_action: np.ndarray


def _read_only(view: BlockArrays) -> BlockArrays:
    out = []
    for a in view:
        a = a.view()
        a.flags.writeable = False
        out.append(a)
    return BlockArrays(*out)

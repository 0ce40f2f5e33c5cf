"""AutoScale's learner: tabular Q-learning over the paper's discrete state (SPEC sections 5-6)."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from typing import Any

import gymnasium as gym
import numpy as np
from numba import njit

import autoscale_env
from agents.base import OnlineAgent, checkpoint_path
from autoscale_env.backends.sim import choice, random_word, uniform
from autoscale_env.world.errors import ModelFileError
from autoscale_env.world.files import atomic_write, load_npz, parse_json

FORMAT = "autoscale-qtable/1"


@njit(cache=True)
def greedy_action(q: np.ndarray, s: int) -> int:
    """The action with the highest value in row ``s`` of ``q`` (ties: the lowest index)."""
    best = 0
    for a in range(1, q.shape[1]):
        if q[s, a] > q[s, best]:
            best = a
    return best


@njit(cache=True)
def q_update(q: np.ndarray, s: int, a: int, reward: float, s_next: int, terminated: bool,
             alpha: float, gamma: float) -> int:
    """One Q-learning update of ``q[s, a]`` (float32, in place): bootstraps from ``max q[s_next]``
    unless the episode really terminated. Returns the greedy action of ``s_next`` after the
    update (the learn loop's next decision, without another look at the table)."""
    target = reward
    if not terminated:
        target += gamma * np.float64(q[s_next, greedy_action(q, s_next)])
    q[s, a] = q[s, a] + np.float32(alpha * (target - np.float64(q[s, a])))
    return greedy_action(q, s_next)


# The exploration stream is counter-based (the sim world's SplitMix64 words,
# :mod:`autoscale_env.backends.sim`): the draws of decision ``t`` are a pure function of (seed, t),
# ``t`` being the agent's ``num_timesteps``. So the per-step path (``_act``) and the compiled
# loop (:func:`learn_steps`) draw the same numbers through the same functions, a checkpoint needs
# no generator state, and a resumed run is the uninterrupted one.

#: Draw slots of a decision: the explore-or-not uniform and the random action's uniform.
EXPLORE, RANDOM_ACTION = 0, 1


def exploration_key(seed: int) -> np.uint64:
    """The 64-bit stream key of an agent seeded ``seed`` (a hash of it, so nearby seeds' streams
    look unrelated)."""
    # np.uint64 again: a compiled function returns a Python int, which numba would type int64
    return np.uint64(random_word(np.uint64(int(seed) % 2 ** 64), 0, 63))


@njit(cache=True)
def epsilon_greedy(q: np.ndarray, s: int, key: np.uint64, t: int, epsilon: float) -> int:
    """Decision ``t`` in state ``s``: a uniformly random action with probability ``epsilon``
    (draws ``(key, t, 0)`` and ``(key, t, 1)``), else :func:`greedy_action`."""
    if uniform(key, t, EXPLORE) < epsilon:
        return choice(uniform(key, t, RANDOM_ACTION), q.shape[1])
    return greedy_action(q, s)


@njit(cache=True)
def decay_epsilon(epsilon: float, decay: float, floor: float) -> float:
    """Epsilon after one step: ``max(floor, epsilon * decay)`` (unchanged when ``decay`` is 1)."""
    if decay == 1.0:
        return epsilon
    return max(floor, epsilon * decay)


@njit(cache=True)
def learn_steps(q: np.ndarray, states: np.ndarray, rewards: np.ndarray, key: np.uint64, t0: int,
                epsilon: float, decay: float, floor: float, alpha: float, gamma: float,
                actions: np.ndarray) -> float:
    """``len(actions)`` steps of the online loop over a block of requests whose outcomes do not
    depend on the actions: decision ``t0 + j`` in ``states[j]`` (:func:`epsilon_greedy`), the
    update from ``rewards[j, a]`` towards ``states[j + 1]`` (:func:`q_update`; never
    terminated: the env only truncates), the epsilon decay. Writes the actions taken into
    ``actions`` and returns the epsilon after the last step. The same functions as
    ``QLearningAgent._act`` / ``_update``, so it is the per-step loop, compiled."""
    for j in range(len(actions)):
        s = states[j]
        a = epsilon_greedy(q, s, key, t0 + j, epsilon)
        actions[j] = a
        q_update(q, s, a, rewards[j, a], states[j + 1], False, alpha, gamma)
        epsilon = decay_epsilon(epsilon, decay, floor)
    return epsilon


@njit(cache=True)
def greedy_actions(q: np.ndarray, states: np.ndarray) -> np.ndarray:
    """:func:`greedy_action` of each state in ``states``."""
    out = np.empty(len(states), dtype=np.int64)
    for j in range(len(states)):
        out[j] = greedy_action(q, states[j])
    return out


@dataclass(frozen=True)
class QLearningConfig:
    """Hyperparameters [reconstructed] (SPEC section 6)."""

    alpha: float = 0.9
    """Learning rate: high, because consecutive requests barely depend on the action."""
    gamma: float = 0.1
    """Discount: low, for the same reason (the problem is close to a contextual bandit)."""
    epsilon: float = 0.1
    """Exploration probability of epsilon-greedy."""
    epsilon_decay: float = 1.0
    """Multiplied into epsilon after every step (1.0 = no decay)."""
    epsilon_min: float = 0.0
    """Floor of the decayed epsilon."""

    def __post_init__(self) -> None:
        for name, low, high in (("alpha", 0.0, 1.0), ("gamma", 0.0, 1.0), ("epsilon", 0.0, 1.0),
                                ("epsilon_decay", 0.0, 1.0), ("epsilon_min", 0.0, 1.0)):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) \
                    or not low <= value <= high:  # also refuses NaN
                raise ValueError(f"Q-learning hyperparameter {name} must be a number in "
                                 f"[{low}, {high}], got {value!r}")


class QLearningAgent(OnlineAgent):
    """Tabular Q-learning with an epsilon-greedy policy, the paper's learner.

    The table ``q`` has one row per state (``env.unwrapped.encoder.n_states``, 1024 with the default
    bins) and one column per target, float32, initialised to 0: since every reward is negative, an
    untried action looks best, which makes the start optimistic. Deciding is one table row and an
    argmax; learning is one update. Ties go to the lowest action index, so runs are deterministic.
    The online loop is :meth:`agents.base.OnlineAgent.learn`, shared with the bandits.

    Args:
        env: an AutoScale-v0 env (``paper`` observations).
        seed: seeds the exploration generator and the env's first reset.
        alpha, gamma, epsilon, epsilon_decay, epsilon_min: see :class:`QLearningConfig`.
    """

    name = "qlearning"
    config_class = QLearningConfig
    file_format = FORMAT
    checkpoints = True
    checkpoint_suffix = ".npz"
    exports_policy = True
    _arrays = ("q",)

    def __init__(self, env: gym.Env, seed: int = 0, **hyperparameters: float):
        super().__init__(env, seed, **hyperparameters)
        self.q = np.zeros((self.encoder.n_states, self.n_actions), dtype=np.float32)
        self.epsilon = self.config.epsilon
        self._explore_key = exploration_key(self.seed)

    def _check_observation_space(self, space: gym.Space) -> None:
        if not isinstance(space, gym.spaces.MultiDiscrete):
            raise ValueError("QLearningAgent needs obs_mode='paper' (a MultiDiscrete observation)")

    # -- the paper's loop (the online loop's hooks) ----------------------------------------------

    def _key(self, observation: Any) -> int:
        try:
            return self._index[observation.tobytes()]
        except (AttributeError, KeyError):  # a list, or another integer dtype
            return self.state_index(observation)

    def _act(self, s: int, explore: bool) -> int:
        # the decision's counter is num_timesteps: predict(deterministic=False) between learn()
        # calls repeats the next training decision's draw, and consumes nothing
        if explore:
            return epsilon_greedy(self.q, s, self._explore_key, self.num_timesteps, self.epsilon)
        return greedy_action(self.q, s)

    def _update(self, s: int, a: int, reward: float, info: dict[str, Any],
                next_observation: Any = None, terminated: bool = False) -> None:
        self.update(s, a, reward, self._index[next_observation.tobytes()], terminated)
        cfg = self.config
        self.epsilon = decay_epsilon(self.epsilon, cfg.epsilon_decay, cfg.epsilon_min)

    def _learn_block(self, states: np.ndarray, rewards: np.ndarray) -> np.ndarray:
        """The compiled loop (:func:`learn_steps`) over ``len(rewards)`` requests: ``states``
        has one more row (the state after the last step). Returns the actions taken."""
        cfg = self.config
        actions = np.empty(len(rewards), dtype=np.int64)
        self.epsilon = float(learn_steps(self.q, states, rewards, self._explore_key,
                                         self.num_timesteps, self.epsilon, cfg.epsilon_decay,
                                         cfg.epsilon_min, cfg.alpha, cfg.gamma, actions))
        return actions

    def predict_block(self, block: Any) -> np.ndarray:
        """Greedy actions for every request of ``env.unwrapped.pending_block()`` (``predict``'s
        deterministic decision, one compiled call for the block)."""
        return greedy_actions(self.q, block.state)

    def update(self, s: int, a: int, reward: float, s_next: int, terminated: bool = False) -> None:
        """One Q-learning update; bootstraps unless the episode really terminated."""
        q_update(self.q, s, a, float(reward), s_next, bool(terminated), self.config.alpha,
                 self.config.gamma)

    # -- checkpoints ----------------------------------------------------------------------------

    def checkpoint_state(self) -> dict[str, Any]:
        """Everything besides ``q`` needed to continue bit for bit (JSON-able): the exploration
        stream's position is ``num_timesteps`` itself."""
        return {"epsilon": self.epsilon, "num_timesteps": self.num_timesteps,
                "started": self._obs is not None}

    def restore_state(self, state: dict[str, Any]) -> None:
        """Inverse of :meth:`checkpoint_state` (the env's generator is restored by the caller)."""
        self.epsilon = float(state["epsilon"])
        self.num_timesteps = int(state["num_timesteps"])
        if state["started"]:
            # mark "between episodes": the next learn() step resets without a seed
            self._obs = np.zeros(len(self.encoder.nvec), dtype=np.int64)
            self._needs_reset = True

    def write_checkpoint(self, prefix: str | os.PathLike) -> None:
        """Atomically write ``q``, the learner's and the env's generator states to
        ``prefix.npz``; only on an episode boundary, where the env's whole state is its generator."""
        if not self.at_episode_boundary:
            raise RuntimeError("checkpoints are only taken on episode boundaries")
        state = self.checkpoint_state()
        state["env_rng"] = self.env.unwrapped.np_random.bit_generator.state
        state["package_version"] = autoscale_env.__version__
        atomic_write(checkpoint_path(prefix, self.checkpoint_suffix),
                     lambda f: np.savez(f, q=self.q, state=np.array(json.dumps(state))))

    def restore_checkpoint(self, prefix: str | os.PathLike) -> QLearningAgent:
        """Load a checkpoint written by :meth:`write_checkpoint` into this agent and its env."""
        path = checkpoint_path(prefix, self.checkpoint_suffix)
        data = load_npz(path, ModelFileError)  # sizes and shapes checked before any allocation
        if "q" not in data or "state" not in data:
            raise ModelFileError(f"{path}: unreadable checkpoint (needs arrays 'q' and 'state')")
        q = data["q"]
        state = json_metadata(data["state"], str(path), "state")
        if not isinstance(state, dict):
            raise ModelFileError(f"{path}: checkpoint 'state' must be a JSON object")
        if q.shape != self.q.shape:
            raise ModelFileError(f"{path}: q shape {q.shape} does not match {self.q.shape}")
        self.q[...] = q
        self.restore_state(state)
        rng = np.random.default_rng()
        rng.bit_generator.state = state["env_rng"]
        self.env.unwrapped.np_random = rng
        return self

    # -- persistence (no pickle) ----------------------------------------------------------------

    def _extra_metadata(self) -> dict[str, Any]:
        return {"epsilon": self.epsilon}

    def save(self, path: str | os.PathLike) -> None:
        """Write ``q`` and JSON metadata to an ``.npz`` atomically (temp file, then rename)."""
        meta = json.dumps(self.metadata())
        atomic_write(path, lambda f: np.savez(f, q=self.q, meta=np.array(meta)))

    @classmethod
    def load(cls, path: str | os.PathLike, env: gym.Env, **kwargs: Any) -> QLearningAgent:
        """Load a saved model for ``env``; refuses junk files and models made for another env."""
        path = str(path)
        q, meta = read_model_file(path)
        hyperparameters = meta.get("hyperparameters", {})
        if not isinstance(hyperparameters, dict):
            raise ModelFileError(f"{path}: metadata field 'hyperparameters' must be an object, "
                                 f"got {hyperparameters!r}")
        seed, epsilon = meta.get("seed", 0), meta.get("epsilon", None)
        steps = meta.get("num_timesteps", 0)
        for field, value, ok in (
            ("seed", seed, isinstance(seed, int) and not isinstance(seed, bool)),
            ("num_timesteps", steps, isinstance(steps, int) and not isinstance(steps, bool)
             and steps >= 0),
            ("epsilon", epsilon, epsilon is None or (isinstance(epsilon, (int, float))
                                                     and 0.0 <= epsilon <= 1.0)),
        ):
            if not ok:
                raise ModelFileError(f"{path}: metadata field {field!r} is invalid: {value!r}")
        try:
            agent = cls(env, seed=seed, **hyperparameters)
        except (TypeError, ValueError) as e:
            raise ModelFileError(f"{path}: metadata field 'hyperparameters' is invalid: {e}") \
                from None
        mine = agent.metadata()
        for key in ("targets", "nvec", "features"):
            if meta.get(key) != mine[key]:
                raise ModelFileError(
                    f"{path}: model was trained for {key}={meta.get(key)!r}, but this environment "
                    f"has {key}={mine[key]!r}")
        if q.shape != agent.q.shape:
            raise ModelFileError(f"{path}: q has shape {q.shape}, expected {agent.q.shape}")
        agent.q[...] = q
        agent.epsilon = agent.epsilon if epsilon is None else float(epsilon)
        agent.num_timesteps = steps
        return agent

    def export_json(self, path: str | os.PathLike) -> None:
        """Write the greedy policy as plain JSON a phone app can read.

        ``policy`` maps each state index (see ``features`` and ``nvec``: row-major over the
        feature bins) to a target name, or ``null`` for states never visited in training.
        """
        visited = np.any(self.q != 0, axis=1)
        best = self.q.argmax(axis=1)
        doc = {
            "format": "autoscale-policy/1",
            "features": self.metadata()["features"],
            "nvec": self.encoder.nvec.tolist(),
            "targets": self.target_names,
            "policy": {str(s): (self.target_names[int(best[s])] if visited[s] else None)
                       for s in range(len(best))},
        }
        atomic_write(path, json.dumps(doc, indent=1))


#: Deepest nesting accepted in a model's JSON metadata (the real one is 3 levels deep).
MAX_JSON_DEPTH = 32


def json_metadata(array: np.ndarray, path: str, name: str) -> Any:
    """Parse a 0-d string array as JSON, refusing deep nesting before the parser recurses."""
    if array.ndim != 0 or array.dtype.kind != "U":
        raise ModelFileError(f"{path}: '{name}' must be a JSON string, got {array.dtype} "
                             f"{array.shape}")
    return parse_json(str(array), ModelFileError, where=f"{path}: '{name}'",
                      max_depth=MAX_JSON_DEPTH)


def read_model_file(path: str) -> tuple[np.ndarray, dict[str, Any]]:
    """Read a saved Q-table and its metadata; any malformed file raises ``ModelFileError``."""
    data = load_npz(path, ModelFileError)  # sizes and shapes checked before any allocation
    if "q" not in data or "meta" not in data:
        raise ModelFileError(f"{path}: not an autoscale Q-table (needs arrays 'q' and 'meta')")
    q = data["q"]
    meta = json_metadata(data["meta"], path, "meta")
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise ModelFileError(f"{path}: metadata format is not {FORMAT!r}")
    if q.ndim != 2 or q.dtype.kind != "f" or not np.all(np.isfinite(q)):
        raise ModelFileError(f"{path}: 'q' must be a finite 2-D float array, got {q.dtype} {q.shape}")
    return q, meta

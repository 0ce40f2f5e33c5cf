"""AutoScale's learner: tabular Q-learning over the paper's discrete state (SPEC sections 5-6)."""

from __future__ import annotations

import json
import os
import random
from dataclasses import asdict, dataclass
from typing import Any

import gymnasium as gym
import numpy as np
from numba import njit
from tqdm.auto import tqdm

import autoscale_env
from autoscale_env.world.errors import ModelFileError
from autoscale_env.world.files import atomic_write, load_npz

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


class QLearningAgent:
    """Tabular Q-learning with an epsilon-greedy policy, the paper's learner.

    The table ``q`` has one row per state (``env.unwrapped.encoder.n_states``, 1024 with the default
    bins) and one column per target, float32, initialised to 0: since every reward is negative, an
    untried action looks best, which makes the start optimistic. Deciding is one table row and an
    argmax; learning is one update. Ties go to the lowest action index, so runs are deterministic.

    Args:
        env: an AutoScale-v0 env (``paper`` observations).
        seed: seeds the exploration generator and the env's first reset.
        alpha, gamma, epsilon, epsilon_decay, epsilon_min: see :class:`QLearningConfig`.
    """

    name = "qlearning"

    def __init__(self, env: gym.Env, seed: int = 0, **hyperparameters: float):
        unknown = set(hyperparameters) - set(QLearningConfig.__dataclass_fields__)
        if unknown:
            raise ValueError(f"unknown Q-learning hyperparameter(s) {sorted(unknown)}; valid: "
                             f"{', '.join(QLearningConfig.__dataclass_fields__)}")
        self.config = QLearningConfig(**hyperparameters)
        self.env = env
        self.seed = int(seed)
        u = env.unwrapped
        if not isinstance(env.observation_space, gym.spaces.MultiDiscrete):
            raise ValueError("QLearningAgent needs obs_mode='paper' (a MultiDiscrete observation)")
        self.encoder = u.encoder
        self.target_names = [str(t) for t in u.targets]
        self.q = np.zeros((self.encoder.n_states, len(self.target_names)), dtype=np.float32)
        self.epsilon = self.config.epsilon
        self.num_timesteps = 0
        self._rng = random.Random(self.seed)
        self._obs: np.ndarray | None = None
        self._needs_reset = False
        # obs bytes -> state index: a dict lookup is cheaper than a dot product per decision
        self._index = {self.encoder.unflatten(s).tobytes(): s for s in range(self.encoder.n_states)}

    # -- the paper's loop -----------------------------------------------------------------------

    @property
    def nbytes(self) -> int:
        """Memory of the learned policy (the Q-table), bytes."""
        return int(self.q.nbytes)

    def state_index(self, observation: Any) -> int:
        """Row of the Q-table for an observation."""
        key = np.asarray(observation, dtype=np.int64).reshape(-1).tobytes()
        if key not in self._index:
            raise ValueError(f"observation {observation!r} is not in the observation space "
                             f"(bins per feature: {self.encoder.nvec.tolist()})")
        return self._index[key]

    def predict(self, observation, state=None, episode_start=None, deterministic: bool = True):
        """Greedy action (or epsilon-greedy when ``deterministic`` is False); SB3's signature."""
        try:
            s = self._index[observation.tobytes()]
        except (AttributeError, KeyError):  # a list, or another integer dtype
            s = self.state_index(observation)
        if not deterministic and self._rng.random() < self.epsilon:
            return self._rng.randrange(self.q.shape[1]), None
        return greedy_action(self.q, s), None

    def update(self, s: int, a: int, reward: float, s_next: int, terminated: bool = False) -> None:
        """One Q-learning update; bootstraps unless the episode really terminated."""
        q_update(self.q, s, a, float(reward), s_next, bool(terminated), self.config.alpha,
                 self.config.gamma)

    def learn(self, total_timesteps: int, callback=None, progress_bar: bool = False) -> QLearningAgent:
        """Run the env for ``total_timesteps`` requests, deciding and updating online.

        ``callback`` (optional) gets ``on_reset(info)`` after each reset and
        ``on_step(action, reward, info)`` after each step; ``on_step`` returning False stops early.
        """
        env, cfg = self.env, self.config
        index, rng, q = self._index, self._rng, self.q
        n_actions = q.shape[1]
        obs = self._obs
        bar = tqdm(total=total_timesteps, disable=not progress_bar, desc="qlearning", unit="step",
                   mininterval=0.5)
        alpha, gamma = float(cfg.alpha), float(cfg.gamma)
        # s and its greedy action carry over from one step to the next: q_update returns the
        # greedy action of the state it bootstrapped from, so a step touches the table once
        s = greedy = -1
        for _ in range(total_timesteps):
            # Reset lazily, at the start of the next step: between learn() calls the env then
            # rests on an episode boundary, where its whole state is its generator (checkpoints).
            if obs is None or self._needs_reset:
                obs, info = env.reset(seed=self.seed if obs is None and self.num_timesteps == 0 else None)
                self._needs_reset = False
                s = -1
                if callback is not None:
                    callback.on_reset(info)
            if s < 0:
                s = index[obs.tobytes()]
                greedy = greedy_action(q, s)
            if rng.random() < self.epsilon:
                a = rng.randrange(n_actions)
            else:
                a = greedy
            obs, reward, terminated, truncated, info = env.step(a)
            s_next = index[obs.tobytes()]
            greedy = q_update(q, s, a, reward, s_next, terminated, alpha, gamma)
            s = s_next
            self.num_timesteps += 1
            if cfg.epsilon_decay != 1.0:
                self.epsilon = max(cfg.epsilon_min, self.epsilon * cfg.epsilon_decay)
            self._needs_reset = terminated or truncated
            bar.update(1)
            if callback is not None and callback.on_step(a, reward, info) is False:
                break
        bar.close()
        self._obs = obs
        return self

    # -- checkpoints ----------------------------------------------------------------------------

    @property
    def at_episode_boundary(self) -> bool:
        """True between an episode's last step and the next reset (or before the first)."""
        return self._obs is None or self._needs_reset

    def checkpoint_state(self) -> dict[str, Any]:
        """Everything besides ``q`` needed to continue bit for bit (JSON-able)."""
        version, internal, gauss = self._rng.getstate()
        return {"rng": [version, list(internal), gauss], "epsilon": self.epsilon,
                "num_timesteps": self.num_timesteps, "started": self._obs is not None}

    def restore_state(self, state: dict[str, Any]) -> None:
        """Inverse of :meth:`checkpoint_state` (the env's generator is restored by the caller)."""
        version, internal, gauss = state["rng"]
        self._rng.setstate((version, tuple(internal), gauss))
        self.epsilon = float(state["epsilon"])
        self.num_timesteps = int(state["num_timesteps"])
        if state["started"]:
            # mark "between episodes": the next learn() step resets without a seed
            self._obs = np.zeros(len(self.encoder.nvec), dtype=np.int64)
            self._needs_reset = True

    # -- persistence (no pickle) ----------------------------------------------------------------

    def metadata(self) -> dict[str, Any]:
        """What a saved model records about itself and the env it was trained for."""
        u = self.env.unwrapped
        return {
            "format": FORMAT,
            "agent": self.name,
            "package_version": autoscale_env.__version__,
            "targets": self.target_names,
            "features": [{"name": f.name, "field": f.field, "edges": list(f.edges),
                          "descending": f.descending, "labels": list(f.labels)}
                         for f in self.encoder.features],
            "nvec": self.encoder.nvec.tolist(),
            "hyperparameters": asdict(self.config),
            "epsilon": self.epsilon,
            "num_timesteps": self.num_timesteps,
            "seed": self.seed,
            "env": {"device": getattr(getattr(u.backend, "phone", None), "name", None),
                    "scenario": u.scenario.name,
                    "setting": getattr(u.backend, "setting", None)},
        }

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
    text = str(array)
    depth = deepest = 0
    for ch in text:  # brackets inside strings only over-count, which errs on the safe side
        if ch in "[{":
            depth += 1
            deepest = max(deepest, depth)
        elif ch in "]}":
            depth -= 1
    if deepest > MAX_JSON_DEPTH:
        raise ModelFileError(f"{path}: '{name}' JSON is nested {deepest} levels deep, over the "
                             f"limit of {MAX_JSON_DEPTH}")
    try:
        return json.loads(text)
    except (ValueError, RecursionError) as e:
        raise ModelFileError(f"{path}: '{name}' is not valid JSON ({type(e).__name__}: {e})") \
            from None


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

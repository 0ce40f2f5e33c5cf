"""Contextual-bandit learners: the reviewer's first question about AutoScale's Q-learner.

In AutoScale-v0 an action does not change what comes next (the sim's world does not react), so the
problem is formally a contextual bandit. These agents treat it as one:

* ``tabular-bandit``: per-state running-mean epsilon-greedy, i.e. the paper's Q-learner with
  gamma = 0 and a 1/n step size instead of alpha = 0.9; comparing the two separates the effect of
  gamma (bootstrapping) from that of alpha (forgetting).
* ``linucb``: disjoint LinUCB (Li et al., WWW 2010, algorithm 1): per target a ridge regression of
  the reward on the context features, acting on mean + alpha * standard error.
* ``thompson``: linear Thompson sampling (Agrawal & Goyal, ICML 2013): per target a Gaussian
  posterior over the ridge weights, acting on a sample.

Features: ``onehot`` (the default) is the paper's discrete state as a one-hot vector of
``n_states`` entries. Every ``x x^T`` is then diagonal, so each target's design matrix is a
diagonal (a count per state) and the models reduce to per-state means and counts: O(1) per step.
``raw`` (the ``linucb-raw`` / ``thompson-raw`` agents, which make their env with
``obs_mode="extended"``) is a quadratic expansion of the seven raw context values (layer counts,
co-running load, both RSSIs): ``[1, z, z_i z_j]``, 36 features; the inverse design matrices are
kept up to date with rank-1 Sherman-Morrison updates, O(d^2) per step, no matrix inversion.

Exploration is a choice among targets for *one* context, so Thompson sampling draws, per target,
the scalar ``x . theta~`` from its exact marginal ``N(x . theta_hat, v^2 x^T A^-1 x)`` rather than
the whole weight vector: the same decision distribution, without a Cholesky factor per step.

All three share the agent interface of :mod:`agents.base` (``predict``/``learn``/``save``/``load``),
the harness's callback protocol (so the same TensorBoard tags) and an ``.npz`` + JSON file format
(no pickle). ``predict(deterministic=True)`` is greedy on the posterior mean.
"""

from __future__ import annotations

import json
import os
import zipfile
from dataclasses import dataclass
from typing import Any, ClassVar

import gymnasium as gym
import numpy as np

from agents.base import OnlineAgent
from autoscale_env.world.errors import ModelFileError
from autoscale_env.world.files import atomic_write

FORMAT = "autoscale-bandit/1"

#: How the seven raw context values (``env.RAW_FIELDS`` order: conv, fc, rc, co_cpu_pct,
#: co_mem_pct, rssi_wifi_dbm, rssi_p2p_dbm) are scaled to roughly [0, 1] before the quadratic
#: expansion: ``z = (raw - offset) / scale``. Layer counts of the catalogued networks stay below
#: 100 / 10 / 10; RSSI is measured from -90 dBm over a 50 dB span.
RAW_OFFSET = np.array([0.0, 0.0, 0.0, 0.0, 0.0, -90.0, -90.0])
RAW_SCALE = np.array([100.0, 10.0, 10.0, 100.0, 100.0, 50.0, 50.0])
FEATURE_SETS = ("onehot", "raw")


def raw_features(raw: np.ndarray) -> np.ndarray:
    """``[1, z, z_i z_j (i <= j)]`` of one raw context vector (36 values)."""
    z = (np.asarray(raw, dtype=np.float64) - RAW_OFFSET) / RAW_SCALE
    return np.concatenate(([1.0], z, np.outer(z, z)[_UPPER]))


_UPPER = np.triu_indices(len(RAW_SCALE))
N_RAW_FEATURES = 1 + len(RAW_SCALE) + len(_UPPER[0])


# ----------------------------------------------------------------------------------------------
# Hyperparameters


@dataclass(frozen=True)
class TabularBanditConfig:
    """Hyperparameters of ``tabular-bandit``."""

    epsilon: float = 0.1
    """Exploration probability (the paper's Q-learner's, so only gamma and alpha differ)."""

    def __post_init__(self) -> None:
        check_range(self, "epsilon", 0.0, 1.0)


@dataclass(frozen=True)
class LinearBanditConfig:
    """Hyperparameters of ``linucb`` / ``thompson`` (and their ``-raw`` variants)."""

    alpha: float = 1.0
    """LinUCB: width of the confidence bonus, in standard errors (Li et al. 2010 use ~0.1-1)."""
    v: float = 1.0
    """Thompson: scale of the posterior (1 = the ridge posterior with unit reward noise)."""
    ridge: float = 1.0
    """Ridge prior precision lambda: every design matrix starts as lambda * I."""
    features: str = "onehot"
    """``onehot`` (the paper's state) or ``raw`` (quadratic in the raw context; extended obs)."""

    def __post_init__(self) -> None:
        check_range(self, "alpha", 0.0, 1e6)
        check_range(self, "v", 0.0, 1e6)
        check_range(self, "ridge", 1e-9, 1e9)
        if self.features not in FEATURE_SETS:
            raise ValueError(f"features must be one of {', '.join(FEATURE_SETS)}, got "
                             f"{self.features!r}")


def check_range(cfg: Any, name: str, low: float, high: float) -> None:
    value = getattr(cfg, name)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not low <= value <= high:
        raise ValueError(f"{type(cfg).__name__.removesuffix('Config')} hyperparameter {name} must "
                         f"be a number in [{low}, {high}], got {value!r}")


# ----------------------------------------------------------------------------------------------
# Shared plumbing: the online loop, persistence


class BanditAgent(OnlineAgent):
    """The bandits' file format and loader; the online loop and the metadata writer are
    :class:`agents.base.OnlineAgent`'s, shared with the Q-learner.

    Subclasses set ``name``, ``config_class``, the arrays named in ``_arrays`` and implement
    ``_key`` (observation -> what ``_act``/``_update`` use), ``_act`` and ``_update``.
    """

    name: ClassVar[str] = "bandit"
    file_format: ClassVar[str] = FORMAT

    def _restore_extra(self, meta: dict[str, Any], path: str) -> None:
        pass

    def _resize_for(self, arrays: dict[str, np.ndarray], path: str) -> None:
        """Before loading: give arrays whose size depends on training the file's sizes."""

    def save(self, path: str | os.PathLike) -> None:
        """Write the model's arrays and JSON metadata to an ``.npz`` atomically."""
        write_npz(path, self.metadata(), {a: getattr(self, a) for a in self._arrays})

    @classmethod
    def load(cls, path: str | os.PathLike, env: gym.Env, **kwargs: Any):
        """Load a saved model for ``env``; refuses junk files and models made for another env."""
        path = str(path)
        arrays, meta = read_npz(path)
        if meta.get("agent") != cls.name:
            raise ModelFileError(f"{path}: holds a {meta.get('agent')!r} model, not {cls.name!r}")
        hyperparameters, seed, steps = (meta.get("hyperparameters"), meta.get("seed"),
                                        meta.get("num_timesteps"))
        if not isinstance(hyperparameters, dict):
            raise ModelFileError(f"{path}: metadata field 'hyperparameters' must be an object")
        for field, value in (("seed", seed), ("num_timesteps", steps)):
            if not isinstance(value, int) or isinstance(value, bool) or value < 0:
                raise ModelFileError(f"{path}: metadata field {field!r} is invalid: {value!r}")
        try:
            agent = cls(env, seed=seed, **hyperparameters)
        except (TypeError, ValueError) as e:
            raise ModelFileError(f"{path}: metadata field 'hyperparameters' is invalid: {e}") \
                from None
        agent._resize_for(arrays, path)
        mine = agent.metadata()
        for key in ("targets", "nvec", "features"):
            if meta.get(key) != mine[key]:
                raise ModelFileError(f"{path}: model was trained for {key}={meta.get(key)!r}, "
                                     f"but this environment has {key}={mine[key]!r}")
        for name in agent._arrays:
            if name not in arrays:
                raise ModelFileError(f"{path}: array {name!r} is missing")
            mine_a, theirs = getattr(agent, name), arrays[name]
            if theirs.shape != mine_a.shape or theirs.dtype.kind != mine_a.dtype.kind \
                    or (theirs.dtype.kind == "f" and not np.all(np.isfinite(theirs))):
                raise ModelFileError(f"{path}: array {name!r} must be finite {mine_a.dtype} of "
                                     f"shape {mine_a.shape}, got {theirs.dtype} {theirs.shape}")
            mine_a[...] = theirs
        agent.num_timesteps = steps
        agent._restore_extra(meta, path)
        return agent


def write_npz(path: str | os.PathLike, meta: dict[str, Any], arrays: dict[str, np.ndarray]) -> None:
    """``arrays`` plus ``meta`` (as a JSON string) to ``path``, atomically (temp file, rename)."""
    atomic_write(path, lambda f: np.savez(f, meta=np.array(json.dumps(meta)), **arrays))


def read_npz(path: str) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """Arrays and metadata of a file written by :func:`write_npz`; junk raises ``ModelFileError``."""
    if not os.path.isfile(path):
        raise ModelFileError(f"{path}: no such model file")
    try:
        with np.load(path, allow_pickle=False) as data:
            if "meta" not in data:
                raise ModelFileError(f"{path}: not an autoscale bandit model (no 'meta' array)")
            meta = json.loads(str(data["meta"]))
            arrays = {k: np.array(data[k]) for k in data.files if k != "meta"}
    except ModelFileError:
        raise
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile, UnicodeDecodeError) as e:
        raise ModelFileError(f"{path}: not a readable .npz model file ({type(e).__name__}: {e})") \
            from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise ModelFileError(f"{path}: metadata format is not {FORMAT!r}")
    return arrays, meta


# ----------------------------------------------------------------------------------------------
# tabular-bandit


class TabularBanditAgent(BanditAgent):
    """Per-state running means with epsilon-greedy exploration: Q-learning with gamma = 0 and
    step size 1/n(s, a).

    ``q[s, a]`` is the mean reward of target ``a`` in state ``s`` over its ``n[s, a]`` tries. Like
    the Q-learner, ``q`` starts at 0 (optimistic: every reward is negative), ties go to the lowest
    action, and exploration draws from a ``random.Random(seed)``.
    """

    name = "tabular-bandit"
    config_class = TabularBanditConfig
    _arrays = ("q", "n")

    def __init__(self, env: gym.Env, seed: int = 0, **hyperparameters: Any):
        super().__init__(env, seed, **hyperparameters)
        self.q = np.zeros((self.encoder.n_states, self.n_actions))
        self.n = np.zeros((self.encoder.n_states, self.n_actions), dtype=np.int64)

    def _key(self, obs) -> int:
        try:
            return self._index[(obs["state"] if isinstance(obs, dict) else obs).tobytes()]
        except (AttributeError, KeyError):
            return self.state_index(obs)

    def _act(self, s: int, explore: bool) -> int:
        if explore and self._rng.random() < self.config.epsilon:
            return self._rng.randrange(self.n_actions)
        return int(self.q[s].argmax())

    def _update(self, s: int, a: int, reward: float, info: dict[str, Any],
                next_observation: Any = None, terminated: bool = False) -> None:
        n = self.n[s, a] + 1
        self.n[s, a] = n
        self.q[s, a] += (reward - self.q[s, a]) / n


# ----------------------------------------------------------------------------------------------
# linucb, thompson


class LinearBanditAgent(BanditAgent):
    """Disjoint linear bandit: per target ``a`` a ridge regression ``reward ~ theta_a . x``.

    State per target: ``A_a = ridge * I + sum x x^T`` and ``b_a = sum r x``; ``theta_a = A_a^-1 b_a``.
    With ``onehot`` features ``A_a`` is diagonal and stored as ``A[s, a]`` (its diagonal), ``b[s, a]``
    likewise. With ``raw`` features ``A`` is ``(n_targets, d, d)`` and ``A_inv`` is kept up to date
    by Sherman-Morrison: ``A^-1 <- A^-1 - (A^-1 x)(A^-1 x)^T / (1 + x^T A^-1 x)``.
    Subclasses choose the exploration score (:meth:`_score`).
    """

    name = "linear-bandit"
    config_class = LinearBanditConfig
    _arrays = ("A", "b")

    def __init__(self, env: gym.Env, seed: int = 0, **hyperparameters: Any):
        super().__init__(env, seed, **hyperparameters)
        cfg = self.config
        K = self.n_actions
        if cfg.features == "onehot":
            S = self.encoder.n_states
            self.A = np.full((S, K), float(cfg.ridge))
            self.b = np.zeros((S, K))
        else:
            d = N_RAW_FEATURES
            self.A = np.repeat(np.eye(d)[None] * cfg.ridge, K, axis=0)
            self.b = np.zeros((K, d))
            self.A_inv = np.repeat(np.eye(d)[None] / cfg.ridge, K, axis=0)
            self.theta = np.zeros((K, d))

    def _check_observation_space(self, space: gym.Space) -> None:
        super()._check_observation_space(space)
        if self.config.features == "raw" and not isinstance(space, gym.spaces.Dict):
            raise ValueError(f"{self.name} with features='raw' needs obs_mode='extended' (the raw "
                             "context); make the env with gym.make('AutoScale-v0', "
                             "obs_mode='extended')")

    def _key(self, obs):
        if self.config.features == "raw":
            try:
                return raw_features(obs["raw"])
            except (TypeError, KeyError, IndexError):
                raise ValueError(f"{self.name} needs an extended observation with 'raw', got "
                                 f"{obs!r}") from None
        try:
            return self._index[(obs["state"] if isinstance(obs, dict) else obs).tobytes()]
        except (AttributeError, KeyError):
            return self.state_index(obs)

    def _mean_and_var(self, key) -> tuple[np.ndarray, np.ndarray]:
        """Posterior mean of every target's reward and ``x^T A^-1 x`` for the context ``key``."""
        if self.config.features == "onehot":
            A = self.A[key]
            return self.b[key] / A, 1.0 / A
        A_inv_x = self.A_inv @ key  # (K, d)
        return self.theta @ key, A_inv_x @ key

    def _act(self, key, explore: bool) -> int:
        mean, var = self._mean_and_var(key)
        if not explore:
            return int(mean.argmax())
        return int(self._score(mean, var).argmax())

    def _score(self, mean: np.ndarray, var: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def _update(self, key, a: int, reward: float, info: dict[str, Any],
                next_observation: Any = None, terminated: bool = False) -> None:
        if self.config.features == "onehot":
            self.A[key, a] += 1.0
            self.b[key, a] += reward
            return
        x = key
        A_inv = self.A_inv[a]
        A_inv_x = A_inv @ x
        A_inv -= np.outer(A_inv_x, A_inv_x / (1.0 + x @ A_inv_x))
        self.A[a] += np.outer(x, x)
        self.b[a] += reward * x
        self.theta[a] = A_inv @ self.b[a]

    def _restore_extra(self, meta: dict[str, Any], path: str) -> None:
        if self.config.features == "raw":  # derived state: invert once instead of saving it
            self.A_inv[...] = np.linalg.inv(self.A)
            self.theta[...] = np.einsum("kij,kj->ki", self.A_inv, self.b)


class LinUCBAgent(LinearBanditAgent):
    """LinUCB: explore on ``mean + alpha * sqrt(x^T A^-1 x)``."""

    name = "linucb"

    def _score(self, mean, var):
        return mean + self.config.alpha * np.sqrt(var)


class ThompsonAgent(LinearBanditAgent):
    """Linear Thompson sampling: explore on ``mean + v * sqrt(x^T A^-1 x) * N(0, 1)`` per target."""

    name = "thompson"

    def _score(self, mean, var):
        return mean + self.config.v * np.sqrt(var) * self._np_rng.standard_normal(len(mean))


class LinUCBRawAgent(LinUCBAgent):
    """``linucb`` on the raw context (quadratic features; needs ``obs_mode="extended"``)."""

    name = "linucb-raw"
    env_kwargs = {"obs_mode": "extended"}

    @classmethod
    def _default_hyperparameters(cls):
        return {"features": "raw"}


class ThompsonRawAgent(ThompsonAgent):
    """``thompson`` on the raw context (quadratic features; needs ``obs_mode="extended"``)."""

    name = "thompson-raw"
    env_kwargs = {"obs_mode": "extended"}

    @classmethod
    def _default_hyperparameters(cls):
        return {"features": "raw"}

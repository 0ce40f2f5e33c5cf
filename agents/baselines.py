"""Baselines: a fixed target, uniform random, and the oracle (the upper bound)."""

from __future__ import annotations

import json
from typing import Any

import gymnasium as gym
import numpy as np

from autoscale_env.world.errors import BackendUnavailable, ModelFileError
from autoscale_env.world.files import atomic_write, load_json


class _NonLearning:
    """Shared plumbing of agents that do not learn."""

    name = "baseline"
    learns = False

    def __init__(self, env: gym.Env):
        self.env = env
        self.nbytes = 0

    def learn(self, total_timesteps: int, callback=None, progress_bar: bool = False):
        """Nothing to learn; returns ``self``."""
        return self

    def save(self, path: str) -> None:
        """Write a small JSON description (there are no parameters)."""
        atomic_write(path, json.dumps({"agent": self.name, **self._config()}))

    def _config(self) -> dict[str, Any]:
        return {}


class FixedTargetAgent(_NonLearning):
    """Always runs on one target, e.g. ``FixedTargetAgent(env, "local/cpu/fp32")`` (the mobile-CPU
    baseline) or ``"cloud/gpu/fp32"`` (cloud offloading)."""

    def __init__(self, env: gym.Env, target: str):
        super().__init__(env)
        self.target = target
        self.action = env.unwrapped.target_index(target)  # raises listing valid names
        self.name = f"fixed:{target}"

    def predict(self, observation, state=None, episode_start=None, deterministic=True):
        """Always the fixed target's action."""
        return self.action, None

    def _config(self):
        return {"target": self.target}


class RandomAgent(_NonLearning):
    """Picks a target uniformly at random from its own seeded generator."""

    name = "random"

    def __init__(self, env: gym.Env, seed: int = 0):
        super().__init__(env)
        self.seed = seed
        self._rng = np.random.default_rng(seed)
        self._n = int(env.action_space.n)

    def predict(self, observation, state=None, episode_start=None, deterministic=True):
        """A uniformly random action."""
        return int(self._rng.integers(self._n)), None

    def _config(self):
        return {"seed": self.seed}


class OracleAgent(_NonLearning):
    """Picks the best target for the pending request, knowing every target's outcome.

    Only meaningful on the env it was built with (it reads ``env.unwrapped.oracle_action()``);
    backends that cannot know the outcomes in advance (live, partial traces) are refused.
    """

    name = "oracle"

    def predict(self, observation, state=None, episode_start=None, deterministic=True):
        """The oracle's action for the env's pending request."""
        action = self.env.unwrapped.oracle_action()
        if action < 0:
            raise BackendUnavailable(
                "the oracle needs every target's outcome in advance; this backend "
                f"({type(self.env.unwrapped.backend).__name__}) cannot provide it")
        return action, None


def load_baseline(path: str, env: gym.Env):
    """Rebuild a baseline saved by ``save``."""
    try:
        meta = load_json(path, ModelFileError, what="saved baseline")
        name = meta["agent"]
    except ModelFileError:
        raise
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise ModelFileError(f"{path}: not a saved baseline ({e})") from None
    if name.startswith("fixed:"):
        return FixedTargetAgent(env, meta["target"])
    if name == "random":
        return RandomAgent(env, meta.get("seed", 0))
    if name == "oracle":
        return OracleAgent(env)
    raise ModelFileError(f"{path}: unknown baseline {name!r}")

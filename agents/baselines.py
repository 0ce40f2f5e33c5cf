"""Baselines: a fixed target, uniform random, and the oracle (the upper bound)."""

from __future__ import annotations

import json
import os
from typing import Any

import gymnasium as gym
import numpy as np

from agents.base import Agent
from autoscale_env.world.errors import BackendUnavailable, ModelFileError
from autoscale_env.world.files import atomic_write, load_json


class FixedPolicyAgent(Agent):
    """Shared plumbing of agents that do not learn: saved as a small JSON description."""

    name = "baseline"
    learns = False

    def learn(self, total_timesteps: int, callback=None, progress_bar: bool = False):
        """Nothing to learn; returns ``self``."""
        return self

    def save(self, path: str | os.PathLike) -> None:
        """Write a small JSON description (there are no parameters)."""
        atomic_write(path, json.dumps({"agent": self.name, "seed": self.seed, **self.hparams}))

    @classmethod
    def load(cls, path: str | os.PathLike, env: gym.Env, **kwargs: Any) -> FixedPolicyAgent:
        """Rebuild a baseline saved by :meth:`save` for ``env``."""
        meta = load_json(path, ModelFileError, what="saved baseline")  # bounded: no FIFO hangs
        try:
            seed = meta.get("seed", 0)
            hyperparameters = {k: v for k, v in meta.items() if k not in ("agent", "seed")}
            return cls(env, seed=seed, **hyperparameters)
        except (OSError, ValueError, KeyError, TypeError, AttributeError) as e:
            raise ModelFileError(f"{path}: not a saved baseline ({e})") from None


class FixedTargetAgent(FixedPolicyAgent):
    """Always runs on one target, e.g. ``FixedTargetAgent(env, target="local/cpu/fp32")`` (the
    mobile-CPU baseline) or ``"cloud/gpu/fp32"`` (cloud offloading); ``make_agent`` builds it
    for the name ``fixed:<target>``."""

    def __init__(self, env: gym.Env, seed: int = 0, *, target: str):
        super().__init__(env, seed)
        self.target = target
        self.action = env.unwrapped.target_index(target)  # raises listing valid names
        self.name = f"fixed:{target}"

    def predict(self, observation, state=None, episode_start=None, deterministic=True):
        """Always the fixed target's action."""
        return self.action, None

    def predict_block(self, block: Any) -> np.ndarray:
        """:meth:`predict` for every request of ``env.unwrapped.pending_block()``."""
        return np.full(len(block.state), self.action, dtype=np.int64)

    @property
    def hparams(self) -> dict[str, Any]:
        return {"target": self.target}


class RandomAgent(FixedPolicyAgent):
    """Picks a target uniformly at random from its own seeded generator."""

    name = "random"

    def __init__(self, env: gym.Env, seed: int = 0):
        super().__init__(env, seed)
        self._rng = np.random.default_rng(seed)
        self._n = int(env.action_space.n)

    def predict(self, observation, state=None, episode_start=None, deterministic=True):
        """A uniformly random action."""
        return int(self._rng.integers(self._n)), None


class OracleAgent(FixedPolicyAgent):
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

    def predict_block(self, block: Any) -> np.ndarray:
        """:meth:`predict` for every request of a ``pending_block()`` of this agent's env (the
        harness checks that the block is its env's)."""
        return block.oracle_action

    #: ``predict_block`` is only valid on blocks of :attr:`env` (see
    #: :func:`agents.experiments.evaluation.evaluate`).
    predicts_own_env = True

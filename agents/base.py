"""The one agent interface every learner and baseline implements.

It is Stable-Baselines3's surface (``predict`` / ``learn`` / ``save`` / ``load``), so the harness
treats the paper's Q-learner, SB3's DQN/PPO/A2C and the baselines alike, and SB3's own
``evaluate_policy`` accepts our agents.
"""

from __future__ import annotations

from typing import Any, Protocol, runtime_checkable

import numpy as np

class StepCallback(Protocol):
    """What ``learn(callback=...)`` is given (e.g. :class:`agents.experiments.evaluation.TrainingMonitor`):
    it sees every reset and every executed request of training."""

    def on_reset(self, info: dict[str, Any]) -> None:
        """After each ``reset``, with its ``info`` (the pending request's ``oracle_action``)."""

    def on_step(self, action: int, reward: float, info: dict[str, Any]) -> bool:
        """After each step, with the executed action, its reward and ``info``; False stops."""


@runtime_checkable
class Agent(Protocol):
    """What the harness needs from an agent."""

    name: str

    def predict(self, observation: Any, state: Any = None, episode_start: Any = None,
                deterministic: bool = True) -> tuple[np.ndarray | int, None]:
        """The action for ``observation`` (greedy when ``deterministic``)."""

    def learn(self, total_timesteps: int, callback: StepCallback | None = None,
              progress_bar: bool = False) -> Agent:
        """Interact with the agent's environment for ``total_timesteps`` steps, learning online."""

    def save(self, path: str) -> None:
        """Write the agent to ``path`` (no pickle)."""

"""The one agent interface every learner and baseline implements.

It is Stable-Baselines3's surface (``predict`` / ``learn`` / ``save`` / ``load``), so the harness
treats the paper's Q-learner, SB3's DQN/PPO/A2C and the baselines alike, and SB3's own
``evaluate_policy`` accepts our agents.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol, runtime_checkable

import numpy as np

#: Called after every training step with (step index, reward, info); return False to stop.
StepCallback = Callable[[int, float, dict[str, Any]], bool]


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

"""Agents for AutoScale-v0: the paper's Q-learner, deep-RL learners and baselines, one interface.

``make_agent(name, env, seed)`` builds any of them by name: ``qlearning``, ``oracle``, ``random``,
``fixed:<target>`` (e.g. ``fixed:local/cpu/fp32``), the contextual bandits ``tabular-bandit``,
``linucb``, ``thompson``, ``linucb-raw``, ``thompson-raw`` (:mod:`agents.bandits`), the
Neurosurgeon-style ``predictor`` (:mod:`agents.predictor`, ``[baselines]`` extra), and with the
``[sb3]`` extra ``dqn``, ``ppo``, ``a2c``. An agent class may name ``env_kwargs`` (e.g.
``{"obs_mode": "extended"}``) that the harness uses when it makes the agent's envs. This package imports ``autoscale_env``; the environment never imports it.

Note: an unrelated old PyPI package is also called ``agents``; do not install both in one env.
"""

from __future__ import annotations

import importlib
from typing import Any

import gymnasium as gym

from autoscale_env.world.errors import UnknownNameError

AGENTS = {
    "qlearning": "agents.qlearning:QLearningAgent",
    "oracle": "agents.baselines:OracleAgent",
    "random": "agents.baselines:RandomAgent",
    "tabular-bandit": "agents.bandits:TabularBanditAgent",
    "linucb": "agents.bandits:LinUCBAgent",
    "thompson": "agents.bandits:ThompsonAgent",
    "linucb-raw": "agents.bandits:LinUCBRawAgent",
    "thompson-raw": "agents.bandits:ThompsonRawAgent",
    "predictor": "agents.predictor:PredictorAgent",
    "dqn": "agents.sb3:DQNAgent",
    "ppo": "agents.sb3:PPOAgent",
    "a2c": "agents.sb3:A2CAgent",
}

#: The two baselines of the paper's comparison.
MOBILE_CPU = "fixed:local/cpu/fp32"
CLOUD = "fixed:cloud/gpu/fp32"


def agent_names() -> list[str]:
    """Valid agent names (``fixed:<target>`` stands for any target of the device)."""
    return [*AGENTS, "fixed:<target>"]


def agent_class(name: str) -> type:
    """The class behind an agent name."""
    if name.startswith("fixed:"):
        from agents.baselines import FixedTargetAgent
        return FixedTargetAgent
    if name not in AGENTS:
        raise UnknownNameError("agent", name, agent_names())
    module, cls = AGENTS[name].split(":")
    return getattr(importlib.import_module(module), cls)


def make_agent(name: str, env: gym.Env, seed: int = 0, **hyperparameters: Any):
    """Build the agent called ``name`` for ``env``."""
    cls = agent_class(name)
    if name.startswith("fixed:"):
        return cls(env, name.split(":", 1)[1])
    if name == "oracle":
        return cls(env)
    return cls(env, seed=seed, **hyperparameters)

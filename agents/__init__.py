"""Agents for AutoScale-v0: the paper's Q-learner, deep-RL learners and baselines, one contract.

Every agent subclasses :class:`agents.base.Agent` (``predict`` / ``learn`` / ``save`` / ``load`` and
declared capabilities) and is built as ``cls(env, seed=seed, **hyperparameters)``.
``make_agent(name, env, seed)`` builds any of them by name: ``qlearning``, ``oracle``, ``random``,
``fixed:<target>`` (e.g. ``fixed:local/cpu/fp32``), the contextual bandits ``tabular-bandit``,
``linucb``, ``thompson``, ``linucb-raw``, ``thompson-raw`` (:mod:`agents.bandits`), the
Neurosurgeon-style ``predictor`` (:mod:`agents.predictor`, ``[baselines]`` extra), with the
``[sb3]`` extra ``dqn``, ``ppo``, ``a2c``, and any user class given as ``package.module:Class``
(docs/agents.md). This package imports ``autoscale_env``; the environment never imports it.

Note: an unrelated old PyPI package is also called ``agents``; do not install both in one env.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # imported lazily: ``import agents`` stays cheap for the command line
    import gymnasium as gym

    from agents.base import Agent

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

#: Families of names with a parameter: ``fixed:<target>`` is ``FixedTargetAgent(target=...)``.
FAMILIES = {"fixed": ("agents.baselines:FixedTargetAgent", "target")}

#: The two baselines of the paper's comparison.
MOBILE_CPU = "fixed:local/cpu/fp32"
CLOUD = "fixed:cloud/gpu/fp32"


def agent_names() -> list[str]:
    """Valid agent names (``fixed:<target>`` stands for any target of the device; a user class
    is named ``package.module:Class``)."""
    return [*AGENTS, "fixed:<target>"]


def _import(spec: str, name: str) -> type:
    from agents.base import Agent
    from autoscale_env.world.errors import ConfigError, UnknownNameError

    module, _, attr = spec.partition(":")
    try:
        cls = getattr(importlib.import_module(module), attr)
    except ModuleNotFoundError as e:
        if e.name and (module == e.name or module.startswith(e.name + ".")):
            raise UnknownNameError("agent", name, [*agent_names(), "package.module:Class"]) \
                from None
        raise  # the module exists but needs something missing (an extra): its own message
    except AttributeError:
        raise UnknownNameError("agent", name, [*agent_names(), "package.module:Class"]) from None
    if not (isinstance(cls, type) and issubclass(cls, Agent)):
        raise ConfigError(f"agent {name!r}: {cls!r} is not a subclass of agents.base.Agent "
                        "(see docs/agents.md)")
    return cls


def agent_spec(name: str) -> tuple[type[Agent], dict[str, Any]]:
    """The class behind an agent name and the constructor arguments the name itself sets
    (``fixed:local/cpu/fp32`` -> ``FixedTargetAgent``, ``{"target": "local/cpu/fp32"}``)."""
    from autoscale_env.world.errors import UnknownNameError

    if name in AGENTS:
        return _import(AGENTS[name], name), {}
    family, sep, value = name.partition(":")
    if sep and family in FAMILIES:
        spec, keyword = FAMILIES[family]
        return _import(spec, name), {keyword: value}
    if sep and family and value and "/" not in name:
        return _import(name, name), {}  # package.module:Class
    raise UnknownNameError("agent", name, [*agent_names(), "package.module:Class"])


def agent_class(name: str) -> type[Agent]:
    """The class behind an agent name (a registered name, ``fixed:<target>`` or
    ``package.module:Class``)."""
    return agent_spec(name)[0]


def make_agent(name: str, env: gym.Env, seed: int = 0, **hyperparameters: Any) -> Agent:
    """Build the agent called ``name`` for ``env``: ``cls(env, seed=seed, **hyperparameters)``."""
    cls, preset = agent_spec(name)
    return cls(env, seed=seed, **{**preset, **hyperparameters})

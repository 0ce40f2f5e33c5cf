"""Baselines and the agent registry."""

from __future__ import annotations

import gymnasium as gym
import pytest

from agents import make_agent
from agents.baselines import FixedTargetAgent, OracleAgent, RandomAgent
from autoscale_env.world.errors import UnknownNameError


def test_registry_builds_every_baseline():
    env = gym.make("AutoScale-v0")
    assert isinstance(make_agent("fixed:local/cpu/fp32", env), FixedTargetAgent)
    assert isinstance(make_agent("random", env, seed=1), RandomAgent)
    assert isinstance(make_agent("oracle", env), OracleAgent)
    with pytest.raises(UnknownNameError, match="qlearning"):
        make_agent("sarsa", env)


def test_fixed_target_always_runs_there():
    env = gym.make("AutoScale-v0")
    agent = make_agent("fixed:cloud/gpu/fp32", env)
    obs, _ = env.reset(seed=0)
    for _ in range(20):
        obs, _, _, _, info = env.step(agent.predict(obs)[0])
        assert info["target"] == "cloud/gpu/fp32"


def test_fixed_target_with_unknown_name_lists_targets():
    env = gym.make("AutoScale-v0", device="moto_x_force")
    with pytest.raises(UnknownNameError, match="local/gpu/fp16"):
        make_agent("fixed:local/dsp/int8", env)


def test_oracle_always_matches_and_never_uses_more_energy():
    env = gym.make("AutoScale-v0", setting="dynamic")
    oracle = make_agent("oracle", env)
    obs, info = env.reset(seed=2)
    for _ in range(200):
        cf = env.unwrapped.counterfactuals()
        action = oracle.predict(obs)[0]
        assert action == info["oracle_action"]
        assert cf["reward"][action] == cf["reward"].max()
        obs, _, _, trunc, info = env.step(action)
        if trunc:
            obs, info = env.reset()


def test_random_agent_is_seeded():
    env = gym.make("AutoScale-v0")
    a = [make_agent("random", env, seed=5).predict(None)[0] for _ in range(1)]
    r1, r2 = make_agent("random", env, seed=5), make_agent("random", env, seed=5)
    assert [r1.predict(None)[0] for _ in range(50)] == [r2.predict(None)[0] for _ in range(50)]
    assert a

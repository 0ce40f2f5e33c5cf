"""The compiled paths are the per-step loops, bit for bit: ``OnlineAgent.learn`` over blocks
(``QLearningAgent._learn_block``, ``TrainingMonitor.on_steps``) and ``evaluate`` over blocks
(``predict_block``). The per-step reference is forced by a callback without ``on_steps`` or by
hiding the batch API."""

from __future__ import annotations

import dataclasses

import gymnasium as gym
import numpy as np
import pytest

import agents.experiments.evaluation as evaluation
from agents import make_agent
from agents.base import batched_env
from agents.experiments.evaluation import TrainingMonitor, evaluate
from agents.qlearning import QLearningAgent

CELL = dict(device="galaxy_s10e", scenario="streaming", setting="dynamic")


class PerStepMonitor(TrainingMonitor):
    """The monitor without its batched hook: forces the per-step loop."""

    on_steps = None

    def __getattribute__(self, name):
        if name == "on_steps":
            raise AttributeError(name)
        return super().__getattribute__(name)


def _train(monitor_cls, steps, max_episode_steps=100, **hp):
    env = gym.make("AutoScale-v0", max_episode_steps=max_episode_steps, **CELL)
    agent = QLearningAgent(env, seed=3, **hp)
    monitor = monitor_cls(None, log_interval=333)
    for n in steps:  # several learn() calls: the lazy reset and the window carry over
        agent.learn(n, callback=monitor)
    monitor.flush()
    return agent, monitor, env


@pytest.mark.parametrize("max_episode_steps", [100, 37, 250])
@pytest.mark.parametrize("hp", [{}, {"epsilon": 0.5, "epsilon_decay": 0.999, "epsilon_min": 0.05}])
def test_batched_learning_is_the_per_step_loop(max_episode_steps, hp):
    steps = (1234, 1, 2000, 50)
    fast, fast_mon, fast_env = _train(TrainingMonitor, steps, max_episode_steps, **hp)
    slow, slow_mon, slow_env = _train(PerStepMonitor, steps, max_episode_steps, **hp)
    assert batched_env(fast_env) is not None
    assert np.array_equal(fast.q, slow.q)
    assert fast.epsilon == slow.epsilon and fast.num_timesteps == slow.num_timesteps
    assert fast_mon.curve == slow_mon.curve  # the TensorBoard values, at the same steps
    assert fast.at_episode_boundary == slow.at_episode_boundary
    assert np.array_equal(fast._obs, slow._obs)
    assert fast_env.unwrapped.np_random.bit_generator.state == \
        slow_env.unwrapped.np_random.bit_generator.state
    assert fast_env.unwrapped.observation().tolist() == slow_env.unwrapped.observation().tolist()
    # the TimeLimit's count is where the per-step loop left it
    assert fast_env._elapsed_steps == slow_env._elapsed_steps


def test_exploration_is_the_counter_stream_of_both_paths():
    """predict(deterministic=False) makes the decision the next training step would make."""
    env = gym.make("AutoScale-v0", **CELL)
    agent = QLearningAgent(env, seed=9, epsilon=0.5)
    agent.learn(300)
    obs = env.unwrapped.observation()
    expected = agent.predict(obs, deterministic=False)[0]
    agent.learn(1)
    # the per-step path (no block API through this wrapper) took the same first action
    other = QLearningAgent(gym.make("AutoScale-v0", **CELL), seed=9, epsilon=0.5)
    other.learn(300, callback=PerStepMonitor(None))
    assert other.predict(other.env.unwrapped.observation(), deterministic=False)[0] == expected


@pytest.mark.parametrize("name", ["qlearning", "oracle", "fixed:local/cpu/fp32"])
def test_batched_evaluation_is_the_per_step_loop(name, monkeypatch):
    train_env = gym.make("AutoScale-v0", **CELL)
    results = []
    for batched in (True, False):
        if not batched:
            monkeypatch.setattr(evaluation, "batched_env", lambda env: None)
        env = gym.make("AutoScale-v0", **CELL)
        agent = make_agent(name, train_env if name == "qlearning" else env, seed=1)
        if name == "qlearning" and batched:
            agent.learn(3000)
        elif name == "qlearning":
            agent.q[...] = results[0][1]
        res = evaluate(agent, env, 1234, seed=77)
        results.append((dataclasses.replace(res, decision_seconds=0.0),
                        getattr(agent, "q", None)))
    assert results[0][0] == results[1][0]
    assert list(results[0][0].per_network) == list(results[1][0].per_network)
    assert list(results[0][0].by_signal) == list(results[1][0].by_signal)


def test_oracle_of_another_env_keeps_the_per_step_loop():
    env, other = gym.make("AutoScale-v0", **CELL), gym.make("AutoScale-v0", **CELL)
    oracle = make_agent("oracle", other, seed=0)
    other.reset(seed=1)
    evaluate(oracle, env, 10, seed=2)  # reads its own env per step, as before: no error

"""Contextual bandits: the update rules are the textbook ones, they learn, decide on the posterior
mean, are reproducible, and save without pickle."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from agents import agent_names, make_agent
from agents.bandits import (N_RAW_FEATURES, LinUCBAgent, LinUCBRawAgent, TabularBanditAgent,
                            ThompsonAgent, ThompsonRawAgent, raw_features)
from agents.experiments.benchmark import BenchmarkConfig, Task, run_task
from agents.experiments.evaluation import evaluate
from autoscale_env.world.errors import ModelFileError

BANDITS = ["tabular-bandit", "linucb", "thompson", "linucb-raw", "thompson-raw"]


def make(obs_mode="paper", **kw):
    return gym.make("AutoScale-v0", **{"scenario": "translation", "setting": "static",
                                       "obs_mode": obs_mode, **kw})


def make_for(name, **kw):
    return make("extended" if name.endswith("-raw") else "paper", **kw)


def test_registered():
    assert set(BANDITS) | {"predictor"} <= set(agent_names())


def test_tabular_bandit_is_the_running_mean_per_state():
    agent = TabularBanditAgent(make())
    rewards = [-3.0, -1.0, -2.0, -6.0]
    for r in rewards:
        agent._update(7, 2, r, {})
    assert agent.q[7, 2] == pytest.approx(np.mean(rewards)) and agent.n[7, 2] == 4
    assert not agent.q[7, [0, 1, 3]].any()  # other targets untouched (no bootstrapping: gamma 0)


def test_linucb_onehot_is_per_state_ucb():
    agent = LinUCBAgent(make(), alpha=2.0, ridge=1.0)
    for r in (-2.0, -4.0):
        agent._update(5, 1, r, {})
    mean, var = agent._mean_and_var(5)
    assert mean[1] == pytest.approx(-6.0 / 3.0) and var[1] == pytest.approx(1.0 / 3.0)
    assert mean[0] == 0.0 and var[0] == 1.0  # untried: the prior, optimistic since rewards < 0
    score = agent._score(mean, var)
    assert score[1] == pytest.approx(-2.0 + 2.0 / np.sqrt(3.0))
    assert agent._act(5, explore=False) == 0  # greedy on the mean: ties go to the lowest index


def test_sherman_morrison_keeps_the_exact_inverse():
    env = make("extended", setting="dynamic")
    agent = LinUCBRawAgent(env, seed=0)
    agent.learn(3000)
    for a in range(agent.n_actions):
        np.testing.assert_allclose(agent.A_inv[a], np.linalg.inv(agent.A[a]), rtol=1e-6, atol=1e-9)
        np.testing.assert_allclose(agent.theta[a], np.linalg.solve(agent.A[a], agent.b[a]),
                                   rtol=1e-6, atol=1e-9)
    assert agent.A.shape == (agent.n_actions, N_RAW_FEATURES, N_RAW_FEATURES)


def test_raw_features_are_quadratic_in_the_scaled_context():
    raw = np.array([27, 1, 0, 45.0, 45.0, -55.0, -50.0])
    x = raw_features(raw)
    assert len(x) == N_RAW_FEATURES == 36 and x[0] == 1.0
    assert x[1] == pytest.approx(0.27) and x[6] == pytest.approx(35 / 50)


def test_thompson_explores_by_sampling_but_predicts_the_mean():
    agent = ThompsonAgent(make(), seed=1)
    agent._update(3, 4, -1.0, {})
    greedy = {agent._act(3, explore=False) for _ in range(50)}
    sampled = {agent._act(3, explore=True) for _ in range(200)}
    assert greedy == {0} and len(sampled) > 1


@pytest.mark.parametrize("name", BANDITS)
def test_learns_to_beat_random(name):
    agent = make_agent(name, make_for(name), seed=0).learn(6_000)
    ours = evaluate(agent, make_for(name), 1000, seed=77).metrics()
    rand = evaluate(make_agent("random", make_for(name), seed=0), make_for(name), 1000,
                    seed=77).metrics()
    # random matches the oracle on ~11 % of requests; states never visited in training (static
    # conditions are drawn per episode) fall back to action 0, so the one-hot agents stop near 75 %
    assert ours["energy_mj"] < 0.7 * rand["energy_mj"]
    assert ours["oracle_match"] > 0.6 > 0.2 > rand["oracle_match"]


@pytest.mark.parametrize("name", ["tabular-bandit", "thompson", "thompson-raw"])
def test_same_seed_same_model_bit_for_bit(name):
    def model(seed):
        a = make_agent(name, make_for(name, setting="dynamic"), seed=seed).learn(2_000)
        return np.concatenate([a.q.ravel(), a.n.ravel()]) if name == "tabular-bandit" \
            else np.concatenate([a.A.ravel(), a.b.ravel()])
    assert model(3).tobytes() == model(3).tobytes() != model(4).tobytes()


@pytest.mark.parametrize("name", BANDITS)
def test_save_load_round_trip(tmp_path, name):
    env = make_for(name, setting="dynamic")
    agent = make_agent(name, env, seed=2).learn(1_500)
    path = tmp_path / "m.npz"
    agent.save(path)
    loaded = type(agent).load(path, env=make_for(name, setting="dynamic"))
    obs, _ = env.reset(seed=5)
    for _ in range(200):
        assert loaded.predict(obs)[0] == agent.predict(obs)[0]
        obs, *_ = env.step(agent.predict(obs)[0])
    assert loaded.num_timesteps == 1_500 and loaded.config == agent.config


def test_load_refuses_junk_and_other_envs(tmp_path):
    junk = tmp_path / "junk.npz"
    junk.write_bytes(b"not a zip")
    with pytest.raises(ModelFileError, match="junk.npz"):
        LinUCBAgent.load(junk, env=make())
    path = tmp_path / "m.npz"
    LinUCBAgent(make()).save(path)
    with pytest.raises(ModelFileError, match="'linucb' model, not 'thompson'"):
        ThompsonAgent.load(path, env=make())
    with pytest.raises(ModelFileError, match="targets"):  # Moto X Force has no DSP: 8 targets
        LinUCBAgent.load(path, env=make(device="moto_x_force"))


def test_raw_variants_need_the_extended_observation():
    with pytest.raises(ValueError, match="obs_mode='extended'"):
        ThompsonRawAgent(make("paper"))
    with pytest.raises(ValueError, match="hyperparameter alpha"):
        LinUCBAgent(make(), alpha=-1)
    with pytest.raises(ValueError, match="unknown linucb hyperparameter"):
        LinUCBAgent(make(), gamma=0.1)


def test_benchmark_harness_runs_raw_variants_with_extended_obs_and_shared_tags(tmp_path):
    cfg = BenchmarkConfig(train_steps=1_000, eval_steps=200, log_interval=500)
    rows = run_task(Task("thompson-raw", "mi8pro", "translation", "static", 0), cfg, tmp_path)
    assert rows["results"][0]["energy_mj"] > 0
    runs = list((tmp_path / "tb").iterdir())
    acc = EventAccumulator(str(runs[0]))
    acc.Reload()
    assert {"autoscale/oracle_match", "rollout/reward_mean", "eval/energy_mj"} <= \
        set(acc.Tags()["scalars"])

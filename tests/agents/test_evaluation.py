"""Evaluation metrics: near-optimal rate, signal-split ratios, geometric means in summaries."""

from __future__ import annotations

import math

import gymnasium as gym
import pytest

from agents import make_agent
from agents.experiments.benchmark import finish, geometric_mean, grid, run, BenchmarkConfig, ResultStore
from agents.experiments.evaluation import NEAR_OPTIMAL_SLACK, WEAK_WIFI_DBM, evaluate


def count_near_optimal(agent_name, cell, n, seed):
    """The definition, counted request by request from the env's own counterfactuals."""
    env = gym.make("AutoScale-v0", **cell)
    agent = make_agent(agent_name, env)
    u = env.unwrapped
    obs, _ = env.reset(seed=seed)
    hits = weak = 0
    for _ in range(n):
        cf = u.counterfactuals()
        oracle_mj = cf["energy_mj"][u.oracle_action()]
        weak += u.context["rssi_wifi_dbm"] <= WEAK_WIFI_DBM
        action, _ = agent.predict(obs, deterministic=True)
        obs, _, term, trunc, info = env.step(int(action))
        hits += (info["qos_met"] and info["accuracy_met"]
                 and info["energy_mj"] <= oracle_mj * (1 + NEAR_OPTIMAL_SLACK))
        if term or trunc:
            obs, _ = env.reset()
    return hits / n, weak


@pytest.mark.parametrize("agent", ["oracle", "fixed:local/cpu/fp32", "random"])
def test_near_optimal_rate_counts_requests_that_meet_both_targets_within_5_percent(agent):
    cell = dict(device="mi8pro", scenario="non_streaming", setting="static")
    env = gym.make("AutoScale-v0", **cell)
    m = evaluate(make_agent(agent, env), env, 600, seed=3).metrics()
    expected, _ = count_near_optimal(agent, cell, 600, 3)
    assert m["near_optimal_rate"] == pytest.approx(expected)
    if agent == "oracle":
        # the oracle is near-optimal wherever some target meets both targets
        assert m["near_optimal_rate"] >= 1 - m["qos_violation_rate"] - m["accuracy_violation_rate"]


def test_ratios_are_split_by_wifi_signal():
    env = gym.make("AutoScale-v0", device="mi8pro", scenario="non_streaming", setting="dynamic")
    m = evaluate(make_agent("fixed:local/cpu/fp32", env), env, 800, seed=1).metrics()
    assert m["ppw_vs_cpu_regular"] == pytest.approx(1.0) and m["ppw_vs_cpu_weak"] == pytest.approx(1.0)
    env = gym.make("AutoScale-v0", device="mi8pro", scenario="non_streaming", setting="static")
    # seed 0's first static episode: a band without requests reports NaN, not a made-up ratio
    m = evaluate(make_agent("oracle", env), env, 100, seed=0).metrics()
    assert math.isnan(m["ppw_vs_cloud_weak"]) != math.isnan(m["ppw_vs_cloud_regular"])


def test_geometric_mean_ignores_nan_and_is_below_the_arithmetic_mean():
    assert geometric_mean([1.0, 4.0, float("nan")]) == pytest.approx(2.0)
    assert math.isnan(geometric_mean([float("nan")]))


def test_summary_says_how_it_averages(tmp_path):
    store = ResultStore(tmp_path)
    run(grid(["oracle", "fixed:local/cpu/fp32"], ["mi8pro"], ["translation"], ["static"], 1),
        BenchmarkConfig(train_steps=100, eval_steps=300, log_interval=100), store, progress=False)
    text = finish(store, figures=False)
    assert "geometric mean" in text and "near-optimal (%)" in text

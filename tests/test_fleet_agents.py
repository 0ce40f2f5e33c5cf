"""Fleet baselines: independent Q-learners, oracles, shared PPO, the benchmark."""

from __future__ import annotations

import json

import itertools

import numpy as np
import pytest

from agents.fleet import (CentralisedOracle, CoordinateAscent, IndependentQLearners,
                          fixed_target, joint_actions, per_phone_oracle, run_policy)
from agents.qlearning import QLearningAgent
from autoscale_env.fleet import make_core


def test_independent_q_update_is_the_paper_rule():
    core = make_core(3)
    learners = IndependentQLearners(core, seed=0)
    obs, _ = core.reset(0)
    a = learners.act(obs, explore=True)
    nxt, r, _ = core.step(a)
    learners.q[1, core.flat_state(nxt)[1], 4] = -2.0  # something to bootstrap from
    before = learners.q.copy()
    learners.update(obs, a, r, nxt)
    s, s2 = core.flat_state(obs), core.flat_state(nxt)
    for k in range(3):  # the same arithmetic as QLearningAgent.update, per phone
        single = QLearningAgent.__new__(QLearningAgent)
        single.q, single.config = before[k].copy(), learners.config
        single.update(int(s[k]), int(a[k]), float(r[k]), int(s2[k]))
        assert np.allclose(learners.q[k], single.q, rtol=0, atol=1e-6)


@pytest.mark.slow
def test_independent_q_learns_to_beat_random():
    core = make_core(4, mix="benchmark")
    learners = IndependentQLearners(core, seed=0).learn(3000, seed=1)
    learned = run_policy(core, learners.policy, 200, seed=0)
    rng = np.random.default_rng(0)
    random = run_policy(core, lambda c, o: rng.integers(9, size=4), 200, seed=0)
    assert learned.reward > random.reward + 1.0


def test_centralised_oracle_is_best_and_per_phone_oracle_is_optimal_alone():
    core = make_core(2, mix="benchmark")
    central = CentralisedOracle(core)
    # The brute force the oracle must agree with, built here from the action counts alone.
    every_joint = np.array(list(itertools.product(*(range(int(n)) for n in core.n_targets))))
    assert every_joint.shape == (81, 2)
    obs, _ = core.reset(4)
    for _ in range(30):
        best = central(core, obs)
        every = core.evaluate(every_joint)["reward"].sum(axis=1)
        assert core.evaluate(best[None])["reward"].sum() == every.max()
        obs, _, _ = core.step(best)
    one = make_core(1)
    one.reset(0)
    for _ in range(30):  # alone, the best target alone is the best target
        assert CentralisedOracle(one)(one, None)[0] == per_phone_oracle(one, None)[0]
        one.step(np.array([0]))


def test_joint_actions_refuses_huge_fleets():
    with pytest.raises(ValueError, match="too many"):
        joint_actions(np.full(8, 9))


def test_best_response_is_a_round_equilibrium_when_it_stops():
    core = make_core(6, scenario="streaming")
    obs, _ = core.reset(0)
    br = CoordinateAscent("selfish", sweeps=10)
    for _ in range(10):
        a = br(core, obs)
        r = core.evaluate(a)["reward"]
        for k in range(6):  # nobody gains by deviating alone
            dev = np.repeat(a[None], 9, axis=0)
            dev[:, k] = np.arange(9)
            assert core.evaluate(dev)["reward"][:, k].max() <= r[k]
        obs, _, _ = core.step(a)
    assert br.converged == 10


def test_fixed_target_and_run_stats():
    core = make_core(4)
    stats = run_policy(core, fixed_target("edge/gpu/fp32"), 20, seed=0, name="edge")
    assert stats.location_share == {"local": 0.0, "edge": 1.0, "cloud": 0.0}
    assert stats.edge_latency_ms >= stats.edge_alone_latency_ms
    with pytest.raises(ValueError, match="no target local/dsp/int8"):
        run_policy(make_core(1, device="moto_x_force"), fixed_target("local/dsp/int8"), 1, 0)


def test_shared_ppo_trains_through_supersuit():
    pytest.importorskip("supersuit")
    pytest.importorskip("stable_baselines3")
    from agents.fleet_ppo import ppo_policy, train_shared_ppo
    from autoscale_env.fleet import parallel_env
    env = parallel_env(num_phones=2, mix="benchmark")
    model = train_shared_ppo(env, 512, seed=0, n_steps=64, batch_size=64, n_epochs=1)
    core = make_core(2, mix="benchmark")
    stats = run_policy(core, ppo_policy(model), 10, seed=0)
    assert stats.n_phones == 2 and np.isfinite(stats.reward)


def test_fleet_benchmark_command(tmp_path):
    from agents.cli import main
    out = tmp_path / "fleet"
    rc = main(["fleet-benchmark", "--sizes", "1,2", "--rounds", "20", "--edge-rounds", "20",
               "--train-rounds", "50", "--out", str(out), "--quiet"])
    assert rc == 0
    results = json.loads((out / "results.json").read_text())
    assert set(results["sizes"]) == {"1", "2"}
    assert results["sizes"]["1"]["price_of_anarchy"]["per_phone_oracle"] == pytest.approx(1.0)
    assert "| 2 |" in (out / "table.md").read_text()
    assert main(["fleet-benchmark", "--sizes", "1", "--out", str(out), "--quiet"]) == 2  # no --force
    assert main(["fleet-benchmark", "--render", str(out)]) == 0
    assert main(["fleet-benchmark", "--render", str(tmp_path / "missing")]) == 2


def test_independent_q_never_picks_a_missing_target():
    core = make_core(2, device=["moto_x_force", "mi8pro"])  # 8 and 9 targets
    learners = IndependentQLearners(core, seed=0, epsilon=0.5).learn(300, seed=0)
    obs, _ = core.reset(1)
    for _ in range(100):
        a = learners.act(obs, explore=True)
        assert a[0] < 8
        obs, _, _ = core.step(a)

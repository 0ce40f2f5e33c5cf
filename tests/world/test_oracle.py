"""The oracle (:func:`autoscale_env.world.rules.best_target`, :func:`oracle_actions`): the target
with the highest reward; on a tie the first such target (lowest index) wins; when any target's
reward is unknown (NaN) there is no oracle (-1), because the unknown one might be the best.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from autoscale_env.world import config
from autoscale_env.world.rules import OutcomeModel, Scorer, best_target, oracle_actions

NAN, INF = math.nan, math.inf


@pytest.mark.parametrize("rewards, oracle", [
    ([-0.5], 0),                                   # one target: it is the oracle
    ([-0.3, -0.2, -0.9], 1),                       # strictly best in the middle
    ([-0.3, -0.9, -0.2], 2),                       # strictly best last
    ([-0.1, -0.9, -0.2], 0),                       # strictly best first
    ([-0.2, -0.2, -0.9], 0),                       # tie first and second: the first
    ([-0.9, -0.2, -0.2], 1),                       # tie second and last: the second, not the last
    ([-0.9, -0.2, -0.5, -0.2, -0.2], 1),           # three-way tie: the first of them
    ([-1.0, -1.0, -1.0, -1.0], 0),                 # all equal: the first target
    ([-INF, -INF, -INF], 0),                       # all infinitely bad: still the first
    ([-INF, -10.3, -INF], 1),                      # only one finite
    ([-12.0, -11.5, -30.0], 1),                    # infeasible (every target missed): least bad
])
def test_first_best_target_wins(rewards, oracle):
    assert best_target(np.array(rewards)) == oracle
    assert oracle_actions(np.array([rewards])).tolist() == [oracle]


@pytest.mark.parametrize("rewards", [
    [NAN, -0.1, -0.2],          # unknown first
    [-0.1, NAN, -0.2],          # unknown after the best
    [-0.2, -0.1, NAN],          # unknown last
    [NAN, NAN, NAN],
    [NAN],
])
def test_any_unknown_reward_means_no_oracle(rewards):
    assert best_target(np.array(rewards)) == -1
    assert oracle_actions(np.array(rewards)).tolist() == -1  # one request: a 0-d answer


def test_oracle_actions_keeps_the_request_shape():
    rewards = np.array([[[-1.0, -0.5], [-0.5, -0.5]], [[NAN, 0.0], [-2.0, -3.0]]])  # (2, 2, 2)
    got = oracle_actions(rewards)
    assert got.shape == (2, 2) and got.dtype == np.int64
    assert got.tolist() == [[1, 0], [-1, 0]]
    assert oracle_actions(rewards.reshape(4, 2)).tolist() == [1, 0, -1, 0]
    assert oracle_actions(np.zeros((0, 3))).shape == (0,)


def test_scorers_oracle_is_the_first_best_of_its_rewards():
    """``Scorer.score_all`` returns the oracle of the rewards it computed, per request."""
    model = OutcomeModel("mi8pro", "non_streaming")
    scenario = config.get_scenario("non_streaming")
    scorer = Scorer(config.get_reward_preset("energy"), scenario, model.workloads,
                    np.full(len(model.workloads), 100.0), model.accuracy)
    T = len(model.targets)
    latency = np.full((3, T), 10.0)
    energy = np.full((3, T), 50.0)
    energy[0, 4] = energy[0, 6] = 20.0           # request 0: a tie between targets 4 and 6
    latency[1, :] = 1e4                          # request 1: every target late; 7 the least
    latency[1, 7] = 2e3
    energy[2, 2] = NAN                           # request 2: an unknown outcome
    accuracy = np.ones((3, T))                   # every target accurate enough
    reward, qos, met, oracle = scorer.score_all([0, 0, 0], latency, energy, accuracy)
    assert oracle.tolist() == [4, 7, -1]
    assert oracle.tolist() == oracle_actions(reward).tolist()
    assert not qos[1].any() and met.all()

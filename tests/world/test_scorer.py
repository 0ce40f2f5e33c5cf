"""The scorer (:class:`autoscale_env.world.rules.Scorer`): the reward of every target of every
request, with the request's own network's ``E_ref`` and accuracy target.

The accuracy target of a network is its fp32 accuracy (``workloads.toml``) minus the scenario's
``accuracy_tolerance`` (``scenarios.toml``); the latency target is the scenario's ``qos_ms``.
"""

from __future__ import annotations

import tomllib

import numpy as np
import pytest

from autoscale_env.world import config
from autoscale_env.world.reward import request_reward, weights
from autoscale_env.world.rules import OutcomeModel, Scorer

WORKLOADS = tuple(config.load_workloads().values())
W = len(WORKLOADS)


def toml(name: str) -> dict:
    with open(config.DATA_DIR / name, "rb") as f:
        return tomllib.load(f)


def scorer(scenario: str = "translation", accuracy=None, preset: str = "soft") -> Scorer:
    """A scorer with E_ref 100, 110, 120, ... mJ per network (distinct, so the wrong network's
    E_ref shows)."""
    return Scorer(config.get_reward_preset(preset), config.get_scenario(scenario), WORKLOADS,
                  100.0 + 10.0 * np.arange(W), accuracy)


def test_accuracy_target_is_fp32_accuracy_minus_the_scenarios_tolerance():
    nets = toml("workloads.toml")["networks"]
    for scenario in ("non_streaming", "streaming", "translation"):
        tolerance = toml("scenarios.toml")[scenario]["accuracy_tolerance"]
        got = scorer(scenario).accuracy_target
        want = [nets[w.name]["accuracy_fp32"] - tolerance for w in WORKLOADS]
        assert got.tolist() == pytest.approx(want, rel=1e-15)
        assert scorer(scenario).qos_ms == toml("scenarios.toml")[scenario]["qos_ms"]


def test_every_target_of_every_request_is_scored_with_its_networks_numbers():
    s = scorer("translation")
    rng = np.random.default_rng(1)
    network = np.array([[3, 0, W - 1], [9, 9, 1]])                      # S = (2, 3)
    latency = rng.uniform(20.0, 200.0, (2, 3, 5))                       # around qos 100 ms
    energy = rng.uniform(10.0, 500.0, (2, 3, 5))
    accuracy = s.accuracy_target[network][..., None] + rng.uniform(-0.03, 0.03, (2, 3, 5))
    reward, qos, met, oracle = s.score_all(network, latency, energy, accuracy)
    assert reward.shape == qos.shape == met.shape == (2, 3, 5) and oracle.shape == (2, 3)
    c, w_lat, w_acc = weights(config.get_reward_preset("soft"))
    for idx in np.ndindex(2, 3):
        n = network[idx]
        for j in range(5):
            want = request_reward(latency[idx][j], energy[idx][j], accuracy[idx][j],
                                  100.0 + 10.0 * n, s.accuracy_target[n], 100.0, c, w_lat, w_acc)
            assert (reward[idx][j], qos[idx][j], met[idx][j]) == want, (idx, j)
        assert oracle[idx] == int(np.argmax(reward[idx]))
    assert qos.any() and not qos.all() and met.any() and not met.all()  # both sides exercised


def test_score_is_score_all_without_the_oracle():
    s = scorer()
    args = ([1, 2], np.full((2, 4), 50.0), np.full((2, 4), 80.0), np.full((2, 4), 0.9))
    full, three = s.score_all(*args), s.score(*args)
    assert len(three) == 3
    for a, b in zip(full[:3], three):
        assert np.array_equal(a, b)


def test_the_accuracy_table_is_the_default_and_required_without_one():
    model = OutcomeModel("mi8pro", "translation")
    with_table = scorer(accuracy=model.accuracy)
    latency, energy = np.full((2, 9), 60.0), np.full((2, 9), 90.0)
    network = np.array([0, 10])
    got = with_table.score_all(network, latency, energy)
    given = with_table.score_all(network, latency, energy, model.accuracy[network])
    for a, b in zip(got, given):
        assert np.array_equal(a, b)
    assert not got[2].all()  # the table's int8 targets miss some accuracy targets
    with pytest.raises(ValueError, match="accuracy"):
        scorer().score_all(network, latency, energy)
    assert scorer().accuracy is None


def test_outcomes_broadcast_to_the_requests():
    """A latency, energy or accuracy given for one request (or one target) applies to all."""
    s = scorer()
    network = np.array([0, 1, 2])
    full = s.score_all(network, np.full((3, 4), 80.0), np.full((3, 4), 40.0),
                       np.full((3, 4), 0.9))
    short = s.score_all(network, np.full((3, 4), 80.0), np.array([40.0] * 4), 0.9)
    for a, b in zip(full, short):
        assert np.array_equal(a, b)


def test_network_indices_outside_the_catalog_are_refused():
    s = scorer()
    assert s.score_all([0, W - 1], np.ones((2, 3)), np.ones((2, 3)), 0.9)[0].shape == (2, 3)
    for bad in (W, W + 5, -1):  # refused up front, before any table is read
        with pytest.raises(IndexError, match="outside the catalog"):
            s.score_all([0, bad], np.ones((2, 3)), np.ones((2, 3)), 0.9)
    assert s.score_all(np.zeros(0, dtype=int), np.ones((0, 3)), np.ones((0, 3)),
                       0.9)[0].shape == (0, 3)

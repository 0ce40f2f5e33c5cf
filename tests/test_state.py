"""Observation encoding: bin edges as documented, and a lossless flat index."""

from __future__ import annotations

import numpy as np
import pytest

from autoscale_env.world.config import load_features, load_workloads
from autoscale_env.world.observation import StateEncoder, bin_values


@pytest.fixture(scope="module")
def encoder():
    return StateEncoder(load_features(), tuple(load_workloads().values()))


def test_default_bins_are_the_papers_1024_states(encoder):
    assert encoder.nvec.tolist() == [4, 2, 2, 4, 4, 2, 2]
    assert encoder.n_states == 1024
    assert encoder.names == ("conv", "fc", "rc", "co_cpu", "co_mem", "rssi_wifi", "rssi_p2p")


def test_flat_index_round_trips_every_state(encoder):
    seen = set()
    for index in range(encoder.n_states):
        obs = encoder.unflatten(index)
        assert encoder.flat_index(obs) == index
        seen.add(tuple(obs))
    assert len(seen) == encoder.n_states


@pytest.mark.parametrize("name, values, bins", [
    ("conv", [0, 1, 29, 30, 59, 60, 94], [0, 1, 1, 2, 2, 3, 3]),
    ("fc", [0, 9, 10, 362], [0, 0, 1, 1]),
    ("rc", [0, 1, 4], [0, 1, 1]),
    ("co_cpu", [0.0, 0.4, 0.5, 24.9, 25.0, 74.9, 75.0, 100.0], [0, 0, 1, 1, 2, 2, 3, 3]),
    ("rssi_wifi", [-40.0, -79.9, -80.0, -80.1, -95.0], [0, 0, 1, 1, 1]),
])
def test_bin_edges(name, values, bins):
    spec = next(f for f in load_features() if f.name == name)
    assert bin_values(spec, np.array(values)).tolist() == bins


def test_workload_features_of_the_catalog(encoder):
    names = list(load_workloads())
    obs = encoder._workload_bins
    row = {n: obs[i, :3].tolist() for i, n in enumerate(names)}
    assert row["mnv1"] == [1, 0, 0]
    assert row["incv3"] == [3, 0, 0]
    assert row["mbert"] == [0, 1, 0]
    assert row["lstm_nmt"] == [0, 0, 1]  # the recurrent workload makes `rc` fire


def test_describe_labels(encoder):
    labels = encoder.describe(np.array([3, 0, 0, 0, 3, 1, 0]))
    assert labels == {"conv": ">=60", "fc": "<10", "rc": "none", "co_cpu": "0%",
                      "co_mem": ">=75%", "rssi_wifi": "weak", "rssi_p2p": "regular"}

"""fit-bins: the state ceiling it maximises, the features file it writes, the bundled result."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest

from autoscale_env.world import config

from autoscale_env.tools import fit_bins
from autoscale_env.tools.fit_bins import Samples


def synthetic():
    # two networks with 52 vs 94 CONV layers; the best action depends on the layer count and on
    # whether Wi-Fi is above -70 dBm
    rng = np.random.default_rng(0)
    n = 4000
    raw = np.zeros((n, 7))
    raw[:, 0] = rng.choice([52, 94], n)
    raw[:, 1] = 1
    raw[:, 5] = rng.uniform(-85, -45, n)
    raw[:, 6] = -50
    oracle = np.where(raw[:, 0] == 94, np.where(raw[:, 5] > -70, 2, 1), 0)
    return Samples(raw, oracle, np.zeros(n, dtype=np.int64), [("mi8pro", "non_streaming", "static")])


def test_ceiling_is_the_share_of_each_states_most_frequent_oracle_action():
    s = synthetic()
    coarse = [[1], [10], [1], [0.5], [0.5], [-80], [-80]]
    # conv not split: the two networks alias, and in each Wi-Fi bin the 52-layer network's action
    # (half of the requests) is the most frequent one
    per_state = []
    for strong in (True, False):
        sel = (s.raw[:, 5] > -80) == strong
        per_state.append(np.bincount(s.oracle[sel]).max())
    assert fit_bins.ceilings(s, coarse)[0] == pytest.approx(sum(per_state) / len(s.oracle))
    assert fit_bins.ceilings(s, coarse)[0] == pytest.approx(0.5, abs=0.03)
    exact = [[1, 94], [10], [1], [0.5], [0.5], [-70], [-80]]
    assert fit_bins.ceilings(s, exact)[0] == pytest.approx(1.0)


def test_greedy_fit_finds_the_edges_that_decide():
    s = synthetic()
    edges, history = fit_bins.fit(s, [[1], [10], [1], [0.5], [0.5], [-80], [-80]], min_gain=0.01)
    assert history[-1] == pytest.approx(1.0) and history == sorted(history)
    assert 94.0 in edges[0] or any(52 < e <= 94 for e in edges[0])
    assert any(-71 <= e <= -70 for e in edges[5])


def test_written_features_file_loads_with_the_same_edges(tmp_path):
    edges = [[1, 30], [10], [1], [0.5, 25], [0.5], [-80, -70], [-80]]
    path = tmp_path / "f.toml"
    path.write_text(fit_bins.features_toml(edges, "# test"))
    specs = config.load_features(str(path))
    assert [list(s.edges) for s in specs] == edges
    assert [s.descending for s in specs] == [False] * 5 + [True] * 2


def test_cli_writes_a_file_and_refuses_to_overwrite_it(tmp_path, capsys):
    from agents.cli import main
    out = tmp_path / "fitted.toml"
    args = ["fit-bins", "--device", "mi8pro", "--scenario", "translation", "--setting", "static",
            "--seeds", "1", "--requests", "300", "--out", str(out), "--quiet"]
    assert main(args) == 0
    text = capsys.readouterr().out
    assert "| mi8pro | translation | static |" in text and out.exists()
    assert "Made by: autoscale fit-bins" in out.read_text()
    assert main(args) == 2
    assert "exists" in capsys.readouterr().err


def test_bundled_fitted_features_keep_the_seven_features_and_run():
    specs = config.load_features("fitted")
    assert [s.field for s in specs] == list(fit_bins.FIELDS)
    assert "Made by: autoscale fit-bins" in config.resolve_features_path("fitted").read_text()
    env = gym.make("AutoScale-v0", features="fitted")
    obs, _ = env.reset(seed=0)
    assert env.observation_space.contains(obs)

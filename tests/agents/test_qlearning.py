"""The paper's Q-learner: learns, decides cheaply, saves without pickle, refuses bad files."""

from __future__ import annotations

import json
import zipfile

import gymnasium as gym
import numpy as np
import pytest

from agents.qlearning import QLearningAgent
from autoscale_env.world.errors import ModelFileError


def make(**kw):
    return gym.make("AutoScale-v0", **{"scenario": "translation", "setting": "static", **kw})


def test_defaults_are_the_papers():
    agent = QLearningAgent(make())
    assert (agent.config.alpha, agent.config.gamma, agent.config.epsilon) == (0.9, 0.1, 0.1)
    assert agent.q.shape == (1024, 9) and not agent.q.any()
    assert agent.nbytes == 1024 * 9 * 4


def test_learns_to_beat_random_and_approach_the_oracle():
    agent = QLearningAgent(make(), seed=0).learn(20_000)
    env = make()
    obs, info = env.reset(seed=99)
    matches = n = 0
    for _ in range(2000):
        oracle = env.unwrapped.oracle_action()
        action, _ = agent.predict(obs)
        matches += action == oracle
        n += 1
        obs, _, _, trunc, info = env.step(action)
        if trunc:
            obs, info = env.reset()
    assert matches / n > 0.8  # random would match ~11 %


def test_same_seed_same_table_bit_for_bit():
    a = QLearningAgent(make(setting="dynamic"), seed=3).learn(5_000).q
    b = QLearningAgent(make(setting="dynamic"), seed=3).learn(5_000).q
    c = QLearningAgent(make(setting="dynamic"), seed=4).learn(5_000).q
    assert a.tobytes() == b.tobytes() and a.tobytes() != c.tobytes()


def test_learning_in_two_calls_equals_one_call():
    a = QLearningAgent(make(setting="dynamic"), seed=1).learn(3_000)
    b = QLearningAgent(make(setting="dynamic"), seed=1).learn(1_300)
    b.learn(1_700)
    assert a.q.tobytes() == b.q.tobytes()


def test_update_is_the_q_learning_rule():
    agent = QLearningAgent(make())
    agent.q[5, 2] = -1.0
    agent.q[7] = [-3.0, -2.0] + [-5.0] * 7
    agent.update(5, 2, -0.5, 7)
    assert agent.q[5, 2] == pytest.approx(-1.0 + 0.9 * (-0.5 + 0.1 * -2.0 + 1.0))


def test_save_load_round_trip_gives_same_greedy_actions(tmp_path):
    env = make(setting="dynamic")
    agent = QLearningAgent(env, seed=0).learn(4_000)
    path = tmp_path / "model.npz"
    agent.save(path)
    with zipfile.ZipFile(path) as z:
        assert sorted(z.namelist()) == ["meta.npy", "q.npy"]
    with np.load(path, allow_pickle=False) as data:  # no object arrays: loads without pickle
        meta = json.loads(str(data["meta"]))
    assert meta["targets"][0] == "local/cpu/fp32" and meta["hyperparameters"]["alpha"] == 0.9
    loaded = QLearningAgent.load(path, env=make(setting="dynamic"))
    assert loaded.q.tobytes() == agent.q.tobytes()
    for s in range(0, 1024, 37):
        obs = agent.encoder.unflatten(s)
        assert loaded.predict(obs)[0] == agent.predict(obs)[0]


def test_loading_into_another_device_is_refused(tmp_path):
    path = tmp_path / "model.npz"
    QLearningAgent(make()).save(path)
    with pytest.raises(ModelFileError, match=f"{path}.*targets"):
        QLearningAgent.load(path, env=make(device="moto_x_force"))


@pytest.mark.parametrize("content", [b"", b"junk" * 100, b"PK\x03\x04 truncated zip"])
def test_junk_files_raise_an_error_naming_the_file(tmp_path, content):
    path = tmp_path / "model.npz"
    path.write_bytes(content)
    with pytest.raises(ModelFileError, match=str(path)):
        QLearningAgent.load(path, env=make())


def test_truncated_model_file_is_refused(tmp_path):
    path = tmp_path / "model.npz"
    QLearningAgent(make()).learn(500).save(path)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(ModelFileError, match=str(path)):
        QLearningAgent.load(path, env=make())


def test_missing_file_is_refused(tmp_path):
    with pytest.raises(ModelFileError, match="no such model file"):
        QLearningAgent.load(tmp_path / "nope.npz", env=make())


def test_export_json_is_a_plain_policy(tmp_path):
    agent = QLearningAgent(make(), seed=0).learn(3_000)
    agent.export_json(tmp_path / "policy.json")
    doc = json.loads((tmp_path / "policy.json").read_text())
    assert doc["targets"] == agent.target_names and len(doc["policy"]) == 1024
    visited = [v for v in doc["policy"].values() if v is not None]
    assert visited and set(visited) <= set(agent.target_names)
    s = next(int(k) for k, v in doc["policy"].items() if v is not None)
    assert doc["policy"][str(s)] == agent.target_names[agent.predict(agent.encoder.unflatten(s))[0]]


def test_unknown_hyperparameter_is_refused():
    with pytest.raises(ValueError, match="alpah"):
        QLearningAgent(make(), alpah=0.5)

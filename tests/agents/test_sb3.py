"""DQN / PPO / A2C through the common interface (needs the [sb3] extra)."""

from __future__ import annotations

import os

import gymnasium as gym
import pytest

pytest.importorskip("stable_baselines3")

from agents import make_agent  # noqa: E402
from agents.experiments.benchmark import BenchmarkConfig, ResultStore, grid, run  # noqa: E402
from agents.sb3 import DQNAgent, PPOAgent, default_hyperparameters  # noqa: E402
from autoscale_env.world.errors import ModelFileError  # noqa: E402


def test_hyperparameters_come_from_the_data_file_and_can_be_overridden():
    assert default_hyperparameters("dqn")["gamma"] == 0.1
    agent = make_agent("dqn", gym.make("AutoScale-v0"), seed=0, learning_rate=0.005)
    assert agent.hparams["learning_rate"] == 0.005
    with pytest.raises(ValueError, match="lerning_rate"):
        make_agent("ppo", gym.make("AutoScale-v0"), lerning_rate=1)


@pytest.mark.slow
def test_saved_model_loads_back_with_the_same_greedy_actions(tmp_path):
    env = gym.make("AutoScale-v0", setting="static")
    agent = make_agent("dqn", env, seed=0, learning_starts=100).learn(600)
    agent.save(str(tmp_path / "dqn.zip"))
    loaded = DQNAgent.load(str(tmp_path / "dqn.zip"), env=gym.make("AutoScale-v0", setting="static"))
    for s in range(0, 1024, 41):
        obs = env.unwrapped.encoder.unflatten(s)
        assert loaded.predict(obs)[0] == agent.predict(obs)[0]


def test_model_for_another_device_is_refused(tmp_path):
    agent = make_agent("ppo", gym.make("AutoScale-v0"), seed=0, n_steps=64)
    agent.save(str(tmp_path / "ppo.zip"))
    with pytest.raises(ModelFileError, match="targets"):
        PPOAgent.load(str(tmp_path / "ppo.zip"), env=gym.make("AutoScale-v0", device="moto_x_force"))


@pytest.mark.slow
def test_sb3_runs_share_the_oracle_match_tag_with_the_q_learner(tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    cfg = BenchmarkConfig(train_steps=1024, eval_steps=200, log_interval=512,
                          hyperparameters={"ppo": {"n_steps": 256}, "a2c": {}})
    run(grid(["qlearning", "ppo", "a2c"], ["mi8pro"], ["translation"], ["static"], 1), cfg,
        ResultStore(tmp_path), progress=False)
    tags = {}
    for run_dir in (tmp_path / "tb").iterdir():
        ea = EventAccumulator(str(run_dir))
        ea.Reload()
        tags[run_dir.name.split("__")[3]] = set(ea.Tags()["scalars"])
    for agent in ("qlearning", "ppo", "a2c"):
        assert {"autoscale/oracle_match", "eval/oracle_match"} <= tags[agent]
    sb3_runs = list((tmp_path / "tb").glob("*ppo*/ppo_*"))
    assert sb3_runs, "SB3's own training scalars are written beside ours"


def test_an_interrupted_save_keeps_the_previous_model(tmp_path):
    pytest.importorskip("stable_baselines3")
    import gymnasium as gym

    from agents.sb3 import PPOAgent
    agent = PPOAgent(gym.make("AutoScale-v0"), seed=0)
    path = tmp_path / "model.zip"
    agent.save(str(path))
    before = path.read_bytes(), (tmp_path / "model.zip.meta.json").read_bytes()

    def killed_midway(target, *args, **kwargs):  # SB3 wrote part of its zip, then Ctrl-C
        if isinstance(target, (str, os.PathLike)):
            with open(target, "wb") as f:
                f.write(b"PK\x03\x04 torn")
        else:
            target.write(b"PK\x03\x04 torn")
        raise KeyboardInterrupt
    agent.model.save = killed_midway
    with pytest.raises(KeyboardInterrupt):
        agent.save(str(path))
    assert (path.read_bytes(), (tmp_path / "model.zip.meta.json").read_bytes()) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.zip", "model.zip.meta.json"]


def test_learning_without_tensorboard_leaves_no_folder_in_the_temporary_directory(
        tmp_path, monkeypatch):
    import tempfile
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    monkeypatch.delenv("SB3_LOGDIR", raising=False)
    make_agent("a2c", gym.make("AutoScale-v0"), seed=0, n_steps=8).learn(16)
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith("SB3-")] == []

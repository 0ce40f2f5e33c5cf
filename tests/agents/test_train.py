"""``autoscale train``: saved model, TensorBoard logs, checkpoints, exact resume."""

from __future__ import annotations

import numpy as np
import pytest

import re

from agents.experiments.train import latest_checkpoint, model_steps, train


def q_of(path):
    with np.load(path, allow_pickle=False) as d:
        return d["q"].tobytes()


def test_train_saves_model_policy_and_logs(tmp_path):
    path = train(agent="qlearning", steps=3_000, seed=1, out=tmp_path, progress=False)
    assert path.name == "model.npz" and (tmp_path / "policy.json").exists()
    assert list((tmp_path / "tb").rglob("events.out.tfevents.*"))


def test_refuses_to_overwrite_without_force(tmp_path):
    train(steps=200, out=tmp_path, progress=False)
    with pytest.raises(FileExistsError, match="--force"):
        train(steps=200, out=tmp_path, progress=False)


def test_checkpointed_run_resumed_after_interruption_matches_uninterrupted(tmp_path):
    full = train(steps=3_000, seed=2, setting="dynamic", out=tmp_path / "full", progress=False)
    part = tmp_path / "part"
    train(steps=1_700, seed=2, setting="dynamic", out=part, checkpoint_every=500, progress=False)
    # as if killed after the checkpoint at 1500: drop the final model, resume to 3000
    (part / "model.npz").unlink()
    assert latest_checkpoint(part / "checkpoints").name == "ckpt-000000001500.npz"
    resumed = train(steps=3_000, seed=2, setting="dynamic", out=part, checkpoint_every=500,
                    resume=True, progress=False)
    assert q_of(resumed) == q_of(full)


@pytest.mark.slow
def test_sb3_agent_checkpoints_and_resumes(tmp_path):
    pytest.importorskip("stable_baselines3")
    from agents.experiments.train import latest_sb3_checkpoint
    train(agent="dqn", steps=800, out=tmp_path, checkpoint_every=300,
          hyperparameters={"learning_starts": 100}, progress=False)
    newest = latest_sb3_checkpoint(tmp_path / "checkpoints")
    assert newest.name == "ckpt-000000000600"
    assert (tmp_path / "checkpoints" / "ckpt-000000000600.buffer.npz").exists()
    (tmp_path / "model.zip").unlink()
    path = train(agent="dqn", steps=1200, out=tmp_path, checkpoint_every=300, resume=True,
                 hyperparameters={"learning_starts": 100}, progress=False)
    from agents.sb3 import DQNAgent
    import gymnasium as gym
    loaded = DQNAgent.load(str(path), env=gym.make("AutoScale-v0"))
    assert loaded.num_timesteps == 1200


# ---- resume refuses another run, and never shortens a finished model ----

from agents.experiments.train import RunMismatch  # noqa: E402


@pytest.mark.parametrize("change, field", [
    ({"seed": 5}, "seed: 1 -> 5"),
    ({"device": "galaxy_s10e"}, 'device: "mi8pro" -> "galaxy_s10e"'),
    ({"scenario": "streaming"}, 'scenario: "non_streaming" -> "streaming"'),
    ({"setting": "static"}, 'setting: "dynamic" -> "static"'),
    ({"hyperparameters": {"epsilon": 0.3}}, "hyperparameters.epsilon: 0.1 -> 0.3"),
    ({"features": "per_network"}, 'features.name: "paper" -> "per_network"'),
])
def test_resume_refuses_a_checkpoint_of_another_run(tmp_path, change, field):
    base = dict(agent="qlearning", steps=700, seed=1, out=tmp_path, checkpoint_every=300,
                progress=False)
    train(**base)
    (tmp_path / "model.npz").unlink()  # as if killed after a checkpoint
    before = sorted(p.name for p in (tmp_path / "checkpoints").iterdir())
    with pytest.raises(RunMismatch, match=re.escape(field)):
        train(**{**base, "steps": 1400, **change}, resume=True)
    assert sorted(p.name for p in (tmp_path / "checkpoints").iterdir()) == before
    assert not (tmp_path / "model.npz").exists()


def test_resume_never_replaces_a_longer_trained_model(tmp_path):
    model = train(steps=1_200, seed=3, out=tmp_path, checkpoint_every=500, progress=False)
    saved = model.read_bytes()
    with pytest.raises(RunMismatch, match=r"trained for 1200 steps, more than --steps 1000"):
        train(steps=1_000, seed=3, out=tmp_path, checkpoint_every=500, resume=True,
              progress=False)
    assert model.read_bytes() == saved
    # the same length: already done, untouched
    assert train(steps=1_200, seed=3, out=tmp_path, checkpoint_every=500, resume=True,
                 progress=False) == model
    assert model.read_bytes() == saved
    # --force is the way to replace it
    train(steps=1_000, seed=3, out=tmp_path, force=True, progress=False)
    assert model_steps(model) == 1_000


def test_resume_without_checkpoints_keeps_a_finished_model(tmp_path):
    model = train(steps=2_000, seed=4, out=tmp_path, progress=False)
    saved = model.read_bytes()
    for steps in (1_000, 3_000):  # shorter, or longer with nothing to continue from
        with pytest.raises(RunMismatch):
            train(steps=steps, seed=4, out=tmp_path, resume=True, progress=False)
        assert model.read_bytes() == saved


def test_sb3_checkpoint_keeps_the_replay_buffer_without_pickle(tmp_path):
    pytest.importorskip("stable_baselines3")
    import gymnasium as gym

    from agents.sb3 import DQNAgent, restore_sb3_checkpoint, write_sb3_checkpoint
    env = gym.make("AutoScale-v0")
    agent = DQNAgent(env, seed=0, learning_starts=50, buffer_size=1_000)
    agent.learn(300)
    write_sb3_checkpoint(agent, tmp_path / "ckpt-300")
    names = sorted(p.name for p in tmp_path.iterdir())
    assert names == ["ckpt-300.buffer.npz", "ckpt-300.zip", "ckpt-300.zip.meta.json"]
    with np.load(tmp_path / "ckpt-300.buffer.npz", allow_pickle=False) as d:  # no pickle inside
        assert int(d["pos"]) == 300
    restored = restore_sb3_checkpoint(DQNAgent, tmp_path / "ckpt-300", gym.make("AutoScale-v0"))
    a, b = agent.model.replay_buffer, restored.model.replay_buffer
    assert b.pos == a.pos == 300 and b.full == a.full
    assert np.array_equal(a.observations, b.observations) and np.array_equal(a.rewards, b.rewards)

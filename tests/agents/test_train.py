"""``autoscale train``: saved model, TensorBoard logs, checkpoints, exact resume."""

from __future__ import annotations

import numpy as np
import pytest

from agents.train import latest_checkpoint, train


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
    from agents.train import latest_sb3_checkpoint
    train(agent="dqn", steps=800, out=tmp_path, checkpoint_every=300,
          hyperparameters={"learning_starts": 100}, progress=False)
    newest = latest_sb3_checkpoint(tmp_path / "checkpoints")
    assert newest.name == "ckpt-000000000600"
    assert (tmp_path / "checkpoints" / "ckpt-000000000600.buffer.pkl").exists()
    (tmp_path / "model.zip").unlink()
    path = train(agent="dqn", steps=1200, out=tmp_path, checkpoint_every=300, resume=True,
                 hyperparameters={"learning_starts": 100}, progress=False)
    from agents.sb3 import DQNAgent
    import gymnasium as gym
    loaded = DQNAgent.load(str(path), env=gym.make("AutoScale-v0"))
    assert loaded.num_timesteps == 1200

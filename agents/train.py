"""Train one agent on one cell, with TensorBoard logs, atomic checkpoints and exact resume."""

from __future__ import annotations

import json
import logging
import math
import os
import re
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np

import autoscale_env
from agents import make_agent
from agents.evaluation import TrainingMonitor
from agents.tracking import ScalarWriter, run_name
from autoscale_env.files import atomic_write

logger = logging.getLogger(__name__)


def model_filename(agent: str) -> str:
    """Where ``train`` saves each kind of agent."""
    if agent == "qlearning":
        return "model.npz"
    if agent in ("dqn", "ppo", "a2c"):
        return "model.zip"
    return "model.json"


def train(*, agent: str = "qlearning", device: str = "mi8pro", scenario: str = "non_streaming",
          setting: str = "dynamic", steps: int = 64_000, seed: int = 0, out: str | Path = "runs/train",
          hyperparameters: dict[str, Any] | None = None, checkpoint_every: int = 0,
          resume: bool = False, force: bool = False, progress: bool = True,
          log_interval: int = 1_000, features: str | None = None) -> Path:
    """Train ``agent`` for ``steps`` requests and save it under ``out``; returns the model path.

    With ``checkpoint_every`` > 0 an atomic checkpoint is written every that many steps (rounded up
    to whole episodes, because a checkpoint is taken on an episode boundary where the env's whole
    state is its random generator). ``resume`` continues from the newest checkpoint and ends with
    exactly the model an uninterrupted run would have produced. ``features`` picks the state
    definition (``paper``, ``per_network`` or a path; see ``AutoScaleEnv``).
    """
    out = Path(out)
    model_path = out / model_filename(agent)
    if model_path.exists() and not (force or resume):
        raise FileExistsError(f"{model_path} already exists; pass --force to overwrite or --resume")
    out.mkdir(parents=True, exist_ok=True)
    env = gym.make("AutoScale-v0", device=device, scenario=scenario, setting=setting,
                   features=features)
    learner = make_agent(agent, env, seed=seed, **(hyperparameters or {}))
    ckpt_dir = out / "checkpoints"
    sb3 = agent in ("dqn", "ppo", "a2c")
    if resume:
        if sb3:
            newest_sb3 = latest_sb3_checkpoint(ckpt_dir)
            if newest_sb3 is not None:
                from agents.sb3 import restore_sb3_checkpoint
                learner = restore_sb3_checkpoint(type(learner), newest_sb3, env)
        else:
            newest = latest_checkpoint(ckpt_dir)
            if newest is not None:
                restore_checkpoint(learner, env, newest)
                logger.info("resumed from %s at step %d", newest, learner.num_timesteps)
    elif force:
        for old in ckpt_dir.glob("ckpt-*"):
            old.unlink()
    writer = ScalarWriter(out / "tb" / run_name(agent, device, scenario, setting, seed))
    monitor = TrainingMonitor(writer, log_interval)
    monitor.step = getattr(learner, "num_timesteps", 0)
    episode = env.spec.max_episode_steps or 1
    chunk = steps
    if checkpoint_every > 0:
        chunk = math.ceil(checkpoint_every / episode) * episode
    done = getattr(learner, "num_timesteps", 0)
    while done < steps:
        n = min(chunk, steps - done)
        learner.learn(n, callback=monitor, progress_bar=progress)
        done = getattr(learner, "num_timesteps", done + n)
        if checkpoint_every > 0 and done < steps:
            if sb3:
                from agents.sb3 import write_sb3_checkpoint
                ckpt_dir.mkdir(parents=True, exist_ok=True)
                write_sb3_checkpoint(learner, ckpt_dir / f"ckpt-{done:012d}")
            else:
                write_checkpoint(learner, env, ckpt_dir / f"ckpt-{done:012d}.npz")
    monitor.flush()
    writer.close()
    learner.save(str(model_path))
    if hasattr(learner, "export_json"):
        learner.export_json(out / "policy.json")
    env.close()
    return model_path


# ---- checkpoints (Q-learner) ---------------------------------------------------------------


def write_checkpoint(learner: Any, env: gym.Env, path: Path) -> None:
    """Atomically write the learner and every random generator's state to ``path``."""
    if not hasattr(learner, "checkpoint_state"):
        raise NotImplementedError(f"{type(learner).__name__} cannot checkpoint")
    if not learner.at_episode_boundary:
        raise RuntimeError("checkpoints are only taken on episode boundaries")
    state = learner.checkpoint_state()
    state["env_rng"] = env.unwrapped.np_random.bit_generator.state
    state["package_version"] = autoscale_env.__version__
    atomic_write(path, lambda f: np.savez(f, q=learner.q, state=np.array(json.dumps(state))))


def latest_checkpoint(directory: Path) -> Path | None:
    """The checkpoint with the most steps in ``directory`` (None if there is none)."""
    found = [p for p in directory.glob("ckpt-*.npz") if re.fullmatch(r"ckpt-\d+\.npz", p.name)]
    return max(found, key=lambda p: int(p.stem.split("-")[1])) if found else None


def latest_sb3_checkpoint(directory: Path) -> Path | None:
    """Prefix of the newest SB3 checkpoint (``ckpt-N`` of ``ckpt-N.zip``) in ``directory``."""
    found = [p for p in directory.glob("ckpt-*.zip") if re.fullmatch(r"ckpt-\d+\.zip", p.name)]
    if not found:
        return None
    newest = max(found, key=lambda p: int(p.name[5:-4]))
    return newest.with_suffix("")


def restore_checkpoint(learner: Any, env: gym.Env, path: Path) -> None:
    """Load a checkpoint written by :func:`write_checkpoint` into ``learner`` and ``env``."""
    from autoscale_env.errors import ModelFileError
    try:
        with np.load(path, allow_pickle=False) as data:
            q = np.array(data["q"])
            state = json.loads(str(data["state"]))
    except Exception as e:  # any unreadable checkpoint is reported the same way
        raise ModelFileError(f"{path}: unreadable checkpoint ({type(e).__name__}: {e})") from None
    if q.shape != learner.q.shape:
        raise ModelFileError(f"{path}: q shape {q.shape} does not match {learner.q.shape}")
    learner.q[...] = q
    learner.restore_state(state)
    rng = np.random.default_rng()
    rng.bit_generator.state = state["env_rng"]
    env.unwrapped.np_random = rng

"""Train one agent on one cell, with TensorBoard logs, atomic checkpoints and exact resume."""

from __future__ import annotations

import json
import logging
import math
import hashlib
import re
from dataclasses import asdict, is_dataclass
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np

import autoscale_env
from agents import agent_class, make_agent
from agents.experiments.evaluation import TrainingMonitor
from agents.experiments.tracking import ScalarWriter, run_name
from autoscale_env.world.config import FEATURE_SETS, resolve_features_path
from autoscale_env.world.errors import AutoScaleError, ModelFileError
from autoscale_env.world.files import atomic_write, load_json, load_npz

logger = logging.getLogger(__name__)


def model_filename(agent: str) -> str:
    """Where ``train`` saves each kind of agent."""
    if agent == "qlearning" or agent_class(agent).__module__ in ("agents.bandits", "agents.predictor"):
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

    What shapes the run (agent, device, scenario, setting, seed, features, resolved
    hyperparameters) is written to ``run.json`` in ``out``; without ``force``, a run into a
    directory made with another of them is refused (:class:`RunMismatch`, naming the fields), and
    so is replacing a model trained for more steps than ``steps``. ``resume`` with a finished
    model of exactly ``steps`` returns it untouched.
    """
    out = Path(out)
    model_path = out / model_filename(agent)
    if model_path.exists() and not (force or resume):
        raise FileExistsError(f"{model_path} already exists; pass --force to overwrite or --resume")
    out.mkdir(parents=True, exist_ok=True)
    env = gym.make("AutoScale-v0", device=device, scenario=scenario, setting=setting,
                   features=features, **getattr(agent_class(agent), "env_kwargs", {}))
    learner = make_agent(agent, env, seed=seed, **(hyperparameters or {}))
    ckpt_dir = out / "checkpoints"
    sb3 = agent in ("dqn", "ppo", "a2c")
    identity = run_identity(learner, agent=agent, device=device, scenario=scenario,
                            setting=setting, seed=seed, features=features)
    if not force:
        finished = _check_previous(out, model_path, ckpt_dir, identity, steps, resume, sb3)
        if finished:
            env.close()
            return model_path
    else:
        (out / RUN_FILE).unlink(missing_ok=True)
    atomic_write(out / RUN_FILE, json.dumps(identity, indent=1, sort_keys=True) + "\n")
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
    if writer.enabled and hasattr(learner, "tensorboard_log"):
        learner.tensorboard_log = str(writer.logdir)  # SB3's own train/* scalars, beside ours
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


# ---- what a run is, and what a rerun may touch ------------------------------------------------

#: The run description beside the model and checkpoints.
RUN_FILE = "run.json"


class RunMismatch(AutoScaleError, ValueError):
    """``train`` into a directory holding another run's model or checkpoints."""


def run_identity(learner: Any, *, agent: str, device: str, scenario: str, setting: str,
                 seed: int, features: str | None) -> dict[str, Any]:
    """Everything that makes two training runs the same run (JSON data)."""
    if hasattr(learner, "config") and is_dataclass(learner.config):
        hp = asdict(learner.config)
    else:
        hp = dict(getattr(learner, "hparams", {}) or {})
    feats: dict[str, Any] = {"name": features or "paper"}
    if features and features not in FEATURE_SETS:
        path = resolve_features_path(features)
        feats = {"path": str(path.resolve()),
                 "sha256": hashlib.sha256(path.read_bytes()).hexdigest()}
    return json.loads(json.dumps({
        "agent": agent, "device": device, "scenario": scenario, "setting": setting,
        "seed": int(seed), "features": feats, "hyperparameters": hp,
        "package_version": autoscale_env.__version__}, default=str))


def model_steps(path: Path) -> int | None:
    """Training steps recorded in a saved model (None when the file does not say)."""
    try:
        if path.suffix == ".npz":
            from agents.qlearning import read_model_file
            steps = read_model_file(str(path))[1].get("num_timesteps")
        elif path.suffix == ".zip":
            steps = load_json(Path(f"{path}.meta.json"), ModelFileError,
                              what="model description").get("num_timesteps")
        else:
            return 0  # baselines do not train
    except (OSError, ValueError, AutoScaleError):
        return None
    return steps if isinstance(steps, int) and not isinstance(steps, bool) else None


def _check_previous(out: Path, model_path: Path, ckpt_dir: Path, identity: dict[str, Any],
                    steps: int, resume: bool, sb3: bool) -> bool:
    """Refuse to mix this run with another one in ``out``; True if the model is already done."""
    run_file = out / RUN_FILE
    newest = latest_sb3_checkpoint(ckpt_dir) if sb3 else latest_checkpoint(ckpt_dir)
    if run_file.exists():
        from agents.experiments.benchmark import recorded_differences
        diffs = recorded_differences(run_file, identity, RunMismatch)
        if diffs:
            raise RunMismatch(
                f"{out} holds a run with another configuration; differing fields (recorded -> "
                f"this run): {'; '.join(diffs)}. Use another --out, or --force to replace it")
    elif newest is not None or model_path.exists():
        raise RunMismatch(f"{out} holds a model or checkpoints without {RUN_FILE} (an older "
                          f"version), so they cannot be checked against this run; use another "
                          f"--out, or --force to replace them")
    if newest is not None:
        at = int(newest.name.split("-")[1].split(".")[0])
        if at > steps:
            raise RunMismatch(f"{newest}: a checkpoint at step {at}, beyond --steps {steps}; "
                              f"pass a larger --steps, or --force to start over")
    if resume and model_path.exists():
        have = model_steps(model_path)
        if have is None or have > steps:
            raise RunMismatch(f"{model_path} holds a model trained for "
                              f"{'an unknown number of' if have is None else have} steps, more "
                              f"than --steps {steps}; pass --force to replace it")
        if have == steps:
            logger.warning("%s is already trained for %d steps; nothing to do", model_path, steps)
            return True
        if newest is None:
            raise RunMismatch(f"{model_path} holds a model trained for {have} steps and there is "
                              f"no checkpoint to continue from; pass --force to retrain it from "
                              f"scratch")
    return False


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
    from agents.qlearning import json_metadata
    from autoscale_env.world.errors import ModelFileError
    data = load_npz(path, ModelFileError)  # sizes and shapes checked before any allocation
    if "q" not in data or "state" not in data:
        raise ModelFileError(f"{path}: unreadable checkpoint (needs arrays 'q' and 'state')")
    q = data["q"]
    state = json_metadata(data["state"], str(path), "state")
    if not isinstance(state, dict):
        raise ModelFileError(f"{path}: checkpoint 'state' must be a JSON object")
    if q.shape != learner.q.shape:
        raise ModelFileError(f"{path}: q shape {q.shape} does not match {learner.q.shape}")
    learner.q[...] = q
    learner.restore_state(state)
    rng = np.random.default_rng()
    rng.bit_generator.state = state["env_rng"]
    env.unwrapped.np_random = rng

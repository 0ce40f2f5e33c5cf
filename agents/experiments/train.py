"""Train one agent on one cell, with TensorBoard logs, atomic checkpoints and exact resume."""

from __future__ import annotations

import json
import logging
import math
import hashlib
import re
from pathlib import Path
from typing import TYPE_CHECKING, Any

import gymnasium as gym

import autoscale_env
from agents import agent_class, make_agent
from agents.experiments.evaluation import TrainingMonitor
from agents.experiments.tracking import ScalarWriter, run_name
from autoscale_env.world.config import FEATURE_SETS, resolve_features_path
from autoscale_env.world.errors import AutoScaleError
from autoscale_env.world.files import atomic_write

if TYPE_CHECKING:
    from agents.base import Agent

logger = logging.getLogger(__name__)


def model_filename(agent: str) -> str:
    """Where ``train`` saves each kind of agent: ``model`` + the class's ``model_suffix``."""
    return "model" + agent_class(agent).model_suffix


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
    cls = agent_class(agent)
    model_path = out / model_filename(agent)
    if model_path.exists() and not (force or resume):
        raise FileExistsError(f"{model_path} already exists; pass --force to overwrite or --resume")
    out.mkdir(parents=True, exist_ok=True)
    env = gym.make("AutoScale-v0", device=device, scenario=scenario, setting=setting,
                   features=features, **cls.env_kwargs)
    learner = make_agent(agent, env, seed=seed, **(hyperparameters or {}))
    ckpt_dir = out / "checkpoints"
    if checkpoint_every > 0 and not cls.checkpoints:
        env.close()
        raise RunMismatch(f"agent {agent!r} cannot checkpoint; drop --checkpoint-every")
    identity = run_identity(learner, agent=agent, device=device, scenario=scenario,
                            setting=setting, seed=seed, features=features)
    if not force:
        finished = _check_previous(out, model_path, ckpt_dir, identity, steps, resume,
                                   cls.checkpoint_suffix)
        if finished:
            env.close()
            return model_path
    else:
        (out / RUN_FILE).unlink(missing_ok=True)
    atomic_write(out / RUN_FILE, json.dumps(identity, indent=1, sort_keys=True) + "\n")
    if resume and cls.checkpoints:
        newest = latest_checkpoint(ckpt_dir, cls.checkpoint_suffix)
        if newest is not None:
            learner = learner.restore_checkpoint(newest.with_suffix(""))
            logger.info("resumed from %s at step %d", newest, learner.num_timesteps)
    elif force:
        for old in ckpt_dir.glob("ckpt-*"):
            old.unlink()
    writer = ScalarWriter(out / "tb" / run_name(agent, device, scenario, setting, seed))
    if writer.enabled and cls.tensorboard:
        learner.tensorboard_log = str(writer.logdir)  # e.g. SB3's own train/* scalars, beside ours
    monitor = TrainingMonitor(writer, log_interval)
    monitor.step = learner.num_timesteps
    episode = env.spec.max_episode_steps or 1
    chunk = steps
    if checkpoint_every > 0:
        chunk = math.ceil(checkpoint_every / episode) * episode
    done = learner.num_timesteps
    while done < steps:
        n = min(chunk, steps - done)
        learner.learn(n, callback=monitor, progress_bar=progress)
        # an agent that does not count its steps (a fixed policy) has still done them
        done = max(learner.num_timesteps, done + n)
        if checkpoint_every > 0 and done < steps:
            ckpt_dir.mkdir(parents=True, exist_ok=True)
            learner.write_checkpoint(ckpt_dir / f"ckpt-{done:012d}")
    monitor.flush()
    writer.close()
    learner.save(str(model_path))
    if cls.exports_policy:
        learner.export_json(out / "policy.json")
    env.close()
    return model_path


# ---- what a run is, and what a rerun may touch ------------------------------------------------

#: The run description beside the model and checkpoints.
RUN_FILE = "run.json"


class RunMismatch(AutoScaleError, ValueError):
    """``train`` into a directory holding another run's model or checkpoints."""


def run_identity(learner: Agent, *, agent: str, device: str, scenario: str, setting: str,
                 seed: int, features: str | None) -> dict[str, Any]:
    """Everything that makes two training runs the same run (JSON data)."""
    hp = dict(learner.hparams)
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
    from agents.experiments.saved import describe
    try:
        steps = describe(path).get("num_timesteps")
    except (OSError, ValueError, AutoScaleError):
        return None
    return steps if isinstance(steps, int) and not isinstance(steps, bool) else None


def _check_previous(out: Path, model_path: Path, ckpt_dir: Path, identity: dict[str, Any],
                    steps: int, resume: bool, checkpoint_suffix: str) -> bool:
    """Refuse to mix this run with another one in ``out``; True if the model is already done."""
    run_file = out / RUN_FILE
    newest = latest_checkpoint(ckpt_dir, checkpoint_suffix)
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


# ---- checkpoints ----------------------------------------------------------------------------


def write_checkpoint(learner: Agent, env: gym.Env, path: Path) -> None:
    """Write ``learner``'s checkpoint ``path`` (``ckpt-N`` + its class's ``checkpoint_suffix``)."""
    learner.write_checkpoint(Path(path).with_suffix(""))


def latest_checkpoint(directory: Path, suffix: str = ".npz") -> Path | None:
    """The checkpoint file ``ckpt-N<suffix>`` with the most steps in ``directory`` (None if none)."""
    pattern = r"ckpt-\d+" + re.escape(suffix)
    found = [p for p in directory.glob(f"ckpt-*{suffix}") if re.fullmatch(pattern, p.name)]
    return max(found, key=lambda p: int(p.name[5:len(p.name) - len(suffix)])) if found else None


def latest_sb3_checkpoint(directory: Path) -> Path | None:
    """Prefix of the newest SB3 checkpoint (``ckpt-N`` of ``ckpt-N.zip``) in ``directory``."""
    newest = latest_checkpoint(directory, ".zip")
    return None if newest is None else newest.with_suffix("")


def restore_checkpoint(learner: Agent, env: gym.Env, path: Path) -> Agent:
    """Continue ``learner`` (made for ``env``) from the checkpoint file ``path``."""
    return learner.restore_checkpoint(Path(path).with_suffix(""))

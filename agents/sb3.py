"""DQN, PPO and A2C from Stable-Baselines3 behind the common agent interface.

Hyperparameters come from ``agents/data/hyperparams.toml`` (one block per algorithm) and can be
overridden per run (``--hp dqn.learning_rate=5e-4``). What each agent sees: the same observation as
the Q-learner (``obs_mode="paper"``: seven bins, one-hot encoded by SB3) unless the env was made
with ``obs_mode="extended"`` (bins plus the raw values, through SB3's ``MultiInputPolicy``).

Saved models are SB3's own ``.zip``: SB3 stores some fields with cloudpickle, so **only load SB3
models you (or someone you trust) created** (see README, Reliability). A JSON side file
``<model>.meta.json`` records the targets and observation the model was trained for, and loading
against another device's action space is refused before SB3 is asked to read the zip.
"""

from __future__ import annotations

import json
import os
import tomllib
from importlib import resources
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
from tqdm.auto import tqdm

from autoscale_env.errors import DependencyMissing, ModelFileError

HYPERPARAMS_FILE = Path(str(resources.files("agents") / "data" / "hyperparams.toml"))


def default_hyperparameters(algo: str) -> dict[str, Any]:
    """The data-file block for ``algo``."""
    with open(HYPERPARAMS_FILE, "rb") as f:
        return dict(tomllib.load(f)[algo])


def _sb3():
    try:
        import stable_baselines3
        from stable_baselines3.common.callbacks import BaseCallback
    except ImportError:
        raise DependencyMissing("stable-baselines3", "sb3", "the dqn/ppo/a2c agents") from None
    return stable_baselines3, BaseCallback


class _SB3Agent:
    """Common wrapper; subclasses set ``name`` (also the SB3 class name in lower case)."""

    name = "sb3"

    def __init__(self, env: gym.Env, seed: int = 0, **overrides: Any):
        sb3, _ = _sb3()
        self.env = env
        self.seed = int(seed)
        hp = default_hyperparameters(self.name)
        unknown = set(overrides) - set(hp) - {"policy"}
        cls = getattr(sb3, self.name.upper())
        import inspect
        accepted = set(inspect.signature(cls.__init__).parameters)
        bad = {k for k in unknown if k not in accepted}
        if bad:
            raise ValueError(f"unknown {self.name} hyperparameter(s) {sorted(bad)}; valid: "
                             f"{', '.join(sorted(accepted - {'self', 'env', 'policy_kwargs'}))}, net_arch")
        hp.update(overrides)
        self.hparams = hp
        self.tensorboard_log: str | None = None
        self.model = None
        self.num_timesteps = 0
        self._cls = cls

    def _build(self) -> None:
        hp = dict(self.hparams)
        policy = hp.pop("policy")
        if isinstance(self.env.observation_space, gym.spaces.Dict):
            policy = "MultiInputPolicy"
        net_arch = hp.pop("net_arch", None)
        self.model = self._cls(policy, self.env, seed=self.seed, device="cpu", verbose=0,
                               tensorboard_log=self.tensorboard_log,
                               policy_kwargs={"net_arch": list(net_arch)} if net_arch else None,
                               **hp)

    @property
    def nbytes(self) -> int:
        """Memory of the policy's parameters, bytes."""
        if self.model is None:
            return 0
        return int(sum(p.numel() * p.element_size() for p in self.model.policy.parameters()))

    def learn(self, total_timesteps: int, callback=None, progress_bar: bool = False):
        """Train with SB3; ``callback`` (a TrainingMonitor) sees every reset and step."""
        _, BaseCallback = _sb3()
        if self.model is None:
            self._build()
        monitor = callback
        bar = tqdm(total=total_timesteps, disable=not progress_bar, desc=self.name, unit="step",
                   leave=False, mininterval=0.5, dynamic_ncols=True)

        class _Feed(BaseCallback):
            def _on_training_start(self) -> None:
                venv = self.training_env
                if monitor is not None and getattr(venv, "reset_infos", None):
                    monitor.on_reset(venv.reset_infos[0])

            def _on_step(self) -> bool:
                bar.update(1)
                if monitor is None:
                    return True
                info = self.locals["infos"][0]
                action = int(np.asarray(self.locals["actions"]).reshape(-1)[0])
                reward = float(np.asarray(self.locals["rewards"]).reshape(-1)[0])
                keep = monitor.on_step(action, reward, info)
                if bool(np.asarray(self.locals["dones"]).reshape(-1)[0]):
                    monitor.on_reset(self.training_env.reset_infos[0])
                return keep is not False

        try:
            self.model.learn(total_timesteps, callback=_Feed(), tb_log_name=self.name,
                             reset_num_timesteps=self.num_timesteps == 0, progress_bar=False)
        finally:
            bar.close()
        self.num_timesteps = int(self.model.num_timesteps)
        return self

    def predict(self, observation, state=None, episode_start=None, deterministic: bool = True):
        """Greedy action for one observation."""
        if self.model is None:
            self._build()
        action, _ = self.model.predict(observation, deterministic=deterministic)
        return int(np.asarray(action).reshape(-1)[0]), None

    def _meta(self) -> dict[str, Any]:
        u = self.env.unwrapped
        return {"agent": self.name, "targets": [str(t) for t in u.targets],
                "nvec": u.encoder.nvec.tolist(), "obs_mode": u.obs_mode,
                "hyperparameters": self.hparams, "seed": self.seed}

    def save(self, path: str) -> None:
        """SB3's zip plus a JSON side file describing the env it was trained for."""
        if self.model is None:
            self._build()
        path = str(path)
        self.model.save(path)
        Path(path + ".meta.json").write_text(json.dumps(self._meta()))

    @classmethod
    def load(cls, path: str, env: gym.Env, **kwargs: Any):
        """Load a model saved by :meth:`save` for ``env``; refuses another action space."""
        sb3, _ = _sb3()
        path = str(path)
        meta_path = Path(path + ".meta.json")
        try:
            meta = json.loads(meta_path.read_text())
        except (OSError, ValueError) as e:
            raise ModelFileError(f"{meta_path}: missing or unreadable model description ({e})") from None
        hyperparameters, seed = meta.get("hyperparameters", {}), meta.get("seed", 0)
        if not isinstance(meta, dict) or not isinstance(hyperparameters, dict):
            raise ModelFileError(f"{meta_path}: field 'hyperparameters' must be an object")
        if not isinstance(seed, int) or isinstance(seed, bool):
            raise ModelFileError(f"{meta_path}: field 'seed' must be an integer, got {seed!r}")
        try:
            agent = cls(env, seed=seed, **{k: v for k, v in hyperparameters.items()
                                           if k != "policy"})
        except (TypeError, ValueError) as e:
            raise ModelFileError(f"{meta_path}: field 'hyperparameters' is invalid: {e}") from None
        mine = agent._meta()
        for key in ("targets", "nvec", "obs_mode"):
            if meta.get(key) != mine[key]:
                raise ModelFileError(f"{path}: model was trained for {key}={meta.get(key)!r}, but this "
                                     f"environment has {key}={mine[key]!r}")
        try:
            agent.model = getattr(sb3, cls.name.upper()).load(path, env=env, device="cpu")
        except Exception as e:  # SB3 raises many kinds on a bad zip
            raise ModelFileError(f"{path}: not a loadable {cls.name} model ({type(e).__name__}: {e})") from None
        agent.num_timesteps = int(agent.model.num_timesteps)
        return agent


def write_sb3_checkpoint(agent: _SB3Agent, path: Path) -> None:
    """SB3 checkpoint: the model zip plus, for off-policy learners, the replay buffer.

    SB3 writes the replay buffer with pickle; a checkpoint is only ever read back by the run that
    wrote it (``--resume``), never from elsewhere. Resuming continues training from the saved
    weights and buffer; unlike the Q-learner it is not bit-identical to an uninterrupted run
    (SB3 re-creates its environment wrapper and random streams on load).
    """
    tmp = path.with_name(path.name + ".tmp")
    agent.save(str(tmp) + ".zip")
    if hasattr(agent.model, "save_replay_buffer"):
        agent.model.save_replay_buffer(str(tmp) + ".buffer.pkl")
        os.replace(str(tmp) + ".buffer.pkl", str(path) + ".buffer.pkl")
    os.replace(str(tmp) + ".zip.meta.json", str(path) + ".zip.meta.json")
    os.replace(str(tmp) + ".zip", str(path) + ".zip")


def restore_sb3_checkpoint(cls: type, path: Path, env: gym.Env) -> _SB3Agent:
    """Load a checkpoint written by :func:`write_sb3_checkpoint` (see its caveats)."""
    agent = cls.load(str(path) + ".zip", env=env)
    buffer = Path(str(path) + ".buffer.pkl")
    if buffer.exists() and hasattr(agent.model, "load_replay_buffer"):
        agent.model.load_replay_buffer(str(buffer))
    return agent


class DQNAgent(_SB3Agent):
    """Stable-Baselines3 DQN."""

    name = "dqn"


class PPOAgent(_SB3Agent):
    """Stable-Baselines3 PPO."""

    name = "ppo"


class A2CAgent(_SB3Agent):
    """Stable-Baselines3 A2C."""

    name = "a2c"

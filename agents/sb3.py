"""DQN, PPO and A2C from Stable-Baselines3 behind the common agent interface.

Hyperparameters come from ``agents/data/hyperparams.toml`` (one block per algorithm) and can be
overridden per run (``--hp dqn.learning_rate=5e-4``). What each agent sees: the same observation as
the Q-learner (``obs_mode="paper"``: seven bins, one-hot encoded by SB3) unless the env was made
with ``obs_mode="extended"`` (bins plus the raw values, through SB3's ``MultiInputPolicy``).

Saved models are SB3's own ``.zip``: SB3 stores some fields with cloudpickle, so **only load SB3
models you (or someone you trust) created** (see the Reliability page of the docs). A JSON side file
``<model>.meta.json`` records the targets, observation and cell the model was trained for, and loading
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

from agents.base import Agent
from autoscale_env.world.errors import DependencyMissing, ModelFileError
from autoscale_env.world.files import atomic_write, load_json, load_npz

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


class SB3Agent(Agent):
    """Common wrapper; subclasses set ``name`` (also the SB3 class name in lower case)."""

    name = "sb3"
    checkpoints = True
    checkpoint_suffix = ".zip"
    tensorboard = True
    model_suffix = ".zip"

    def __init__(self, env: gym.Env, seed: int = 0, **overrides: Any):
        sb3, _ = _sb3()
        super().__init__(env, seed)
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
        self._hparams = hp
        self.model = None
        self._cls = cls

    @property
    def hparams(self) -> dict[str, Any]:
        return self._hparams

    def _build(self) -> None:
        hp = dict(self._hparams)
        policy = hp.pop("policy")
        if isinstance(self.env.observation_space, gym.spaces.Dict):
            policy = "MultiInputPolicy"
        net_arch = hp.pop("net_arch", None)
        self.model = self._cls(policy, self.env, seed=self.seed, device="cpu", verbose=0,
                               tensorboard_log=self.tensorboard_log,
                               policy_kwargs={"net_arch": list(net_arch)} if net_arch else None,
                               **hp)
        if self.tensorboard_log is None:
            # SB3's default logger would make an empty SB3-<time> folder in the temporary
            # directory at every learn(); with nothing to log, log nowhere
            from stable_baselines3.common.logger import Logger
            self.model.set_logger(Logger(folder=None, output_formats=[]))

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
                "hyperparameters": self.hparams, "seed": self.seed,
                "num_timesteps": self.num_timesteps,
                # the cell it was trained on, as a Q-table records it, so `autoscale evaluate`
                # scores the model where it learned unless told otherwise
                "env": {"device": getattr(getattr(u.backend, "phone", None), "name", None),
                        "scenario": u.scenario.name,
                        "setting": getattr(u.backend, "setting", None)}}

    def save(self, path: str) -> None:
        """SB3's zip plus a JSON side file describing the env it was trained for.

        Both are written atomically (temp file, then rename), the zip first: a kill leaves the
        old pair, or a new zip beside the old description, never a torn file.
        """
        if self.model is None:
            self._build()
        path = str(path)
        atomic_write(path, lambda f: self.model.save(f))
        atomic_write(path + ".meta.json", json.dumps(self._meta()))

    def write_checkpoint(self, prefix: str | os.PathLike) -> None:
        """See :func:`write_sb3_checkpoint`."""
        write_sb3_checkpoint(self, Path(prefix))

    def restore_checkpoint(self, prefix: str | os.PathLike) -> SB3Agent:
        """See :func:`restore_sb3_checkpoint`; returns the agent rebuilt from the files."""
        return restore_sb3_checkpoint(type(self), Path(prefix), self.env)

    @classmethod
    def load(cls, path: str, env: gym.Env, **kwargs: Any):
        """Load a model saved by :meth:`save` for ``env``; refuses another action space."""
        sb3, _ = _sb3()
        path = str(path)
        meta_path = Path(path + ".meta.json")
        try:
            meta = load_json(meta_path, ModelFileError, what="model description")
        except ModelFileError as e:
            if "no such" not in str(e):
                raise
            raise ModelFileError(f"{meta_path}: missing model description ({e})") from None
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


#: The replay-buffer arrays a checkpoint keeps (dict observations: one array per key).
_BUFFER_ARRAYS = ("observations", "next_observations", "actions", "rewards", "dones", "timeouts")


def _buffer_arrays(buffer) -> dict[str, np.ndarray]:
    out = {}
    for name in _BUFFER_ARRAYS:
        value = getattr(buffer, name, None)
        if isinstance(value, dict):
            out.update({f"{name}.{k}": v for k, v in value.items()})
        elif value is not None:
            out[name] = value
    return out


def write_sb3_checkpoint(agent: SB3Agent, path: Path) -> None:
    """SB3 checkpoint: the model zip plus, for off-policy learners, the replay buffer.

    The replay buffer is written without pickle, as plain arrays in ``<path>.buffer.npz`` (its
    observations, actions, rewards, done flags and position), and read back with
    ``allow_pickle=False`` after checking every array's shape and dtype against the fresh
    buffer. Resuming continues training from the saved weights and buffer; unlike the
    Q-learner it is not bit-identical to an uninterrupted run (SB3 re-creates its environment
    wrapper and random streams on load). Each file is written atomically; the zip is written
    last, so a checkpoint that is found (by its zip) is complete.
    """
    buffer = getattr(agent.model, "replay_buffer", None) if agent.model is not None else None
    if buffer is not None:
        arrays = _buffer_arrays(buffer)
        arrays["pos"] = np.array(buffer.pos, dtype=np.int64)
        arrays["full"] = np.array(buffer.full, dtype=np.bool_)
        atomic_write(str(path) + ".buffer.npz", lambda f: np.savez_compressed(f, **arrays))
    agent.save(str(path) + ".zip")


def restore_sb3_checkpoint(cls: type, path: Path, env: gym.Env) -> SB3Agent:
    """Load a checkpoint written by :func:`write_sb3_checkpoint` (see its caveats)."""
    agent = cls.load(str(path) + ".zip", env=env)
    buffer = getattr(agent.model, "replay_buffer", None)
    saved = Path(str(path) + ".buffer.npz")
    if buffer is None or not saved.exists():
        return agent
    fresh = _buffer_arrays(buffer)
    limit = sum(a.nbytes for a in fresh.values()) + 4096
    data = load_npz(saved, ModelFileError, max_bytes=max(limit, 1 << 20))
    for name, array in fresh.items():
        got = data.get(name)
        if got is None or got.shape != array.shape or got.dtype != array.dtype:
            raise ModelFileError(
                f"{saved}: array {name!r} is "
                f"{'missing' if got is None else f'{got.dtype} {got.shape}'}, expected "
                f"{array.dtype} {array.shape}")
    pos, full = data.get("pos"), data.get("full")
    if pos is None or full is None or pos.shape != () or not 0 <= int(pos) <= buffer.buffer_size:
        raise ModelFileError(f"{saved}: 'pos'/'full' missing or out of range")
    for name, array in fresh.items():
        array[...] = data[name]  # in place: dict observations share these arrays
    buffer.pos, buffer.full = int(pos), bool(full)
    return agent


class DQNAgent(SB3Agent):
    """Stable-Baselines3 DQN."""

    name = "dqn"


class PPOAgent(SB3Agent):
    """Stable-Baselines3 PPO."""

    name = "ppo"


class A2CAgent(SB3Agent):
    """Stable-Baselines3 A2C."""

    name = "a2c"

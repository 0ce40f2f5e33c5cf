"""The agent contract: the abstract base class every agent of the zoo subclasses.

It is Stable-Baselines3's surface (``predict`` / ``learn`` / ``save`` / classmethod ``load``), so
the harness treats the paper's Q-learner, SB3's DQN/PPO/A2C, the bandits and the baselines alike,
and SB3's own ``evaluate_policy`` accepts our agents. What an agent can do is declared, not
probed: the class attributes below say whether it learns online, which ``gym.make`` arguments its
envs need, whether it checkpoints, whether it writes its own TensorBoard scalars and which file
``save`` writes. The harness (:mod:`agents.experiments`) reads only these.

Every agent is built as ``cls(env, seed=seed, **hyperparameters)`` (see :func:`agents.make_agent`);
a user's own class given as ``--agent package.module:Class`` runs through ``autoscale benchmark``,
``train``, ``evaluate`` and ``sweep`` the same way. docs/agents.md shows how to write one.

:class:`OnlineAgent` is the shared plumbing of the agents that learn one request at a time (the
Q-learner, the bandits, the predictor): one online loop (:meth:`OnlineAgent.learn`) and one
metadata writer (:meth:`OnlineAgent.metadata`).

This room (the zoo) imports ``autoscale_env`` and never the harness or the CLI.
"""

from __future__ import annotations

import abc
import os
import random
from collections.abc import Mapping
from dataclasses import asdict
from pathlib import Path
from typing import Any, ClassVar, Protocol

import gymnasium as gym
import numpy as np

import autoscale_env


class StepCallback(Protocol):
    """What ``learn(callback=...)`` is given (e.g.
    :class:`agents.experiments.evaluation.TrainingMonitor`): it sees every reset and every
    executed request of training."""

    def on_reset(self, info: dict[str, Any]) -> None:
        """After each ``reset``, with its ``info`` (the pending request's ``oracle_action``)."""

    def on_step(self, action: int, reward: float, info: dict[str, Any]) -> bool:
        """After each step, with the executed action, its reward and ``info``; False stops."""

    # Optional: ``on_steps(executed) -> bool``, the same accounting for a batch of steps
    # (``executed``: :class:`autoscale_env.env.ExecutedArrays`). A callback that has it lets
    # :meth:`OnlineAgent.learn` run compiled over blocks of requests; one without it keeps the
    # per-step loop. Returning False stops after that batch.


class Agent(abc.ABC):
    """What the harness needs from an agent, and what it may know about it.

    Subclasses implement :meth:`predict`, :meth:`learn`, :meth:`save` and :meth:`load`, and set
    the capability attributes that differ from the defaults. The constructor signature is
    ``(env, seed=0, **hyperparameters)``; unknown hyperparameters should raise ``ValueError``
    naming the valid ones.
    """

    #: The agent's name in results tables and saved files.
    name: ClassVar[str] = "agent"
    #: True if :meth:`learn` improves the agent (the harness trains it on its own env first);
    #: False for fixed policies, which are evaluated at once and logged as flat lines.
    learns: ClassVar[bool] = True
    #: Extra ``gym.make("AutoScale-v0", ...)`` arguments the agent's envs need, e.g.
    #: ``{"obs_mode": "extended"}`` for the raw context.
    env_kwargs: ClassVar[Mapping[str, Any]] = {}
    #: True if :meth:`write_checkpoint` / :meth:`restore_checkpoint` continue a run bit for bit
    #: (``autoscale train --checkpoint-every``).
    checkpoints: ClassVar[bool] = False
    #: The file of a checkpoint by which the harness finds a complete one (``ckpt-N`` + suffix).
    checkpoint_suffix: ClassVar[str] = ".npz"
    #: True if the agent writes its own TensorBoard scalars into :attr:`tensorboard_log` when the
    #: harness sets it (SB3's ``train/*``), beside the harness's own.
    tensorboard: ClassVar[bool] = False
    #: The suffix of the file :meth:`save` writes (``train`` saves to ``model`` + this).
    model_suffix: ClassVar[str] = ".json"
    #: True if :meth:`export_json` writes a plain JSON policy (``train`` writes ``policy.json``).
    exports_policy: ClassVar[bool] = False

    def __init__(self, env: gym.Env, seed: int = 0, **hyperparameters: Any):
        if hyperparameters:
            raise ValueError(f"{self.name} takes no hyperparameters, got "
                             f"{sorted(hyperparameters)}")
        self.env = env
        self.seed = int(seed)
        self.num_timesteps = 0
        self.tensorboard_log: str | None = None

    # -- the interface --------------------------------------------------------------------------

    @abc.abstractmethod
    def predict(self, observation: Any, state: Any = None, episode_start: Any = None,
                deterministic: bool = True) -> tuple[np.ndarray | int, None]:
        """The action for ``observation`` (greedy when ``deterministic``); SB3's signature."""

    @abc.abstractmethod
    def learn(self, total_timesteps: int, callback: StepCallback | None = None,
              progress_bar: bool = False) -> Agent:
        """Interact with the agent's env for ``total_timesteps`` steps, learning online; returns
        ``self``. ``callback`` sees every reset and step (see :class:`StepCallback`)."""

    @abc.abstractmethod
    def save(self, path: str | os.PathLike) -> None:
        """Write the agent to ``path`` atomically, without pickle."""

    @classmethod
    @abc.abstractmethod
    def load(cls, path: str | os.PathLike, env: gym.Env, **kwargs: Any) -> Agent:
        """Rebuild an agent saved by :meth:`save` for ``env``; refuses files made for another env
        (:class:`~autoscale_env.world.errors.ModelFileError`)."""

    # -- what the harness records ----------------------------------------------------------------

    @property
    def hparams(self) -> dict[str, Any]:
        """Hyperparameters, as recorded in ``run.json`` and TensorBoard (JSON-able values)."""
        return {}

    @property
    def nbytes(self) -> int:
        """Memory of the learned policy, bytes (0 for fixed policies)."""
        return 0

    # -- optional capabilities (declared by the attributes above) --------------------------------

    def write_checkpoint(self, prefix: str | os.PathLike) -> None:
        """Write a checkpoint to ``prefix`` + :attr:`checkpoint_suffix` (and files beside it)."""
        raise NotImplementedError(f"{self.name} cannot checkpoint")

    def restore_checkpoint(self, prefix: str | os.PathLike) -> Agent:
        """Continue from a checkpoint written by :meth:`write_checkpoint`; returns the agent to
        continue with (``self``, or a new one rebuilt from the files)."""
        raise NotImplementedError(f"{self.name} cannot checkpoint")

    def export_json(self, path: str | os.PathLike) -> None:
        """Write the greedy policy as plain JSON (agents with :attr:`exports_policy`)."""
        raise NotImplementedError(f"{self.name} has no JSON policy export")


class OnlineAgent(Agent):
    """An agent that decides and learns one request at a time: the shared online loop.

    Subclasses set ``name``, ``config_class`` (a frozen dataclass of hyperparameters),
    ``file_format`` and the arrays named in ``_arrays``, and implement :meth:`_key` (observation
    -> what :meth:`_act` / :meth:`_update` use), :meth:`_act` and :meth:`_update`.
    """

    name: ClassVar[str] = "online"
    model_suffix: ClassVar[str] = ".npz"
    config_class: ClassVar[type]
    #: ``format`` field of the saved metadata.
    file_format: ClassVar[str] = "autoscale-online/1"
    _arrays: ClassVar[tuple[str, ...]] = ()

    def __init__(self, env: gym.Env, seed: int = 0, **hyperparameters: Any):
        super().__init__(env, seed)
        fields = self.config_class.__dataclass_fields__
        unknown = set(hyperparameters) - set(fields)
        if unknown:
            raise ValueError(f"unknown {self.name} hyperparameter(s) {sorted(unknown)}; valid: "
                             f"{', '.join(fields)}")
        self.config = self.config_class(**{**self._default_hyperparameters(), **hyperparameters})
        u = env.unwrapped
        self.encoder = u.encoder
        self.target_names = [str(t) for t in u.targets]
        self.n_actions = len(self.target_names)
        self._rng = random.Random(self.seed)
        self._np_rng = np.random.default_rng(self.seed)
        self._obs: Any = None
        self._needs_reset = False
        # obs bytes -> state index: a dict lookup is cheaper than a dot product per decision
        self._index = {self.encoder.unflatten(s).tobytes(): s for s in range(self.encoder.n_states)}
        self._check_observation_space(env.observation_space)

    @classmethod
    def _default_hyperparameters(cls) -> dict[str, Any]:
        return {}

    def _check_observation_space(self, space: gym.Space) -> None:
        if not isinstance(space, (gym.spaces.MultiDiscrete, gym.spaces.Dict)):
            raise ValueError(f"{self.name} needs an AutoScale-v0 observation, got {space}")

    @property
    def hparams(self) -> dict[str, Any]:
        return asdict(self.config)

    @property
    def nbytes(self) -> int:
        return int(sum(getattr(self, a).nbytes for a in self._arrays))

    def state_index(self, observation: Any) -> int:
        """Row of the paper's state table for an observation (``paper`` or ``extended``)."""
        if isinstance(observation, dict):
            observation = observation["state"]
        key = np.asarray(observation, dtype=np.int64).reshape(-1).tobytes()
        if key not in self._index:
            raise ValueError(f"observation {observation!r} is not in the observation space "
                             f"(bins per feature: {self.encoder.nvec.tolist()})")
        return self._index[key]

    # -- the hooks ------------------------------------------------------------------------------

    @abc.abstractmethod
    def _key(self, observation: Any) -> Any:
        """What :meth:`_act` and :meth:`_update` need of an observation (e.g. its state row)."""

    @abc.abstractmethod
    def _act(self, key: Any, explore: bool) -> int:
        """The action for ``key``; exploring (drawing from the agent's generator) if ``explore``."""

    @abc.abstractmethod
    def _update(self, key: Any, action: int, reward: float, info: dict[str, Any],
                next_observation: Any = None, terminated: bool = False) -> None:
        """Learn from one executed request."""

    def _after_learn(self) -> None:
        """Called at the end of every :meth:`learn`."""

    #: Optional hook, ``_learn_block(states, rewards) -> actions``: decide and learn ``k`` steps
    #: at once over requests whose outcomes do not depend on the actions (``states``: the ``k +
    #: 1`` flat state indices, the last one after the last step; ``rewards``: ``(k, n_targets)``),
    #: exactly as ``k`` rounds of ``_act(explore=True)`` / ``_update`` would, advancing
    #: ``num_timesteps``-keyed draws itself. With it, :meth:`learn` runs over blocks of requests
    #: when the env allows (:func:`batched_env`); the Q-learner implements it with the same
    #: compiled functions as its per-step hooks.
    _learn_block: ClassVar[Any] = None

    # -- the interface --------------------------------------------------------------------------

    def predict(self, observation, state=None, episode_start=None, deterministic: bool = True):
        """Greedy action (exploring when ``deterministic`` is False); SB3's signature."""
        return self._act(self._key(observation), explore=not deterministic), None

    def learn(self, total_timesteps: int, callback: StepCallback | None = None,
              progress_bar: bool = False) -> OnlineAgent:
        """The online loop: run the env for ``total_timesteps`` requests, deciding and updating.

        ``callback`` (optional) gets ``on_reset(info)`` after each reset and
        ``on_step(action, reward, info)`` after each step; ``on_step`` returning False stops early.

        When the agent has ``_learn_block``, the env allows batches (:func:`batched_env`) and the
        callback, if any, has ``on_steps``, the steps run a block of requests at a time (up to
        the episode's end) in the agent's compiled loop, with the same result bit for bit; the
        callback then gets ``on_steps(executed)`` per batch and the progress bar moves per batch.
        """
        from tqdm.auto import tqdm

        bar = tqdm(total=total_timesteps, disable=not progress_bar, desc=self.name, unit="step",
                   mininterval=0.5)
        batched = None
        if self._learn_block is not None and (callback is None or hasattr(callback, "on_steps")):
            batched = batched_env(self.env)
        if batched is None:
            self._learn_steps(total_timesteps, callback, bar)
        else:
            self._learn_batched(total_timesteps, callback, bar, *batched)
        bar.close()
        self._after_learn()
        return self

    def _reset_if_needed(self, callback: StepCallback | None) -> None:
        # Reset lazily, at the start of the next step: between learn() calls the env then rests
        # on an episode boundary, where its whole state is its generator (checkpoints).
        if self._obs is None or self._needs_reset:
            self._obs, info = self.env.reset(
                seed=self.seed if self._obs is None and self.num_timesteps == 0 else None)
            self._needs_reset = False
            if callback is not None:
                callback.on_reset(info)

    def _learn_steps(self, total_timesteps: int, callback: StepCallback | None, bar,
                     limit: int | None = None) -> bool:
        """The per-step loop (the reference); returns False if the callback stopped it."""
        env = self.env
        key_of, act, update = self._key, self._act, self._update
        for _ in range(total_timesteps):
            self._reset_if_needed(callback)
            key = key_of(self._obs)
            a = act(key, True)
            obs, reward, terminated, truncated, info = env.step(a)
            update(key, a, float(reward), info, obs, terminated)
            self._obs = obs
            self.num_timesteps += 1
            self._needs_reset = terminated or truncated
            bar.update(1)
            if callback is not None and callback.on_step(a, reward, info) is False:
                return False
        return True

    def _learn_batched(self, total_timesteps: int, callback: StepCallback | None, bar,
                       u: Any, time_limit: Any) -> None:
        """The online loop over blocks: one ``_learn_block`` and one ``advance`` per episode
        (or block), the TimeLimit wrapper's count advanced as its ``step`` would."""
        done = 0
        while done < total_timesteps:
            self._reset_if_needed(callback)
            block = u.pending_block()
            k = total_timesteps - done
            if block is not None:
                # the last request of a block has no next state inside it: a step of its own
                k = min(k, len(block.state) - 1)
            if time_limit is not None:
                k = min(k, time_limit._max_episode_steps - time_limit._elapsed_steps)
            if block is None:  # outcomes unknown or actions observed: the per-step loop
                self._learn_steps(total_timesteps - done, callback, bar)
                return
            if k < 1:  # an episode longer than the block: its last request, one step
                if not self._learn_steps(1, callback, bar):
                    return
                done += 1
                continue
            actions = self._learn_block(block.state[:k + 1], block.reward[:k])
            executed = u.advance(actions)
            self.num_timesteps += k
            done += k
            self._obs = u.observation()
            if time_limit is not None:
                time_limit._elapsed_steps += k
                self._needs_reset = time_limit._elapsed_steps >= time_limit._max_episode_steps
            bar.update(k)
            if callback is not None and callback.on_steps(executed) is False:
                return

    @property
    def at_episode_boundary(self) -> bool:
        """True between an episode's last step and the next reset (or before the first)."""
        return self._obs is None or self._needs_reset

    # -- the metadata writer ---------------------------------------------------------------------

    def metadata(self) -> dict[str, Any]:
        """What a saved model records about itself and the env it was trained for."""
        u = self.env.unwrapped
        return {
            "format": self.file_format,
            "agent": self.name,
            "package_version": autoscale_env.__version__,
            "targets": self.target_names,
            "features": [{"name": f.name, "field": f.field, "edges": list(f.edges),
                          "descending": f.descending, "labels": list(f.labels)}
                         for f in self.encoder.features],
            "nvec": self.encoder.nvec.tolist(),
            "hyperparameters": asdict(self.config),
            "num_timesteps": self.num_timesteps,
            "seed": self.seed,
            "env": {"device": getattr(getattr(u.backend, "phone", None), "name", None),
                    "scenario": u.scenario.name,
                    "setting": getattr(u.backend, "setting", None)},
            **self._extra_metadata(),
        }

    def _extra_metadata(self) -> dict[str, Any]:
        return {}


#: Wrappers :func:`batched_env` can see through: ``gym.make``'s own. TimeLimit's step count is
#: advanced by the batched loops; OrderEnforcing only needs the reset, which goes through it; the
#: passive checker only inspects the first step. Any other wrapper may change what a step does.
_TRANSPARENT_WRAPPERS = ("TimeLimit", "OrderEnforcing", "PassiveEnvChecker")


def batched_env(env: gym.Env) -> tuple[Any, Any] | None:
    """``(unwrapped, time_limit_wrapper_or_None)`` when ``env`` can run batches of requests
    (``AutoScaleEnv.pending_block`` / ``advance``) with the effects of one ``step`` each: an
    AutoScale-v0 env under ``gym.make``'s wrappers only, its pending block known in advance.
    None otherwise (the caller keeps the per-step loop)."""
    time_limit = None
    e = env
    while isinstance(e, gym.Wrapper):
        name = type(e).__name__
        if type(e).__module__.split(".")[0] != "gymnasium" or name not in _TRANSPARENT_WRAPPERS:
            return None
        if name == "TimeLimit":
            if time_limit is not None:
                return None
            time_limit = e
        e = e.env
    if not hasattr(e, "pending_block") or not hasattr(e, "advance"):
        return None
    try:
        if e.pending_block() is None:
            return None
    except gym.error.ResetNeeded:  # not reset yet: the loops reset it (through the wrappers)
        pass
    return e, time_limit


def checkpoint_path(prefix: str | os.PathLike, suffix: str) -> Path:
    """``prefix`` + ``suffix`` (``ckpt-000000001500`` -> ``ckpt-000000001500.npz``)."""
    prefix = Path(prefix)
    return prefix.with_name(prefix.name + suffix)

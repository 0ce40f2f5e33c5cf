"""One PPO policy shared by every phone of a fleet (parameter sharing), via SuperSuit.

SuperSuit turns the fleet's PettingZoo ``ParallelEnv`` into a vector env with one sub-env per
phone (``pettingzoo_env_to_vec_env_v1``) that Stable-Baselines3 trains on
(``concat_vec_envs_v1(..., base_class="stable_baselines3")``): every phone's experience updates
the same network, and every phone acts with it on its own observation. Needs the ``[fleet]`` and
``[sb3]`` extras. Phones must share one action space (e.g. the ``benchmark`` mix: 9-target phones).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from autoscale_env.fleet.core import FleetCore


def make_vec_env(env):
    """The SB3 vector env over a fleet ``ParallelEnv`` (one sub-env per phone)."""
    import supersuit as ss
    spaces = {str(env.action_space(a)) for a in env.possible_agents}
    if len(spaces) != 1:
        raise ValueError(f"shared-parameter PPO needs one action space for every phone, got "
                         f"{sorted(spaces)}; use phones with the same targets")
    vec = ss.pettingzoo_env_to_vec_env_v1(env)
    return ss.concat_vec_envs_v1(vec, 1, num_cpus=0, base_class="stable_baselines3")


def train_shared_ppo(env, total_timesteps: int, seed: int = 0, progress: bool = False,
                     **ppo_kwargs: Any):
    """Train one PPO policy on every phone of ``env`` (a fleet ``ParallelEnv``) for
    ``total_timesteps`` phone-steps; returns the SB3 model.

    Seeding: the fleet is reset with ``seed`` first (later resets continue its generators) and
    torch/numpy with SB3's ``set_random_seed``; SuperSuit's vector env takes no seed of its own.
    """
    import torch
    from stable_baselines3 import PPO
    from stable_baselines3.common.utils import set_random_seed

    # a small MLP: one thread is fastest, and torch's default pool oversubscribes shared cores
    torch.set_num_threads(1)
    set_random_seed(seed)
    env.reset(seed=seed)
    vec = make_vec_env(env)
    kwargs = {"n_steps": 128, "learning_rate": 3e-4, "gamma": 0.1, "verbose": 0, "device": "cpu"}
    kwargs.update(ppo_kwargs)
    # minibatches of 256 phone-steps, or the whole rollout when it is smaller (one phone)
    kwargs.setdefault("batch_size", min(256, kwargs["n_steps"] * len(env.possible_agents)))
    model = PPO("MlpPolicy", vec, **kwargs)
    model.learn(total_timesteps, progress_bar=progress)
    return model


def ppo_policy(model):
    """A fleet policy (``agents.fleet.Policy``): the shared network's greedy action per phone."""

    def policy(core: FleetCore, obs: np.ndarray) -> np.ndarray:
        actions, _ = model.predict(obs, deterministic=True)
        return np.asarray(actions, dtype=np.int64)

    return policy

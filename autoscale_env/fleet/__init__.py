"""Many phones, one edge device and one Wi-Fi access point: AutoScale as a multi-agent setting.

``parallel_env(num_phones=N, ...)`` makes a PettingZoo ``ParallelEnv`` (the ``[fleet]`` extra) in
which N phones share the edge device and the access point; :class:`FleetCore` is the same fleet as
arrays (no PettingZoo needed), for fast loops::

    from autoscale_env.fleet import parallel_env

    env = parallel_env(num_phones=8, device="mi8pro", scenario="non_streaming")
    observations, infos = env.reset(seed=0)
    actions = {agent: env.action_space(agent).sample() for agent in env.agents}
    observations, rewards, terminations, truncations, infos = env.step(actions)

Rules and their sources: ``autoscale_env/data/fleet.toml`` (read by :mod:`.config`); the model:
:mod:`.contention`; the fleet as arrays: :mod:`.core` (with :mod:`.worlds`); the PettingZoo face:
:mod:`.env`.

May import: the rooms below it (:mod:`autoscale_env.env`, :mod:`autoscale_env.backends`: each
phone's world is a :class:`~autoscale_env.backends.sim.SimBackend`; :mod:`autoscale_env.traces`,
:mod:`autoscale_env.world`) and pettingzoo (only in :mod:`.env`); never its siblings
:mod:`autoscale_env.vector` and :mod:`autoscale_env.tools`, nor :mod:`agents`.
"""

from __future__ import annotations

from typing import Any

from autoscale_env.fleet.config import FleetConfig, load_fleet_config
from autoscale_env.fleet.core import FleetCore, phone_rngs


def parallel_env(num_phones: int = 1, *args: Any, **kwargs: Any):
    """The fleet as a PettingZoo ``ParallelEnv``; see :func:`autoscale_env.fleet.env.parallel_env`."""
    try:
        from autoscale_env.fleet.env import parallel_env as make
    except ImportError as e:  # pettingzoo missing
        raise ImportError(f"autoscale_env.fleet.parallel_env needs PettingZoo: pip install "
                          f"'autoscale-env[fleet]' ({e})") from e
    return make(num_phones, *args, **kwargs)


def make_core(num_phones: int = 1, *args: Any, **kwargs: Any) -> FleetCore:
    """The fleet as arrays (:class:`FleetCore`), with :func:`parallel_env`'s arguments (less
    ``max_episode_steps`` and ``render_mode``)."""
    from autoscale_env.fleet.env_args import make_core as make
    return make(num_phones, *args, **kwargs)


__all__ = ["FleetConfig", "FleetCore", "load_fleet_config", "make_core", "parallel_env",
           "phone_rngs"]

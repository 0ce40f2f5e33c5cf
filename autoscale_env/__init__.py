"""autoscale-env: AutoScale (Kim & Wu, 2020) as a Gymnasium environment.

``import autoscale_env`` registers ``AutoScale-v0``; it imports only numpy and gymnasium (backends
and their heavy dependencies load when used)::

    import gymnasium as gym
    import autoscale_env

    env = gym.make("AutoScale-v0", device="mi8pro", scenario="non_streaming", setting="dynamic")

The rooms, each importing only those below it (``.importlinter`` checks it; docs/architecture.md):
:mod:`.world` (data, schemas, rules) <- :mod:`.traces` <- :mod:`.backends` <- :mod:`.env` <-
:mod:`.vector`, :mod:`.fleet`, :mod:`.tools`.
"""

from __future__ import annotations

from gymnasium.envs.registration import register, registry

from autoscale_env import version as _version
from autoscale_env.world.types import MAX_EPISODE_STEPS

__version__ = _version.__version__

if "AutoScale-v0" not in registry:
    register(
        id="AutoScale-v0",
        entry_point="autoscale_env.env:AutoScaleEnv",
        vector_entry_point="autoscale_env.vector:AutoScaleVectorEnv",
        max_episode_steps=MAX_EPISODE_STEPS,
        kwargs={},
    )

__all__ = ["MAX_EPISODE_STEPS", "__version__"]

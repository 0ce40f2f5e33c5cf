"""Which target the oracle picks, per device x scenario x setting cell, and the state ceiling.

``autoscale oracle-table`` prints it: for every cell, the share of requests on which the oracle
picks each target (the four most common) and the state ceiling (the oracle match of the best
policy over the paper's discrete state); then the shares pooled over all cells. Tools may import
the environment's faces, never the agents.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Sequence

import gymnasium as gym

import autoscale_env  # noqa: F401  (registers AutoScale-v0)
from autoscale_env.world.config import SETTINGS, load_scenarios


def oracle_table(devices: Sequence[str], episodes: int = 100) -> str:
    """The table, stepping every cell of ``devices`` for ``episodes`` seeded episodes."""
    pooled: Counter = Counter()
    lines = []
    for device in devices:
        for scenario in load_scenarios():
            for setting in SETTINGS:
                env = gym.make("AutoScale-v0", device=device, scenario=scenario, setting=setting)
                names = [str(t) for t in env.unwrapped.targets]
                counts: Counter = Counter()
                per_state: dict = defaultdict(Counter)
                for episode in range(episodes):
                    obs, info = env.reset(seed=episode)
                    for _ in range(env.spec.max_episode_steps):
                        counts[names[info["oracle_action"]]] += 1
                        per_state[obs.tobytes()][info["oracle_action"]] += 1
                        obs, _, _, _, info = env.step(0)
                env.close()
                n = sum(counts.values())
                ceiling = sum(c.most_common(1)[0][1] for c in per_state.values()) / n
                pooled.update(counts)
                top = ", ".join(f"{k} {v / n:.0%}" for k, v in counts.most_common(4))
                lines.append(f"{device:13s} {scenario:14s} {setting:8s} state ceiling "
                             f"{ceiling:6.1%} | {top}")
    total = sum(pooled.values())
    lines.append("all cells: " + ", ".join(f"{k} {v / total:.1%}" for k, v in pooled.most_common()))
    return "\n".join(lines)

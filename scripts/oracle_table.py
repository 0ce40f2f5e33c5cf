"""Which target the oracle picks, per device x scenario x setting cell, and the state ceiling.

    python scripts/oracle_table.py [--episodes 100] [--device mi8pro,...]
"""

from __future__ import annotations

import argparse
from collections import Counter, defaultdict

import gymnasium as gym

import autoscale_env  # noqa: F401
from autoscale_env.world.config import device_names, load_scenarios

parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
parser.add_argument("--episodes", type=int, default=100)
parser.add_argument("--device", default=",".join(device_names()))
args = parser.parse_args()

pooled: Counter = Counter()
for device in args.device.split(","):
    for scenario in load_scenarios():
        for setting in ("static", "dynamic"):
            env = gym.make("AutoScale-v0", device=device, scenario=scenario, setting=setting)
            names = [str(t) for t in env.unwrapped.targets]
            counts: Counter = Counter()
            per_state: dict = defaultdict(Counter)
            for episode in range(args.episodes):
                obs, info = env.reset(seed=episode)
                for _ in range(env.spec.max_episode_steps):
                    counts[names[info["oracle_action"]]] += 1
                    per_state[obs.tobytes()][info["oracle_action"]] += 1
                    obs, _, _, _, info = env.step(0)
            n = sum(counts.values())
            ceiling = sum(c.most_common(1)[0][1] for c in per_state.values()) / n
            pooled.update(counts)
            top = ", ".join(f"{k} {v / n:.0%}" for k, v in counts.most_common(4))
            print(f"{device:13s} {scenario:14s} {setting:8s} state ceiling {ceiling:6.1%} | {top}")
total = sum(pooled.values())
print("all cells:", ", ".join(f"{k} {v / total:.1%}" for k, v in pooled.most_common()))

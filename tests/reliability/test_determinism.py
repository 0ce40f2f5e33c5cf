"""Same seed, same result, bit for bit, across processes with different hash seeds."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

ROLLOUT = """
import hashlib, gymnasium as gym, numpy as np, autoscale_env
h = hashlib.sha256()
for setting in ("static", "dynamic"):
    env = gym.make("AutoScale-v0", setting=setting, scenario="{scenario}")
    obs, info = env.reset(seed=5)
    acts = np.random.default_rng(0).integers(env.action_space.n, size=700)
    for a in acts:
        obs, r, term, trunc, info = env.step(int(a))
        h.update(obs.tobytes()); h.update(repr((r, sorted(info.items()))).encode())
        if trunc:
            obs, info = env.reset()
print(h.hexdigest())
"""

TRAIN = """
import hashlib, importlib.util, gymnasium as gym, numpy as np, autoscale_env
from agents import make_agent
plan = [("qlearning", 5000, {{}}), ("random", 0, {{}}), ("oracle", 0, {{}}),
        ("fixed:local/gpu/fp16", 0, {{}})]
if importlib.util.find_spec("stable_baselines3"):
    plan += [("dqn", 1500, {{"learning_starts": 200}}), ("ppo", 512, {{"n_steps": 256}}),
             ("a2c", 400, {{}})]
for name, steps, hp in plan:
    env = gym.make("AutoScale-v0", setting="dynamic")
    eval_env = gym.make("AutoScale-v0", setting="dynamic")
    agent = make_agent(name, env if steps else eval_env, seed=3, **hp)
    agent.learn(steps)
    obs, _ = eval_env.reset(seed=9)
    actions = []
    for _ in range(300):
        a, _ = agent.predict(obs)
        actions.append(int(a))
        obs, *_ = eval_env.step(int(a))
    h = hashlib.sha256(repr(actions).encode())
    if hasattr(agent, "q"):
        h.update(agent.q.tobytes())
    if getattr(agent, "model", None) is not None:
        for p in agent.model.policy.parameters():
            h.update(p.detach().numpy().tobytes())
    print(name, h.hexdigest())
"""


def run_twice(code: str) -> tuple[str, str]:
    outs = []
    for hash_seed in ("1", "2"):
        env = {**os.environ, "PYTHONHASHSEED": hash_seed}
        out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                             check=True, timeout=240)
        outs.append(out.stdout.strip())
    return outs[0], outs[1]


@pytest.mark.parametrize("scenario", ["non_streaming", "translation"])
def test_sim_rollouts_identical_across_processes(scenario):
    a, b = run_twice(ROLLOUT.format(scenario=scenario))
    assert a == b and len(a) == 64


def test_every_agent_trains_identically_across_processes():
    a, b = run_twice(TRAIN.format())
    assert a == b and a.count("\n") >= 3

"""Shared fixtures and helpers."""

from __future__ import annotations

import os
import signal
import sys

import gymnasium as gym
import numpy as np
import pytest
from hypothesis import settings

# The first call of a compiled rule compiles it (seconds with a cold numba cache), which no
# per-example deadline can tell from a slow example: property tests run without one.
settings.register_profile("autoscale", deadline=None)
settings.load_profile("autoscale")

# A suite started in the background by a non-interactive shell (`(pytest &)`) inherits SIGINT
# ignored, and so does every process its tests start: the tests that stop a recorder or a sweep
# with Ctrl-C would wait for an interrupt their child never sees. A Python-level handler here is
# reset to the default in the children, so they get a live SIGINT again.
if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)

#: The hang guard of a test that starts a local Ray cluster. The suite's default (``timeout`` in
#: setup.cfg, 300 s) covers every other test; a Ray start takes about 15 s on a quiet 2-core
#: machine but minutes beside a CPU burner on each core (two starts in one test took 2.5 min
#: there, and the test with its module fixture went past 300 s). A guard against a hang, not a
#: speed check.
RAY_TIMEOUT_S = 900


def pytest_configure(config):
    """Under pytest-xdist (the README's test command), compile the main kernels once, in
    parallel, before the workers start (``autoscale warm``): with a cold numba cache every worker
    would otherwise compile the same kernels at once. A failure here is only reported: the tests
    that use the kernels then fail with the real error."""
    if hasattr(config, "workerinput") or not config.getoption("numprocesses", None):
        return
    if os.environ.get("NUMBA_DISABLE_JIT", "0") not in ("", "0"):
        return
    from agents.experiments.warm import warm
    try:
        seconds = warm(workers=2)
    except Exception as e:  # noqa: BLE001  (reported, and the tests show it again)
        print(f"\nautoscale warm failed: {e}", file=sys.stderr)
        return
    print("\nkernels compiled or loaded (autoscale warm): "
          + ", ".join(f"{name} {s:.0f} s" for name, s in seconds.items()), file=sys.stderr)


def pytest_collection_modifyitems(config, items):
    for item in items:
        if item.get_closest_marker("distributed") and not item.get_closest_marker("timeout"):
            item.add_marker(pytest.mark.timeout(RAY_TIMEOUT_S))


import autoscale_env  # noqa: F401  (registers AutoScale-v0)
from autoscale_env.backends.sim import SimBackend
from autoscale_env.world.config import get_reward_preset, get_scenario
from autoscale_env.world.reward import reward
from autoscale_env.world.rules import oracle_actions

DEVICES = ("mi8pro", "galaxy_s10e", "moto_x_force")
SCENARIOS = ("non_streaming", "streaming", "translation")
SETTINGS = ("static", "dynamic")
CELLS = [(d, sc, st) for d in DEVICES for sc in SCENARIOS for st in SETTINGS]


@pytest.fixture
def env():
    e = gym.make("AutoScale-v0")
    yield e
    e.close()


def rollout(seed: int, n: int = 350, action_seed: int = 123, **kwargs) -> list:
    """Everything ``gym.make("AutoScale-v0", **kwargs)`` shows over ``n`` seeded random steps
    after ``reset(seed=seed)``, resetting at every episode end."""
    env = gym.make("AutoScale-v0", **kwargs)
    actions = np.random.default_rng(action_seed).integers(env.action_space.n, size=n)
    obs, info = env.reset(seed=seed)
    out = [(obs.tolist(), info)]
    for a in actions:
        obs, r, term, trunc, info = env.step(int(a))
        out.append((obs.tolist(), r, term, trunc, info))
        if term or trunc:
            out.append(env.reset())
    env.close()
    return out


def best_target(device: str, scenario: str, network: str, **conditions: float) -> str:
    """The oracle's choice (noise-free) for one request under the given conditions."""
    sim = SimBackend(device, scenario, "static")
    block = sim.expected(network, **conditions)
    net = block.network
    sc = get_scenario(scenario)
    target_acc = np.array([w.accuracy["fp32"] - sc.accuracy_tolerance for w in sim.workloads])
    r, _, _ = reward(get_reward_preset("energy"), latency_ms=block.latency_ms,
                     energy_mj=block.energy_mj, accuracy=block.accuracy,
                     reference_energy_mj=sim.reference_energy_mj[net][:, None],
                     qos_ms=sc.qos_ms, accuracy_target=target_acc[net][:, None])
    return str(sim.targets[int(oracle_actions(r)[0])])

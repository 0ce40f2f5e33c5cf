"""``render_mode="ansi"``: a one-line summary of the last executed request."""

from __future__ import annotations

import subprocess
import sys
import warnings

import gymnasium as gym
import pytest

import autoscale_env  # noqa: F401
from autoscale_env.world.errors import UnknownNameError


def test_ansi_is_a_declared_render_mode():
    env = gym.make("AutoScale-v0", render_mode="ansi")
    assert "ansi" in env.metadata["render_modes"]


def test_render_summarises_the_last_request():
    env = gym.make("AutoScale-v0", render_mode="ansi", setting="static")
    obs, info = env.reset(seed=3)
    assert env.render() == "no request executed yet"
    u = env.unwrapped
    for action in (0, u.target_index("cloud/gpu/fp32")):
        oracle = u.targets[u.oracle_action()]
        obs, reward, _, _, info = env.step(action)
        line = env.render()
        assert "\n" not in line
        assert line.startswith(f"{info['network']} -> {info['target']}: ")
        assert f"{info['latency_ms']:.1f} ms" in line and f"{info['energy_mj']:.1f} mJ" in line
        assert f"QoS {u.scenario.qos_ms:g} ms {'ok' if info['qos_met'] else 'MISSED'}" in line
        assert f"oracle {oracle}" in line and f"reward {reward:.3f}" in line
        assert ("(match)" in line) == (str(oracle) == info["target"])


def test_rendering_does_not_change_the_rollout():
    def rollout(**kwargs):
        env = gym.make("AutoScale-v0", **kwargs)
        env.reset(seed=1)
        return [env.step(a % 9)[1] for a in range(300)]
    assert rollout(render_mode="ansi") == rollout()


def test_no_render_mode_renders_nothing_and_unknown_modes_are_refused():
    env = gym.make("AutoScale-v0")
    env.reset(seed=0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert env.render() is None
    with pytest.raises(UnknownNameError, match="ansi"):
        gym.make("AutoScale-v0", render_mode="human")


def test_python_dash_m_autoscale_env_runs_the_cli():
    proc = subprocess.run([sys.executable, "-m", "autoscale_env", "--help"], capture_output=True,
                          text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert "benchmark" in proc.stdout and "evaluate" in proc.stdout
    bare = subprocess.run([sys.executable, "-m", "autoscale_env"], capture_output=True,
                          text=True, timeout=60)
    assert bare.returncode == 0 and 'gym.make("AutoScale-v0"' in bare.stdout
    assert "autoscale --help" in bare.stdout

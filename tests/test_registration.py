"""AutoScale-v0 is registered, constructible by id, and refuses unknown names clearly."""

from __future__ import annotations

import gymnasium as gym
import pytest

import autoscale_env
from autoscale_env.world.errors import ConfigError, UnknownNameError


def test_make_by_plain_id_uses_documented_defaults():
    env = gym.make("AutoScale-v0")
    u = env.unwrapped
    assert u.backend.phone.name == "mi8pro"
    assert u.scenario.name == "non_streaming"
    assert u.backend.setting == "dynamic"
    assert type(u.backend).__name__ == "SimBackend"
    assert env.spec.max_episode_steps == autoscale_env.MAX_EPISODE_STEPS
    env.close()


def test_make_with_module_prefix():
    env = gym.make("autoscale_env:AutoScale-v0", device="galaxy_s10e", scenario="translation",
                   setting="static", backend="sim")
    assert env.unwrapped.backend.phone.name == "galaxy_s10e"
    env.close()


def test_target_names_read_like_paths():
    env = gym.make("AutoScale-v0")
    names = [str(t) for t in env.unwrapped.targets]
    assert "local/gpu/fp16" in names and "cloud/gpu/fp32" in names
    assert env.action_space.n == len(names) == 9
    assert env.unwrapped.target_index("local/dsp/int8") == names.index("local/dsp/int8")
    env.close()


def test_moto_x_force_has_no_dsp():
    env = gym.make("AutoScale-v0", device="moto_x_force")
    names = [str(t) for t in env.unwrapped.targets]
    assert env.action_space.n == 8 and not any("dsp" in n for n in names)


@pytest.mark.parametrize("kwargs, kind, valid", [
    ({"device": "pixel9"}, "device", "mi8pro"),
    ({"scenario": "gaming"}, "scenario", "non_streaming"),
    ({"setting": "chaotic"}, "setting", "static"),
    ({"backend": "quantum"}, "backend", "replay"),
    ({"reward": "speed"}, "reward preset", "energy"),
    ({"obs_mode": "pixels"}, "obs_mode", "extended"),
])
def test_unknown_names_list_the_valid_choices(kwargs, kind, valid):
    with pytest.raises(UnknownNameError) as e:
        gym.make("AutoScale-v0", **kwargs)
    message = str(e.value)
    assert f"unknown {kind}" in message and valid in message
    assert isinstance(e.value, ConfigError) and isinstance(e.value, ValueError)


def test_unknown_target_name_lists_targets():
    env = gym.make("AutoScale-v0")
    with pytest.raises(UnknownNameError, match="local/cpu/fp32"):
        env.unwrapped.target_index("local/npu/int4")


def test_import_does_not_pull_heavy_dependencies():
    import subprocess
    import sys
    code = ("import sys, autoscale_env, gymnasium as gym; gym.make('AutoScale-v0').reset(seed=0); "
            "print(','.join(m for m in ('torch', 'stable_baselines3', 'tensorboard', 'ray') "
            "if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""

"""The fleet refuses exactly what AutoScale-v0 refuses: one shared validator
(``world.actions``) for actions, ``reset`` options and a closed env."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest

import autoscale_env  # noqa: F401  (registers AutoScale-v0)
from autoscale_env.world.errors import InvalidActionError

pytest.importorskip("pettingzoo")
from autoscale_env.fleet import parallel_env  # noqa: E402

BAD_ACTIONS = [1.7, 2.9, "3", True, False, np.True_, 2**70, -1, np.float64(2.0), [1], None]


def single():
    env = gym.make("AutoScale-v0").unwrapped
    env.reset(seed=0)
    return env


def fleet():
    env = parallel_env(num_phones=2)
    env.reset(seed=0)
    return env


def refusal(step, action) -> str:
    with pytest.raises(InvalidActionError) as info:
        step(action)
    return str(info.value)


@pytest.mark.parametrize("action", BAD_ACTIONS, ids=repr)
def test_the_fleet_refuses_every_action_the_single_env_refuses_with_the_same_message(action):
    alone = refusal(single().step, action)
    crowd = refusal(lambda a: fleet().step({"phone_0": 0, "phone_1": a}), action)
    assert crowd == f"phone 1: {alone}"


@pytest.mark.parametrize("action", [0, 3, np.int64(8), np.array(2)], ids=repr)
def test_integers_in_range_are_accepted_by_both(action):
    single().step(action)
    fleet().step({"phone_0": action, "phone_1": 0})


def test_unknown_reset_options_are_refused_by_both():
    for env in (gym.make("AutoScale-v0").unwrapped, parallel_env(num_phones=2)):
        with pytest.raises(ValueError, match=r"unknown key\(s\) \['junk'\]"):
            env.reset(options={"junk": 1})
        env.reset(options={})  # empty is fine


def test_step_and_reset_after_close_are_refused_by_both():
    env = fleet()
    env.close()
    with pytest.raises(gym.error.ClosedEnvironmentError, match="step"):
        env.step({"phone_0": 0, "phone_1": 0})
    with pytest.raises(gym.error.ClosedEnvironmentError, match="reset"):
        env.reset(seed=0)
    env.close()  # twice is fine
    one = single()
    one.close()
    with pytest.raises(gym.error.ClosedEnvironmentError):
        one.step(0)

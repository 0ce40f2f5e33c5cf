"""The Gymnasium contract: checker, determinism, spaces, info, invalid actions."""

from __future__ import annotations

import warnings

import gymnasium as gym
import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env

from autoscale_env.world.errors import InvalidActionError
from conftest import CELLS, rollout

STEP_INFO = {
    "latency_ms": float, "energy_mj": float, "accuracy": float, "qos_met": bool,
    "accuracy_met": bool, "target": str, "network": str, "co_cpu_pct": float,
    "co_mem_pct": float, "rssi_wifi_dbm": float, "rssi_p2p_dbm": float,
    "energy_source": str, "error": str, "oracle_action": int,
}


@pytest.mark.parametrize("device, scenario, setting", CELLS)
def test_check_env_passes_without_warnings(device, scenario, setting):
    env = gym.make("AutoScale-v0", device=device, scenario=scenario, setting=setting)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        check_env(env.unwrapped, skip_render_check=True)
    env.close()


@pytest.mark.parametrize("setting", ["static", "dynamic"])
def test_same_seed_same_trajectory_bit_for_bit(setting):
    a = rollout(7, setting=setting)
    b = rollout(7, setting=setting)
    assert repr(a) == repr(b)  # repr: floats compared bit for bit, NaN-safe
    assert repr(rollout(8, setting=setting)) != repr(a)


def test_observations_are_in_space_and_fresh_arrays(env):
    obs, _ = env.reset(seed=0)
    seen = [obs]
    for _ in range(250):  # crosses several blocks and one truncation
        obs, r, term, trunc, info = env.step(env.action_space.sample())
        assert env.observation_space.contains(obs)
        assert obs.dtype == np.int64
        assert not any(obs is o for o in seen[-3:])
        seen.append(obs)
        if trunc:
            obs, _ = env.reset()


def test_step_info_has_stable_keys_and_types(env):
    env.reset(seed=1)
    for _ in range(120):
        _, r, term, trunc, info = env.step(env.action_space.sample())
        assert isinstance(r, float) and term is False and isinstance(trunc, bool)
        assert set(info) == set(STEP_INFO)
        for key, typ in STEP_INFO.items():
            assert type(info[key]) is typ, key
        assert info["latency_ms"] > 0 and info["energy_mj"] > 0 and 0 <= info["accuracy"] <= 1
        assert 0 <= info["oracle_action"] < env.action_space.n
        if trunc:
            env.reset()


def test_info_reports_the_executed_target_and_its_outcome(env):
    env.reset(seed=3)
    u = env.unwrapped
    for a in range(env.action_space.n):
        pending = u.counterfactuals()
        _, r, _, _, info = env.step(a)
        assert info["target"] == str(u.targets[a])
        assert info["latency_ms"] == pending["latency_ms"][a]
        assert info["energy_mj"] == pending["energy_mj"][a]
        assert r == pending["reward"][a]


def test_oracle_action_is_the_best_reward_of_the_returned_request(env):
    _, info = env.reset(seed=4)
    u = env.unwrapped
    for _ in range(150):
        rewards = u.counterfactuals()["reward"]
        assert info["oracle_action"] == int(np.argmax(rewards)) == u.oracle_action()
        _, _, _, trunc, info = env.step(info["oracle_action"])
        if trunc:
            _, info = env.reset()


def test_context_in_info_matches_the_observation(env):
    obs, info = env.reset(seed=5)
    enc = env.unwrapped.encoder
    labels = enc.describe(obs)
    assert (labels["co_cpu"] == "0%") == (info["co_cpu_pct"] == 0.0)
    assert (labels["rssi_wifi"] == "weak") == (info["rssi_wifi_dbm"] <= -80)


@pytest.mark.parametrize("bad", [-1, 9, 100, 2.5, "local/cpu/fp32", None, np.array([1, 2])])
def test_actions_outside_the_space_are_refused(env, bad):
    env.reset(seed=0)
    with pytest.raises(InvalidActionError, match="valid actions are 0..8"):
        env.step(bad)


def test_numpy_integer_actions_are_accepted(env):
    env.reset(seed=0)
    env.step(np.int64(3))
    env.step(np.array(2))


def test_extended_observation_adds_raw_values():
    env = gym.make("AutoScale-v0", obs_mode="extended")
    obs, info = env.reset(seed=0)
    assert env.observation_space.contains(obs)
    assert obs["raw"][3] == np.float32(info["co_cpu_pct"])
    assert obs["raw"][5] == np.float32(info["rssi_wifi_dbm"])
    check_env(env.unwrapped, skip_render_check=True)


def test_static_setting_holds_conditions_for_the_episode():
    env = gym.make("AutoScale-v0", setting="static")
    _, info = env.reset(seed=11)
    held = (info["co_cpu_pct"], info["rssi_wifi_dbm"], info["rssi_p2p_dbm"])
    for _ in range(99):
        _, _, _, _, info = env.step(0)
        assert (info["co_cpu_pct"], info["rssi_wifi_dbm"], info["rssi_p2p_dbm"]) == held


def test_dynamic_setting_varies_conditions_within_an_episode():
    env = gym.make("AutoScale-v0", setting="dynamic")
    env.reset(seed=11)
    infos = [env.step(0)[4] for _ in range(99)]
    assert len({i["rssi_wifi_dbm"] for i in infos}) > 50
    assert len({i["co_cpu_pct"] for i in infos}) > 1


@pytest.mark.parametrize("call", [lambda u: u.oracle_action(), lambda u: u.counterfactuals(),
                                  lambda u: u.context])
def test_pending_request_accessors_need_a_reset(call):
    env = gym.make("AutoScale-v0")
    with pytest.raises(gym.error.ResetNeeded, match="reset"):
        call(env.unwrapped)
    env.reset(seed=0)
    call(env.unwrapped)  # fine after reset


def test_counterfactuals_are_the_pending_requests_outcomes(env):
    env.reset(seed=2)
    cf = env.unwrapped.counterfactuals()
    a = int(np.argmin(cf["energy_mj"]))
    _, r, _, _, info = env.step(a)
    assert (info["latency_ms"], info["energy_mj"], r) == (cf["latency_ms"][a], cf["energy_mj"][a],
                                                           cf["reward"][a])


# ---- reset options and a closed env -------------------------------------------------------


def test_reset_refuses_unknown_options_naming_the_valid_keys():
    env = gym.make("AutoScale-v0")
    with pytest.raises(ValueError, match=r"unknown key\(s\) \['sead'\]; valid keys: none"):
        env.reset(seed=0, options={"sead": 1})
    env.reset(seed=0, options={})  # empty is fine
    env.reset(seed=0, options=None)


@pytest.mark.parametrize("backend", ["sim", "replay"])
def test_a_closed_env_raises_a_clear_error_on_step_and_reset(backend):
    kwargs = {"trace": "sim-galaxy_s10e-non_streaming-dynamic"} if backend == "replay" else {}
    if backend == "replay":
        kwargs.update(device=None, scenario=None, setting=None)
    env = gym.make("AutoScale-v0", backend=backend, **kwargs)
    env.reset(seed=0)
    env.step(0)
    env.close()
    with pytest.raises(gym.error.ClosedEnvironmentError, match="closed"):
        env.step(0)
    with pytest.raises(gym.error.ClosedEnvironmentError, match="closed"):
        env.reset(seed=0)

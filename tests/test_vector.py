"""The native vector env: registered, gymnasium's VectorEnv API, and equal to N single envs."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest
from gymnasium.vector import AutoresetMode

from autoscale_env.world.errors import InvalidActionError
from autoscale_env.vector import AutoScaleVectorEnv

VECTOR_KEYS = ("latency_ms", "energy_mj", "accuracy", "qos_met", "accuracy_met", "co_cpu_pct",
               "co_mem_pct", "rssi_wifi_dbm", "rssi_p2p_dbm", "oracle_action")


def make_vec(n, **kwargs):
    return gym.make_vec("AutoScale-v0", num_envs=n, vectorization_mode="vector_entry_point",
                        **kwargs)


def test_make_vec_returns_the_native_vector_env():
    env = make_vec(4)
    assert isinstance(env.unwrapped, AutoScaleVectorEnv)
    assert env.metadata["autoreset_mode"] == AutoresetMode.NEXT_STEP
    assert env.num_envs == 4 and env.unwrapped.max_episode_steps == 100
    assert env.single_action_space == gym.spaces.Discrete(9)
    assert env.observation_space.shape == (4, 7)
    obs, infos = env.reset(seed=0)
    assert obs.shape == (4, 7) and obs.dtype == np.int64 and obs in env.observation_space
    obs, rewards, terminations, truncations, infos = env.step(np.zeros(4, dtype=np.int64))
    assert rewards.dtype == np.float64 and rewards.shape == (4,)
    assert terminations.dtype == truncations.dtype == np.bool_
    for key in VECTOR_KEYS:
        assert infos[key].shape == (4,) and infos[f"_{key}"].all(), key
    env.close()


def single_envs_like_next_step_autoreset(n, seed, actions, reset_at=None, **kwargs):
    """What N single gym.make envs give for the same actions, autoreset as NEXT_STEP does."""
    envs = [gym.make("AutoScale-v0", **kwargs) for _ in range(n)]
    first = [env.reset(seed=seed + i) for i, env in enumerate(envs)]
    pending = [False] * n
    out = []
    for t, step_actions in enumerate(actions):
        if reset_at is not None and t == reset_at[0]:  # a partial reset, as options["reset_mask"]
            mask = reset_at[1]
            resets = {i: envs[i].reset() for i in range(n) if mask[i]}
            for i in resets:
                pending[i] = False
            out.append(("reset", resets))
        results = []
        for i, (env, a) in enumerate(zip(envs, step_actions)):
            if pending[i]:
                obs, info = env.reset()
                results.append((obs, 0.0, False, False, info))
                pending[i] = False
            else:
                obs, r, term, trunc, info = env.step(int(a))
                results.append((obs, r, term, trunc, info))
                pending[i] = term or trunc
        out.append(("step", results))
    return first, out


def row(obs, i):
    """Sub-env ``i``'s observation of a batched one (an array or a dict of arrays)."""
    return {k: v[i] for k, v in obs.items()} if isinstance(obs, dict) else obs[i]


def assert_same_obs(vector_obs, single_obs):
    if isinstance(single_obs, dict):
        for key in single_obs:
            assert np.array_equal(vector_obs[key], single_obs[key]), key
            assert vector_obs[key].dtype == single_obs[key].dtype
    else:
        assert np.array_equal(vector_obs, single_obs) and vector_obs.dtype == single_obs.dtype


def assert_same_infos(infos, single_infos):
    for i, info in enumerate(single_infos):
        for key in VECTOR_KEYS:
            mask = infos.get(f"_{key}")
            assert (mask is not None and bool(mask[i])) == (key in info), (i, key)
            if key in info:
                # repr: bit for bit for floats
                assert repr(type(info[key])(infos[key][i])) == repr(info[key]), (i, key)


@pytest.mark.parametrize("device, scenario, setting, obs_mode, block_size", [
    ("mi8pro", "non_streaming", "dynamic", "paper", 101),
    ("mi8pro", "non_streaming", "static", "paper", 7),
    ("moto_x_force", "translation", "dynamic", "extended", 1),
    ("galaxy_s10e", "streaming", "static", "extended", 1024),
])
def test_sub_envs_equal_single_envs_bit_for_bit(device, scenario, setting, obs_mode, block_size):
    """The vector env (blocks of ``block_size``) against single envs (the default block)."""
    n, seed, steps = 5, 11, 320  # every sub-env is truncated and autoreset at least twice
    kwargs = {"device": device, "scenario": scenario, "setting": setting, "obs_mode": obs_mode}
    venv = make_vec(n, backend_options={"block_size": block_size}, **kwargs)
    actions = np.random.default_rng(3).integers(venv.single_action_space.n, size=(steps, n))
    reset_at = (150, np.array([True, False, True, True, False]))  # desynchronises the sub-envs
    first, reference = single_envs_like_next_step_autoreset(n, seed, actions, reset_at, **kwargs)

    obs, infos = venv.reset(seed=seed)
    for i, (o, _) in enumerate(first):
        assert_same_obs(row(obs, i), o)
    assert_same_infos(infos, [info for _, info in first])

    saw_truncation = saw_autoreset = 0
    step = iter(actions)
    for kind, results in reference:
        if kind == "reset":
            obs, infos = venv.reset(options={"reset_mask": reset_at[1]})
            for i, (o, info) in results.items():
                assert_same_obs(row(obs, i), o)
                for key in VECTOR_KEYS:
                    if key in info:
                        assert repr(type(info[key])(infos[key][i])) == repr(info[key])
            continue
        obs, rewards, terms, truncs, infos = venv.step(next(step))
        for i, (o, r, term, trunc, _) in enumerate(results):
            assert_same_obs(row(obs, i), o)
            assert repr(float(rewards[i])) == repr(r)
            assert bool(terms[i]) == term and bool(truncs[i]) == trunc
        assert_same_infos(infos, [info for *_, info in results])
        saw_truncation += int(truncs.sum())
        saw_autoreset += sum(1 for *_, info in results if "latency_ms" not in info)
    assert saw_truncation >= 2 * n and saw_autoreset >= 2 * n
    venv.close()


@pytest.mark.parametrize("setting", ["static", "dynamic"])
def test_results_do_not_depend_on_block_size_or_threads(setting):
    def run(block_size, threads):
        env = make_vec(90, backend_options={"block_size": block_size}, threads=threads,
                       setting=setting)
        obs, _ = env.reset(seed=5)
        out = [obs]
        actions = np.random.default_rng(0).integers(9, size=(250, 90))
        for a in actions:
            obs, r, _, trunc, infos = env.step(a)
            out += [obs, r, trunc, infos["oracle_action"], infos["latency_ms"]]
        env.close()
        return out
    runs = [run(101, 1), run(1, 1), run(7, 2), run(101, 2), run(1024, 3)]
    for other in runs[1:]:
        for x, y in zip(runs[0], other):
            assert np.array_equal(x, y)


def test_invalid_actions_are_refused():
    env = make_vec(3)
    env.reset(seed=0)
    with pytest.raises(InvalidActionError, match="valid actions are 0..8"):
        env.step(np.array([0, 9, 1]))
    with pytest.raises(InvalidActionError, match="3 integers"):
        env.step(np.array([0, 1]))
    with pytest.raises(InvalidActionError):
        env.step(np.array([0.5, 1.0, 2.0]))


def test_step_before_reset_and_other_backends_are_refused():
    env = make_vec(2)
    with pytest.raises(gym.error.ResetNeeded):
        env.step(np.zeros(2, dtype=np.int64))
    with pytest.raises(ValueError, match="vectorization_mode='sync'"):
        make_vec(2, backend="live")


def test_seed_list_and_same_seed_same_trajectory():
    def run(seed):
        env = make_vec(3)
        obs, _ = env.reset(seed=seed)
        rewards = [env.step(np.full(3, 2))[1] for _ in range(150)]
        return obs, np.array(rewards)
    a, b = run(4), run([4, 5, 6])
    assert np.array_equal(a[0], b[0]) and np.array_equal(a[1], b[1])
    c = run(5)
    assert not np.array_equal(a[1], c[1])


def test_without_time_limit_blocks_roll_over_like_the_unwrapped_env():
    n = 3
    venv = make_vec(n, max_episode_steps=None, backend_options={"block_size": 7})
    singles = [gym.make("AutoScale-v0").unwrapped for _ in range(n)]
    obs, _ = venv.reset(seed=21)
    for i, env in enumerate(singles):
        assert np.array_equal(obs[i], env.reset(seed=21 + i)[0])
    actions = np.random.default_rng(1).integers(9, size=(330, n))  # several blocks per sub-env
    for a in actions:
        obs, rewards, terms, truncs, infos = venv.step(a)
        assert not truncs.any() and not terms.any()
        for i, env in enumerate(singles):
            o, r, _, _, info = env.step(int(a[i]))
            assert np.array_equal(obs[i], o) and rewards[i] == r
            assert infos["oracle_action"][i] == info["oracle_action"]

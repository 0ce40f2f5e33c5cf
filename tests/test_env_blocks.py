"""The batch API (``pending_block`` / ``advance``) and the episode prefetch are ``step`` and
``reset``, bit for bit: compiled agents rely on it (agents/base.py, agents/experiments/evaluation.py)."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest

import autoscale_env  # noqa: F401
from autoscale_env.backends.sim import PREFETCH_EPISODES

CELLS = [("mi8pro", "streaming", "dynamic"), ("moto_x_force", "translation", "static")]


def _info_arrays(infos, names):
    return {k: [info[k] for info in infos] for k in names}


@pytest.mark.parametrize("cell", CELLS)
@pytest.mark.parametrize("obs_mode", ["paper", "extended"])
def test_advance_is_k_steps(cell, obs_mode):
    device, scenario, setting = cell
    a_env = AutoScale(device, scenario, setting, obs_mode)  # stepped
    b_env = AutoScale(device, scenario, setting, obs_mode)  # advanced
    a_env.reset(seed=5)
    b_env.reset(seed=5)
    rng = np.random.default_rng(0)
    # chunks that end inside a block, exactly at its end, and single steps, over several blocks
    for k in (1, 37, 63, 101, 1, 250 % 101, 101, 100, 2):
        block = b_env.pending_block()
        k = min(k, len(block.state))
        actions = rng.integers(b_env.action_space.n, size=k)
        infos, rewards, observations = [], [], []
        for row, a in enumerate(actions):
            cf = a_env.counterfactuals()
            assert np.array_equal(cf["reward"], block.reward[row])
            assert np.array_equal(cf["energy_mj"], block.energy_mj[row])
            assert a_env.oracle_action() == block.oracle_action[row]
            assert a_env.encoder.flat_index(_state(a_env.observation())) == block.state[row]
            obs, r, terminated, truncated, info = a_env.step(int(a))
            assert not terminated and not truncated
            infos.append(info)
            rewards.append(r)
            observations.append(obs)
        ex = b_env.advance(actions)
        assert ex.reward.tolist() == rewards
        for name in ("latency_ms", "energy_mj", "accuracy", "qos_met", "accuracy_met",
                     "co_cpu_pct", "co_mem_pct", "rssi_wifi_dbm", "rssi_p2p_dbm",
                     "oracle_action"):
            assert getattr(ex, name).tolist() == [info[name] for info in infos], name
        names = [w.name for w in b_env.workloads]
        assert [names[n] for n in ex.network] == [i["network"] for i in infos]
        assert [b_env.targets[a].__str__() for a in ex.action] == [i["target"] for i in infos]
        assert np.array_equal(_state(b_env.observation()), _state(observations[-1]))
        if obs_mode == "extended":
            assert np.array_equal(b_env.observation()["raw"], observations[-1]["raw"])
    assert a_env.np_random.bit_generator.state == b_env.np_random.bit_generator.state
    # and the two envs continue alike, by step
    for _ in range(150):
        ra, rb = a_env.step(3), b_env.step(3)
        assert ra[1] == rb[1] and ra[4] == rb[4] and np.array_equal(_state(ra[0]), _state(rb[0]))


def test_block_arrays_are_read_only_and_bad_actions_are_refused():
    env = AutoScale(*CELLS[0])
    with pytest.raises(gym.error.ResetNeeded):
        env.pending_block()
    env.reset(seed=1)
    block = env.pending_block()
    with pytest.raises(ValueError):
        block.reward[0, 0] = 1.0
    with pytest.raises(ValueError):
        env.advance(np.zeros(len(block.state) + 1, dtype=np.int64))
    with pytest.raises(ValueError):
        env.advance(np.array([env.action_space.n]))
    with pytest.raises(ValueError):
        env.advance(np.array([0.5]))


def test_no_batches_where_actions_are_observed_or_steps_rendered():
    env = gym.make("AutoScale-v0", render_mode="ansi").unwrapped
    env.reset(seed=0)
    assert env.pending_block() is None
    with pytest.raises(ValueError):
        env.advance(np.array([0]))


def test_prefetched_resets_give_the_same_episodes_as_one_at_a_time():
    """Episodes prefetched in batches (unseeded resets), dropped on a seeded reset or a replaced
    generator, equal the episodes of an env that computes one block per reset."""
    a = AutoScale(*CELLS[0])
    b = gym.make("AutoScale-v0", device=CELLS[0][0], scenario=CELLS[0][1], setting=CELLS[0][2],
                 backend_options={"prefetch_episodes": 1}).unwrapped  # one episode at a time
    sizes = []
    for e in range(2 * PREFETCH_EPISODES + 10):
        seed = 11 if e in (0, 40) else None
        if e == 90:  # a replaced generator (as restore_checkpoint does)
            for env in (a, b):
                env.np_random = np.random.default_rng(123)
        oa, ia = a.reset(seed=seed)
        ob, ib = b.reset(seed=seed)
        assert ia == ib and np.array_equal(oa, ob)
        sizes.append(a.backend._ahead.size)
        assert b.backend._ahead.size == 1
        steps = 120 if e % 17 == 0 else 30  # some episodes run past the first block
        for t in range(steps):
            ra, rb = a.step(t % 9), b.step(t % 9)
            assert ra[1] == rb[1] and ra[4] == rb[4] and np.array_equal(ra[0], rb[0])
        assert a.np_random.bit_generator.state == b.np_random.bit_generator.state
    assert max(sizes) >= 32  # batches grew (and fell back to 1 after the seeded reset)
    assert sizes[0] == 1 and sizes[40] == 1 and sizes[90] == 1


def AutoScale(device, scenario, setting, obs_mode="paper"):
    return gym.make("AutoScale-v0", device=device, scenario=scenario, setting=setting,
                    obs_mode=obs_mode).unwrapped


def _state(obs):
    return obs["state"] if isinstance(obs, dict) else obs

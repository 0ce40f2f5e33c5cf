"""The fleet environment: PettingZoo API, N=1 is AutoScale-v0, contention grows with N."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest

import autoscale_env  # noqa: F401  (registers AutoScale-v0)
from autoscale_env.world.types import Target
from autoscale_env.world.errors import ConfigError, InvalidActionError, UnknownNameError
from autoscale_env.fleet import make_core, parallel_env

pettingzoo = pytest.importorskip("pettingzoo")


@pytest.mark.parametrize("n", [1, 4, 64])
def test_parallel_api_test_passes(n):
    from pettingzoo.test import parallel_api_test
    env = parallel_env(num_phones=n, mix="benchmark", load_signal=n == 4)
    # PettingZoo's test resets with options={"options": 1} as a probe; the fleet, as
    # AutoScale-v0, refuses unknown keys, so this instance declares the probe's key known.
    env.RESET_OPTIONS = ("options",)
    parallel_api_test(env, num_cycles=250)


@pytest.mark.parametrize("kwargs", [
    {},
    {"device": "galaxy_s10e", "scenario": "streaming", "setting": "static"},
    {"device": "moto_x_force", "scenario": "translation", "setting": "dynamic"},
])
@pytest.mark.parametrize("seed", [0, 7])
def test_one_phone_equals_autoscale_v0_step_for_step(kwargs, seed):
    fleet = parallel_env(num_phones=1, **kwargs)
    single = gym.make("AutoScale-v0", **kwargs)
    obs, info = fleet.reset(seed=seed)
    obs1, info1 = single.reset(seed=seed)
    assert np.array_equal(obs["phone_0"], obs1)
    assert info["phone_0"] == info1
    actions = np.random.default_rng(seed + 100).integers(single.action_space.n, size=330)
    resets = 0
    for a in actions.tolist():
        if not fleet.agents:  # both truncate at 100 requests; reset without a seed continues
            obs, info = fleet.reset()
            obs1, info1 = single.reset()
            resets += 1
            assert np.array_equal(obs["phone_0"], obs1) and info["phone_0"] == info1
        obs, r, term, trunc, info = fleet.step({"phone_0": a})
        obs1, r1, term1, trunc1, info1 = single.step(a)
        assert np.array_equal(obs["phone_0"], obs1)
        assert r["phone_0"] == r1  # bit for bit
        assert (term["phone_0"], trunc["phone_0"]) == (term1, trunc1)
        for key, value in info1.items():
            assert info["phone_0"][key] == value, key
        assert info["phone_0"]["upload_extra_ms"] == 0.0 and info["phone_0"]["edge_wait_ms"] == 0.0
    assert resets == 3


def test_batched_worlds_equal_one_backend_per_phone():
    a = make_core(6, mix="benchmark", batched=True)
    b = make_core(6, mix="benchmark", batched=False)
    assert a.worlds.batched and not b.worlds.batched
    oa, ca = a.reset(3)
    ob, cb = b.reset(3)
    assert np.array_equal(oa, ob)
    rng = np.random.default_rng(0)
    for _ in range(250):
        act = rng.integers(9, size=6)
        xa, ra, ia = a.step(act)
        xb, rb, ib = b.step(act)
        assert np.array_equal(xa, xb) and np.array_equal(ra, rb)
        assert np.array_equal(ia["latency_ms"], ib["latency_ms"])


def test_phones_keep_their_own_world_whatever_the_fleet_size():
    """Phone k's requests do not depend on N (phone_rngs), so fleets of different sizes compare
    the same phones; only the contention terms differ."""
    small, big = make_core(2), make_core(8)
    small.reset(5)
    big.reset(5)
    for _ in range(120):
        cs, cb = small.context(), big.context()
        for key in ("network", "rssi_wifi_dbm", "co_cpu_pct"):
            assert np.array_equal(cs[key], cb[key][:2])
        small.step(np.zeros(2, dtype=np.int64))
        big.step(np.zeros(8, dtype=np.int64))


def _edge_run(n, rounds=150, **kwargs):
    core = make_core(n, **kwargs)
    edge = core.targets[0].index(Target.parse("edge/gpu/fp32"))
    core.reset(0)
    lat, extra = [], []
    for _ in range(rounds):
        _, _, info = core.step(np.full(n, edge))
        lat.append(info["latency_ms"][:1])  # phone 0: the same requests at every N
        extra.append(info["upload_extra_ms"][:1] + info["edge_wait_ms"][:1])
    return np.mean(lat), np.mean(extra)


@pytest.mark.parametrize("sharing", ["equal_throughput", "equal_airtime"])
def test_forced_edge_latency_grows_with_fleet_size(sharing):
    runs = [_edge_run(n, sharing=sharing, setting="static") for n in (1, 2, 8, 32)]
    latency = [r[0] for r in runs]
    assert runs[0][1] == 0.0
    assert all(b > a for a, b in zip(latency, latency[1:])), latency


def test_edge_queue_disciplines_both_add_wait():
    for discipline in ("fifo", "processor_sharing"):
        core = make_core(16, discipline=discipline)
        edge = core.targets[0].index(Target.parse("edge/gpu/fp32"))
        core.reset(1)
        waits = [core.step(np.full(16, edge))[2]["edge_wait_ms"] for _ in range(20)]
        assert np.mean(waits) > 0, discipline


def test_local_phones_do_not_affect_each_other():
    core = make_core(8)
    core.reset(2)
    for _ in range(50):
        obs, r, info = core.step(np.zeros(8, dtype=np.int64))  # local/cpu/fp32 for all
        assert not info["upload_extra_ms"].any() and not info["edge_wait_ms"].any()


def test_load_signal_counts_the_previous_round():
    core = make_core(20, load_signal=True)
    edge = core.targets[0].index(Target.parse("edge/cpu/fp32"))
    cloud = core.targets[0].index(Target.parse("cloud/gpu/fp32"))
    obs, _ = core.reset(0)
    assert obs.shape == (20, 9) and not obs[:, 7:].any()
    space = parallel_env(num_phones=20, load_signal=True).observation_space("phone_0")
    rng = np.random.default_rng(0)
    for _ in range(30):
        actions = rng.choice([0, edge, cloud], size=20)
        obs, _, info = core.step(actions)
        n_edge = np.count_nonzero(info["connected"] & (actions == edge))
        n_ap = np.count_nonzero(info["connected"] & (actions == cloud))
        # counts 0 / 1-3 / 4-15 / 16+ -> bins 0 / 1 / 2 / 3 (fleet.toml [load_signal])
        assert (obs[:, 7] == np.searchsorted([1, 4, 16], n_edge, side="right")).all()
        assert (obs[:, 8] == np.searchsorted([1, 4, 16], n_ap, side="right")).all()
        assert all(space.contains(o) for o in obs)


def test_parallel_env_errors_are_clear():
    env = parallel_env(num_phones=2)
    env.reset(seed=0)
    with pytest.raises(InvalidActionError, match="missing"):
        env.step({"phone_0": 0})
    with pytest.raises(InvalidActionError, match="phone 1: action 9 outside Discrete"):
        env.step({"phone_0": 0, "phone_1": 9})
    with pytest.raises(InvalidActionError, match="phone 0: action -1 outside"):
        env.step({"phone_0": -1, "phone_1": 0})
    with pytest.raises(InvalidActionError, match="phone 0: action 'edge' is not an integer"):
        env.step({"phone_0": "edge", "phone_1": 0})
    with pytest.raises(ValueError, match="num_phones"):
        parallel_env(num_phones=0)
    with pytest.raises(ValueError, match="one name or 3 names"):
        parallel_env(num_phones=3, device=["mi8pro", "galaxy_s10e"])
    with pytest.raises(UnknownNameError, match="fleet mix"):
        parallel_env(num_phones=2, mix="nope")
    with pytest.raises(ConfigError, match="sharing"):
        parallel_env(num_phones=2, sharing="round_robin")


def test_mixed_devices_have_their_own_action_spaces():
    env = parallel_env(num_phones=3, device=["mi8pro", "moto_x_force", "galaxy_s10e"])
    env.reset(seed=0)
    assert [env.action_space(a).n for a in env.possible_agents] == [9, 8, 9]
    obs, r, term, trunc, info = env.step({"phone_0": 8, "phone_1": 7, "phone_2": 0})
    assert info["phone_1"]["target"] == "cloud/gpu/fp32"


def test_threaded_generation_equals_one_thread():
    a = make_core(150, threads=2)
    b = make_core(150, threads=1)
    oa, _ = a.reset(9)
    ob, _ = b.reset(9)
    assert np.array_equal(oa, ob)
    rng = np.random.default_rng(2)
    for _ in range(210):  # three blocks
        act = rng.integers(9, size=150)
        xa, ra, ia = a.step(act)
        xb, rb, ib = b.step(act)
        assert np.array_equal(xa, xb) and np.array_equal(ra, rb)
    a.close()


MIXED = ["mi8pro", "moto_x_force", "galaxy_s10e", "moto_x_force", "mi8pro"]  # 9, 8, 9, 8, 9 targets


def _joint(core, rng, k=None):
    """Random valid joint actions of ``core``'s phones: (N,), or (k, N)."""
    shape = (core.n_phones,) if k is None else (k, core.n_phones)
    return (rng.random(shape) * core.n_targets).astype(np.int64)


@pytest.mark.parametrize("kwargs", [
    {"num_phones": 16},
    {"num_phones": 5, "device": MIXED},
    {"num_phones": 12, "discipline": "processor_sharing", "sharing": "equal_airtime",
     "p2p_shares_ap_channel": True},
])
def test_a_step_is_the_batch_evaluation_of_its_joint_action_bit_for_bit(kwargs):
    """A step (and ``evaluate`` of one joint action) runs the round in one compiled pass; a batch
    of joint actions goes through the array forms of the same rules. Both give the same
    outcomes, contention terms and rewards, bit for bit, across block boundaries."""
    core = make_core(**kwargs)
    core.reset(3)
    rng = np.random.default_rng(1)
    for _ in range(130):
        batch = _joint(core, rng, 4)
        together = core.evaluate(batch)
        for k, joint in enumerate(batch):
            alone = core.evaluate(joint)
            assert alone.keys() == together.keys()
            for key, value in alone.items():
                assert value.dtype == together[key].dtype, key
                assert np.array_equal(value, together[key][k]), key
        _, r, info = core.step(batch[0])
        assert np.array_equal(r, together["reward"][0])
        for key in ("latency_ms", "energy_mj", "upload_extra_ms", "edge_wait_ms", "link"):
            assert np.array_equal(info[key], together[key][0]), key


def test_step_results_are_fresh_arrays_the_next_step_leaves_alone():
    core = make_core(8)
    obs, _ = core.reset(0)
    rng = np.random.default_rng(0)
    kept = []
    for _ in range(220):  # across two block boundaries: the core refills its block arrays
        obs, r, info = core.step(_joint(core, rng))
        result = (obs, r, info, core.context(), core.counterfactual_rewards())
        kept.append((result, [obs.copy(), r.copy(), {k: v.copy() for k, v in info.items()},
                              {k: v.copy() for k, v in result[3].items()}, result[4].copy()]))
    for (obs, r, info, ctx, alone), (obs0, r0, info0, ctx0, alone0) in kept:
        assert np.array_equal(obs, obs0) and np.array_equal(r, r0)
        assert all(np.array_equal(info[k], info0[k]) for k in info0)
        assert all(np.array_equal(ctx[k], ctx0[k]) for k in ctx0)
        assert np.array_equal(alone, alone0)


def test_the_core_refuses_an_action_out_of_range_and_does_not_advance():
    core, fresh = make_core(3, device=["mi8pro", "moto_x_force", "mi8pro"]), make_core(
        3, device=["mi8pro", "moto_x_force", "mi8pro"])
    core.reset(1)
    fresh.reset(1)
    with pytest.raises(InvalidActionError, match=r"^phone 1: action 8 outside Discrete\(8\); "
                       r"valid actions are 0\.\.7 \(local/cpu/fp32, .*cloud/gpu/fp32\)$"):
        core.step(np.array([0, 8, 0]))
    with pytest.raises(InvalidActionError, match=r"^phone 0: action -1 outside Discrete\(9\)"):
        core.step(np.array([-1, 9, 0]))  # the first phone out of range is named
    with pytest.raises(InvalidActionError, match=r"^actions must be 3 integers \(one per phone\), "
                       r"got shape \(3,\) dtype float64$"):
        core.step(np.zeros(3))
    obs, r, info = core.step(np.array([1, 7, 2]))
    obs1, r1, info1 = fresh.step(np.array([1, 7, 2]))
    assert np.array_equal(obs, obs1) and np.array_equal(r, r1)
    assert all(np.array_equal(info[k], info1[k]) for k in info1)


def test_batched_worlds_of_phones_with_different_targets_equal_one_backend_per_phone():
    """The sim writes each group's blocks straight into the fleet's arrays, a phone with fewer
    targets into the first of its row (the rest stay NaN, their rewards alone -inf)."""
    a = make_core(5, device=MIXED, batched=True)
    b = make_core(5, device=MIXED, batched=False)
    assert a.worlds.batched and not b.worlds.batched
    a.reset(4)
    b.reset(4)
    rng = np.random.default_rng(3)
    for _ in range(120):
        ra, rb = a.counterfactual_rewards(), b.counterfactual_rewards()
        assert np.array_equal(ra, rb)
        assert (ra[~a.valid_actions] == -np.inf).all()
        act = _joint(a, rng)
        xa, ra, ia = a.step(act)
        xb, rb, ib = b.step(act)
        assert np.array_equal(xa, xb) and np.array_equal(ra, rb)
        assert all(np.array_equal(ia[k], ib[k]) for k in ib)

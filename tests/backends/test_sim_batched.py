"""The sim's counter-based randomness: the documented words, and results that do not depend on the
block size, the batch, the order of episodes or the thread count."""

from __future__ import annotations

import dataclasses
import hashlib
import os
import subprocess
import sys

import numpy as np
import pytest

from autoscale_env.backends import sim as sim_module
from autoscale_env.backends.sim import (DRAWS_PER_REQUEST, SimBackend, SimState, normal,
                                        random_word, uniform)
from autoscale_env.world import config

MASK = (1 << 64) - 1


def splitmix64(key: int, counter: int) -> int:
    """SplitMix64's output at ``counter`` of the stream seeded ``key``, in Python integers."""
    z = (key + (counter + 1) * 0x9E3779B97F4A7C15) & MASK
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & MASK
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & MASK
    return z ^ (z >> 31)


def test_random_words_are_splitmix64_at_the_documented_counter():
    for key, request, draw in [(0, 0, 0), (12345, 7, 3), (MASK, 1000, 63), (2**63 + 5, 99, 16)]:
        want = splitmix64(key, request * DRAWS_PER_REQUEST + draw)
        assert int(random_word(np.uint64(key), request, draw)) == want
        assert uniform(np.uint64(key), request, draw) == (want >> 11) * 2.0 ** -53
    # SplitMix64 with seed 1234567 (the reference implementation's published first output)
    assert splitmix64(1234567, 0) == 6457827717110365317


def test_normals_are_standard_normal():
    key = np.uint64(987654321)
    z = np.array([normal(key, i, d) for i in range(4000) for d in range(16, 26)])
    assert abs(z.mean()) < 0.02 and abs(z.std() - 1) < 0.02
    assert abs(np.mean(np.abs(z) > 2) - 0.0455) < 0.005
    assert abs(np.mean(np.abs(z) > 3) - 0.0027) < 0.0015


def test_every_request_and_draw_gets_a_fresh_word_across_episodes():
    keys = [np.uint64(k) for k in np.random.default_rng(0).bit_generator.random_raw(20)]
    words = {int(random_word(k, i, d)) for k in keys for i in range(50)
             for d in range(DRAWS_PER_REQUEST)}
    assert len(words) == 20 * 50 * DRAWS_PER_REQUEST


def test_reset_takes_one_word_of_the_env_generator():
    sim = SimBackend("mi8pro", "non_streaming", "static")
    rng, twin = np.random.default_rng(5), np.random.default_rng(5)
    sim.reset(rng)
    assert int(sim._state.keys[0]) == int(twin.bit_generator.random_raw())
    assert rng.random() == twin.random()  # nothing else was drawn


def episode(setting: str, block_size: int, seed: int = 42, lengths=(60, 240)):
    sim = SimBackend("mi8pro", "non_streaming", setting, block_size=block_size)
    rng = np.random.default_rng(seed)
    out = []
    for length in lengths:  # the first episode leaves part of a block unused
        sim.reset(rng)
        blocks = []
        while sum(len(b) for b in blocks) < length:
            blocks.append(sim.next_block())
        out.append([np.concatenate([getattr(b, k) for b in blocks])[:length]
                    for k in ("network", "co_cpu_pct", "co_mem_pct", "rssi_wifi_dbm",
                              "rssi_p2p_dbm", "latency_ms", "energy_mj")])
    return out


@pytest.mark.parametrize("setting", ["static", "dynamic"])
@pytest.mark.parametrize("block_size", [1, 7, 1024])
def test_a_seed_means_the_same_trajectory_whatever_the_block_size(setting, block_size):
    want = episode(setting, 101)
    got = episode(setting, block_size)
    for ep_got, ep_want in zip(got, want):
        for a, b in zip(ep_got, ep_want):
            assert a.tobytes() == b.tobytes()


@pytest.mark.parametrize("setting", ["static", "dynamic"])
def test_many_episodes_at_once_equal_one_at_a_time_in_any_order(setting):
    sim = SimBackend("mi8pro", "non_streaming", setting)
    E = 6
    state = SimState(E)
    sim.reset_worlds([np.random.default_rng(10 + e) for e in range(E)], state, np.arange(E))
    singles = []
    for e in range(E):
        one = SimState(1)
        sim.reset_worlds([np.random.default_rng(10 + e)], one, np.array([0]))
        singles.append([sim.generate(one, np.array([0])) for _ in range(3)])
    order = np.array([3, 0, 5, 1, 4, 2])  # any subset, any order
    for b in range(3):
        batch = sim.generate(state, order)
        for i, e in enumerate(order):
            for got, want in zip(batch, singles[e][b]):
                assert got[i].tobytes() == want[0].tobytes()


@pytest.mark.parametrize("setting", ["static", "dynamic"])
def test_thread_count_does_not_change_a_bit(setting):
    sim = SimBackend("galaxy_s10e", "streaming", setting)
    E = 200  # 200 x 101 requests: enough for run_split to use every thread it is given

    def run(threads):
        state = SimState(E)
        sim.reset_worlds([np.random.default_rng(e) for e in range(E)], state, np.arange(E))
        return [sim.generate(state, np.arange(E), threads=threads) for _ in range(2)]

    one, two, three = run(1), run(2), run(3)
    for blocks in (two, three):
        for got, want in zip(blocks, one):
            for a, b in zip(got, want):
                assert a.tobytes() == b.tobytes()


@pytest.mark.parametrize("setting", ["static", "dynamic"])
def test_requests_split_across_threads_change_no_bit(setting, monkeypatch):
    """Fewer episodes than threads: the sequential pass, then request ranges on threads
    (``sim._generate``), here forced on small blocks, into fresh arrays and into transposed
    views with rows (as the fleet calls it); several blocks, so state carries over."""
    monkeypatch.setattr(sim_module, "MIN_REQUESTS_PER_SPLIT", 1)
    sim = SimBackend("mi8pro", "non_streaming", setting)

    def run(E, threads, n, transposed):
        state = SimState(E)
        sim.reset_worlds([np.random.default_rng(9 + e) for e in range(E)], state, np.arange(E))
        blocks = []
        for _ in range(3):
            if transposed:
                T = len(sim.targets)
                ctx = [np.empty((n, E + 1), dtype=np.int64)] + [np.empty((n, E + 1)) for _ in range(4)]
                outs = [np.empty((n, E + 1, T)) for _ in range(2)]
                views = sim_module.Requests(*(a.T for a in ctx),
                                            *(a.transpose(1, 0, 2) for a in outs))
                rows = np.arange(E) + 1
                sim.generate(state, np.arange(E), n=n, out=views, threads=threads, rows=rows)
                blocks.append([np.ascontiguousarray(a[rows]) for a in views])
            else:
                blocks.append(list(sim.generate(state, np.arange(E), n=n, threads=threads)))
        return blocks

    for E, n in ((1, 101), (1, 1024), (2, 37)):
        want = run(E, 1, n, False)
        for threads, transposed in ((2, False), (3, False), (3, True)):
            got = run(E, threads, n, transposed)
            for g, w in zip(got, want):
                for a, b in zip(g, w):
                    assert a.tobytes() == b.tobytes(), (E, n, threads, transposed)


_VECTOR_FINGERPRINT = """
import hashlib, numpy as np, gymnasium as gym, numba
import autoscale_env
h = hashlib.sha256()
env = gym.make_vec("AutoScale-v0", num_envs=96, vectorization_mode="vector_entry_point",
                   setting="dynamic")
obs, info = env.reset(seed=7)
h.update(obs.tobytes())
for t in range(230):
    obs, r, _, tr, info = env.step(np.arange(96) % 9)
    h.update(obs.tobytes() + r.tobytes() + info["latency_ms"].tobytes() + tr.tobytes()
             + info["oracle_action"].tobytes())
print(numba.get_num_threads(), h.hexdigest())
"""


@pytest.mark.slow
def test_numba_thread_count_does_not_change_the_vector_env():
    """The same vector run with ``NUMBA_NUM_THREADS=1`` and ``=2``, each in a fresh process."""
    def run(threads: str) -> list[str]:
        env = {**os.environ, "NUMBA_NUM_THREADS": threads}
        out = subprocess.run([sys.executable, "-c", _VECTOR_FINGERPRINT], env=env,
                             capture_output=True, text=True, timeout=600, check=True)
        return out.stdout.split()

    one, two = run("1"), run("2")
    assert one[0] == "1" and two[0] == "2"
    assert one[1] == two[1] and one[1] != hashlib.sha256(b"").hexdigest()


def test_episodes_never_share_a_stream():
    sim = SimBackend("mi8pro", "non_streaming", "dynamic")
    state = SimState(4)
    rng = np.random.default_rng(0)
    blocks = []
    for _ in range(3):  # three episodes of four worlds from one generator
        sim.reset_worlds([rng] * 4, state, np.arange(4))
        blocks.append(sim.generate(state, np.arange(4)))
    latency = np.concatenate([b.latency_ms.reshape(4, -1) for b in blocks])
    assert len({row.tobytes() for row in latency}) == 12


@pytest.mark.slow
def test_dynamic_processes_have_their_configured_means_and_drops_carry_over():
    apps, static, dynamic = config.load_settings()
    # Drops as deep, frequent and long as they must be to show in a mean: the bundled, sourced
    # values (1.2 % of requests, 12.7 dB, 1.2 requests) shift it by 0.2 dB, under the noise.
    dynamic = dataclasses.replace(dynamic, rssi_drop_probability=0.03, rssi_drop_depth_db=15.0,
                                  rssi_drop_mean_requests=3.0)
    sim = SimBackend("mi8pro", "non_streaming", "dynamic", block_size=7,  # drops cross blocks
                     settings=(apps, static, dynamic))
    rng = np.random.default_rng(3)
    sim.reset(rng)
    blocks = [sim.next_block() for _ in range(3000)]
    d = sim.dynamic
    wifi = np.concatenate([b.rssi_wifi_dbm for b in blocks])
    low, high = d.rssi_wifi_range_dbm[:2]
    # deep drops: some requests sit well below the segment range (fading is 3 dB)
    dropped = np.mean(wifi < low - 4 * d.rssi_fading_sigma_db)
    assert 0.002 < dropped < 0.05
    # a request is inside a drop about p * mean_length / (1 + p * mean_length) of the time
    share = d.rssi_drop_probability * d.rssi_drop_mean_requests
    share /= 1 + share
    expected = (low + high) / 2 - share * d.rssi_drop_depth_db
    assert np.mean(wifi) == pytest.approx(expected, abs=1.5)
    cpu = np.concatenate([b.co_cpu_pct for b in blocks])
    assert 0 < np.mean(cpu == 0.0) < 0.5  # the empty background holds exactly 0 %
    assert np.all((cpu == 0.0) | ((cpu >= 1) & (cpu <= 100)))


def test_lognormal_table_reads_the_exact_quantile_function():
    """The interpolated table is within 1e-5 of exp(sigma * z) in the body of the distribution
    and exact in the tails."""
    sigma = 0.15
    table = sim_module.lognormal_table(sigma)
    key = np.uint64(4242)
    for i in range(3000):
        p = (int(random_word(key, i, 20)) >> 11) * 2.0 ** -53 + 2.0 ** -54
        exact = np.exp(sigma * sim_module.inverse_normal_cdf(p))
        got = sim_module.lognormal(key, i, 20, sigma, table[None], 0)
        if 0.01 <= p <= 0.99:
            assert got == pytest.approx(exact, rel=1e-5)
        else:
            assert got == exact
    assert sim_module.inverse_normal_cdf(0.5) == 0.0
    assert sim_module.inverse_normal_cdf(0.975) == pytest.approx(1.959963985, rel=1e-8)
    assert sim_module.inverse_normal_cdf(1e-6) == pytest.approx(-4.753424309, rel=1e-8)


def test_noise_is_lognormal_with_the_settings_sigmas():
    sim = SimBackend("mi8pro", "non_streaming", "static")
    sigma = np.array(sim.processes.noise_sigma)
    key = np.uint64(77)
    tables, rows = sim.processes.noise_table, sim.processes.noise_class
    log_noise = np.log([[sim_module.lognormal(key, i, sim_module.NOISE + j, sigma[j], tables,
                                              rows[j])
                         for j in range(len(sigma))] for i in range(3000)])
    assert np.allclose(log_noise.std(axis=0), sigma, rtol=0.06)
    assert np.all(np.abs(np.median(np.exp(log_noise), axis=0) - 1) < 0.02)


def test_env_pickles_and_deep_copies_mid_episode():
    import copy
    import pickle

    import gymnasium as gym
    env = gym.make("AutoScale-v0")
    env.reset(seed=1)
    env.step(2)
    clones = [pickle.loads(pickle.dumps(env)), copy.deepcopy(env)]
    for a in [0, 4, 8, 3] * 30:  # crosses the truncation
        results = [e.step(a) for e in (env, *clones)]
        for r in results[1:]:
            assert repr(r[1:]) == repr(results[0][1:]) and np.array_equal(r[0], results[0][0])
        if results[0][3]:
            for e in (env, *clones):
                e.reset()

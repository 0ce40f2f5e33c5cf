"""The fast, batched sim: equal to the readable reference formulas, and independent of batching."""

from __future__ import annotations

import numpy as np
import pytest

from autoscale_env.backends import power, radio
from autoscale_env.backends.sim import SimBackend, SimState, _box_muller
from autoscale_env.config import get_reward_preset
from autoscale_env.reward import accuracy_terms, reward, reward_from_terms
from autoscale_env.state import Binner
from conftest import CELLS


@pytest.mark.parametrize("edges", [[0.5, 25, 75], [-80.0], [1, 30, 60], [0.1, 0.3],
                                   [-92, -82, -80, -79, -77, -74, -70, -66, -65, -64, -60]])
@pytest.mark.parametrize("side", ["left", "right"])
@pytest.mark.parametrize("size", [50, 5000])  # below and above Binner.MIN_SIZE
def test_binner_equals_searchsorted(edges, side, size):
    rng = np.random.default_rng(0)
    e = np.asarray(edges, dtype=float)
    special = np.concatenate([e, e + 1e-9, e - 1e-9, np.round(e) + 0.5,
                              [np.nan, np.inf, -np.inf, 0.0, -0.0, 1e300, -1e300]])
    x = np.concatenate([rng.uniform(-130, 130, size), special])
    table = np.arange(len(e) + 1)[::-1] * 10
    assert np.array_equal(Binner(edges, side)(x), np.searchsorted(e, x, side=side))
    assert np.array_equal(Binner(edges, side, table)(x), table[np.searchsorted(e, x, side=side)])


def box_muller(words: np.ndarray) -> np.ndarray:
    """The documented transform, written plainly (float32), for one world's (P, n) words."""
    a = ((words >> np.uint64(40)).astype(np.float32) + np.float32(0.5)) * np.float32(2.0 ** -24)
    b = (words & np.uint64(0xFFFFFF)).astype(np.float32) * np.float32(2.0 * np.pi * 2.0 ** -24)
    r = np.sqrt(np.float32(-2.0) * np.log(a))
    return np.concatenate([r * np.cos(b), r * np.sin(b)])


def test_random_words_give_the_documented_uniforms_and_normals():
    sim = SimBackend("mi8pro", "non_streaming", "dynamic")
    raw = sim.draw(np.random.default_rng(5))
    assert raw.shape == (11 + 8, 101) and raw.dtype == np.uint64
    # the uniforms are exactly what Generator.random() makes of the same words
    assert np.array_equal((raw[:11] >> np.uint64(11)) * 2.0 ** -53,
                          np.random.default_rng(5).random((11, 101)))
    z = box_muller(raw[11:])
    assert np.array_equal(z, _box_muller(raw[None, 11:], sim._scratch)[0])
    big = box_muller(np.random.default_rng(0).bit_generator.random_raw((40, 5000)))
    assert abs(big.mean()) < 0.01 and abs(big.std() - 1) < 0.01
    assert abs(np.mean(np.abs(big) > 2) - 0.0455) < 0.003


@pytest.mark.parametrize("device, scenario, setting", CELLS)
def test_vectorised_model_equals_the_reference_formulas(device, scenario, setting):
    sim = SimBackend(device, scenario, setting)
    rng = np.random.default_rng(1)
    sim.reset(rng)
    for _ in range(3):  # blocks, with dynamic processes carried over
        raw = sim.draw(rng)
        net, cpu, mem, wifi, p2p, latency, energy = sim.generate(
            raw[None], sim._state, slice(0, 1))
        net, cpu, mem, wifi, p2p = net[0], cpu[0], mem[0], wifi[0], p2p[0]
        z = box_muller(raw[sim._n_uniform:])  # rows: see the draw order
        noise = np.exp(sim._noise_sigma32 * z[:sim._n_noise]).astype(float)
        L = sim._n_local
        local = remote = 0
        for j, target in enumerate(sim.targets):
            if target.is_local:
                rows = sim._local_noise_col[local, net]
                lat, e = power.local_run(
                    base_ms=sim._base_ms[net, j], noise=noise[rows, np.arange(len(net))],
                    co_cpu_frac=cpu / 100.0, co_mem_frac=mem / 100.0,
                    cpu_interference=sim._kc[net, j], mem_interference=sim._km[net, j],
                    busy_power_w=sim._busy_w[net, j], idle_power_w=sim._idle_w[net, j],
                    base_power_w=sim.phone.base_power_w)
                local += 1
            else:
                rows = L + sim._remote_noise_col[remote, net]
                name, rssi = ("p2p", p2p) if target.location == "edge" else ("wifi", wifi)
                lat, e = radio.offload(
                    sim.links[name], wifi_active_w=sim.phone.wifi_active_w,
                    base_power_w=sim.phone.base_power_w, rssi_dbm=rssi,
                    goodput_noise=noise[L + sim._n_remote + (name == "p2p")],
                    up_bytes=sim._up_bytes[net], down_bytes=sim._down_bytes[net],
                    server_ms=sim._server_ms[net, j] * noise[rows, np.arange(len(net))],
                    request_gap_ms=sim.scenario.request_gap_ms)
                remote += 1
            np.testing.assert_allclose(latency[j, 0], lat, rtol=1e-12)
            np.testing.assert_allclose(energy[j, 0], e, rtol=1e-12)
        assert np.all(np.isfinite(latency)) and np.all(latency > 0) and np.all(energy > 0)


@pytest.mark.parametrize("setting", ["static", "dynamic"])
def test_many_worlds_at_once_equal_one_at_a_time(setting):
    sim = SimBackend("mi8pro", "non_streaming", setting)
    E = 6
    rngs = [np.random.default_rng(10 + i) for i in range(E)]
    state = SimState(E)
    for e in range(E):
        sim.reset_world(rngs[e], state, e)
    singles = []
    for e in range(E):
        one = SimState(1)
        rng = np.random.default_rng(10 + e)
        sim.reset_world(rng, one, 0)
        blocks = []
        for _ in range(3):
            blocks.append(sim.generate(sim.draw(rng)[None], one, slice(0, 1)))
        singles.append(blocks)
    for b in range(3):
        raw = np.empty((E, *sim.draw_shape()), dtype=np.uint64)
        for e in range(E):
            sim.draw(rngs[e], raw[e])
        order = np.array([3, 0, 5, 1, 4, 2])  # any subset, any order
        batch = sim.generate(raw[order], state, order)
        for i, e in enumerate(order):
            for got, want in zip(batch, singles[e][b]):
                assert np.array_equal(got[..., i, :] if got.ndim == 3 else got[i],
                                      want[..., 0, :] if want.ndim == 3 else want[0])


def test_reward_terms_equal_the_where_formula_bit_for_bit():
    rng = np.random.default_rng(0)
    preset = get_reward_preset("energy")
    shape = (9, 40, 30)
    latency = rng.uniform(1, 120, shape)
    energy = rng.uniform(1, 2000, shape)
    accuracy = rng.uniform(0.6, 0.8, shape)
    latency[0, :3] = np.nan
    energy[1, :3] = np.inf
    ref, target = rng.uniform(50, 500, (40, 30)), 0.7
    value, qos, acc = reward(preset, latency_ms=latency, energy_mj=energy, accuracy=accuracy,
                             reference_energy_mj=ref, qos_ms=50.0, accuracy_target=target)
    # the formula of rewards.toml, written the plain way
    ratio = energy / ref
    c = preset.violation_penalty
    missed = (c + ratio + preset.latency_weight * np.maximum(0.0, latency / 50.0 - 1.0)
              + preset.accuracy_weight * np.maximum(0.0, target - accuracy) * 100.0)
    met = (latency <= 50.0) & (accuracy >= target - 1e-12)
    plain = np.where(met, -np.minimum(ratio, c), -missed)
    assert plain.tobytes() == value.tobytes()
    assert np.array_equal(qos, latency <= 50.0) and np.array_equal(acc, accuracy >= target - 1e-12)
    met_terms, penalty = accuracy_terms(preset, accuracy=accuracy, accuracy_target=target)
    again, _ = reward_from_terms(preset, latency_ms=latency, energy_mj=energy,
                                 reference_energy_mj=ref, qos_ms=50.0, accuracy_met=met_terms,
                                 accuracy_penalty=penalty)
    assert again.tobytes() == value.tobytes()


def test_dynamic_processes_have_their_configured_means_and_drops_carry_over():
    sim = SimBackend("mi8pro", "non_streaming", "dynamic", block_size=7)  # drops cross blocks
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

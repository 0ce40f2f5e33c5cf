"""The fast, batched sim: equal to the readable reference formulas, and independent of batching."""

from __future__ import annotations

import numpy as np
import pytest

import copy
import dataclasses

from autoscale_env.world import config
from autoscale_env.world import power, radio
from autoscale_env.backends.sim import SimBackend, SimState, _box_muller
from autoscale_env.world.config import get_reward_preset
from autoscale_env.world.rules import OutcomeModel, Scratch, oracle_actions, reference_energy_mj
from autoscale_env.world.rules import outcomes as rules_outcomes
from autoscale_env.world.reward import accuracy_terms, reward, reward_from_terms
from autoscale_env.world.observation import Binner
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
    """The documented transform, written plainly (float32), for (P, n) words."""
    a = ((words >> np.uint64(40)).astype(np.float32) + np.float32(0.5)) * np.float32(2.0 ** -24)
    b = (words & np.uint64(0xFFFFFF)).astype(np.float32) * np.float32(2.0 * np.pi * 2.0 ** -24)
    r = np.sqrt(np.float32(-2.0) * np.log(a))
    return np.concatenate([r * np.cos(b), r * np.sin(b)])


def test_random_words_give_the_documented_uniforms_and_normals():
    sim = SimBackend("mi8pro", "non_streaming", "dynamic")
    sim.reset(np.random.default_rng(5))
    stream = np.random.Generator(copy.deepcopy(sim._state.streams[0]))
    raw = sim.draw(sim._state, 0)
    assert raw.shape == (101, 11 + 8) and raw.dtype == np.uint64  # request-major
    # the uniforms are exactly what Generator.random() makes of the same words
    assert np.array_equal((raw[:, :11] >> np.uint64(11)) * 2.0 ** -53,
                          stream.random((101, 19))[:, :11])
    z = box_muller(raw[:, 11:].T)
    assert np.array_equal(z, _box_muller(np.ascontiguousarray(raw[:, 11:].T), Scratch()))
    big = box_muller(np.random.default_rng(0).bit_generator.random_raw((40, 5000)))
    assert abs(big.mean()) < 0.01 and abs(big.std() - 1) < 0.01
    assert abs(np.mean(np.abs(big) > 2) - 0.0455) < 0.003


def reference_outcomes(model, net, cpu, mem, wifi, p2p, noise):
    """Every target's outcome from power.local_run / radio.offload and the profiles, plainly."""
    phone, L, R = model.phone, model.n_local, model.n_remote
    names = [model.workloads[k].name for k in net]
    latency, energy = [], []
    for j, target in enumerate(model.targets):
        host = phone if target.is_local else (model.edge if target.location == "edge" else model.cloud)
        units = [host.unit_latency_ms(n, target.unit) for n in names]
        # a fallback uses the noise row of the target that asks for its unit directly
        own = [model.targets.index(type(target)(target.location, *u.split("/")))
               if type(target)(target.location, *u.split("/")) in model.targets else j
               for u, _ in units]
        local_targets = [t for t in model.targets if t.is_local]
        remote_targets = [t for t in model.targets if not t.is_local]
        row = np.array([local_targets.index(model.targets[k]) if target.is_local
                        else L + remote_targets.index(model.targets[k]) for k in own])
        eps = noise[row, np.arange(len(net))]
        ms = np.array([m for _, m in units])
        if target.is_local:
            procs = [phone.processors[u.split("/")[0]] for u, _ in units]
            lat, e = power.local_run(
                base_ms=ms, noise=eps, co_cpu_frac=cpu / 100.0, co_mem_frac=mem / 100.0,
                cpu_interference=np.array([p.cpu_interference for p in procs]),
                mem_interference=np.array([p.mem_interference for p in procs]),
                busy_power_w=np.array([p.busy_power_w for p in procs]),
                idle_power_w=np.array([p.idle_power_w for p in procs]),
                base_power_w=phone.base_power_w)
        else:
            name, rssi = ("p2p", p2p) if target.location == "edge" else ("wifi", wifi)
            lat, e = radio.offload(
                model.links[name], wifi_active_w=phone.wifi_active_w,
                base_power_w=phone.base_power_w, rssi_dbm=rssi,
                goodput_noise=noise[L + R + (name == "p2p")],
                up_bytes=np.array([model.workloads[k].input_bytes for k in net], dtype=float),
                down_bytes=np.array([model.workloads[k].output_bytes for k in net], dtype=float),
                server_ms=(ms + host.overhead_ms) * eps,
                request_gap_ms=model.scenario.request_gap_ms)
        latency.append(lat)
        energy.append(e)
    return np.array(latency), np.array(energy)


@pytest.mark.parametrize("device, scenario, setting", CELLS)
def test_vectorised_model_equals_the_reference_formulas(device, scenario, setting):
    sim = SimBackend(device, scenario, setting)
    rng = np.random.default_rng(1)
    sim.reset(rng)
    for _ in range(3):  # blocks, with dynamic processes carried over
        raw = sim.draw(sim._state, 0)
        net, cpu, mem, wifi, p2p, latency, energy = (
            a.copy() for a in sim.generate(raw[None], sim._state, slice(0, 1)))
        net, cpu, mem, wifi, p2p = net[0], cpu[0], mem[0], wifi[0], p2p[0]
        z = box_muller(raw[:, sim._n_uniform:].T)  # words: see the draw order
        noise = np.exp(sim._noise_sigma32[:, 0] * z[:sim.model.n_noise]).astype(float)
        lat, e = reference_outcomes(sim.model, net, cpu, mem, wifi, p2p, noise)
        np.testing.assert_allclose(latency[:, 0], lat, rtol=1e-12)
        np.testing.assert_allclose(energy[:, 0], e, rtol=1e-12)
        assert np.all(np.isfinite(latency)) and np.all(latency > 0) and np.all(energy > 0)


@pytest.mark.parametrize("shape", [(), (7,), (3, 5), (2, 3, 4)])
def test_outcome_model_takes_any_batch_shape_with_the_same_bits(shape):
    model = OutcomeModel("moto_x_force", "streaming")  # 8 targets, a fallback unit
    rng = np.random.default_rng(0)
    size = int(np.prod(shape))
    net = rng.integers(len(model.workloads), size=size)
    ctx = [rng.uniform(0, 100, size), rng.uniform(0, 100, size), rng.uniform(-95, -40, size),
           rng.uniform(-95, -40, size)]
    noise = rng.lognormal(0, 0.1, (model.n_noise, size))
    flat = model.outcomes(net, *ctx, noise)
    shaped = model.outcomes(net.reshape(shape), *(c.reshape(shape) for c in ctx),
                            noise.reshape((-1,) + shape), scratch=Scratch())
    for a, b in zip(flat, shaped):
        assert b.shape == (len(model.targets),) + shape
        assert a.tobytes() == b.reshape(a.shape).tobytes()


def test_reference_energy_is_a_pure_function_of_the_profile():
    phone = config.load_device("mi8pro")
    ref = reference_energy_mj(phone)
    assert np.array_equal(ref, SimBackend("mi8pro", "translation", "static").reference_energy_mj)
    cpu = phone.processors["cpu"]
    for k, w in enumerate(config.load_workloads().values()):
        assert ref[k] == phone.latency_ms[w.name]["cpu/fp32"] * (cpu.busy_power_w + phone.base_power_w)
    hotter = dataclasses.replace(phone, base_power_w=phone.base_power_w + 1.0)
    assert np.all(reference_energy_mj(hotter) > ref)  # a loaded profile object is accepted
    assert np.array_equal(SimBackend(hotter).reference_energy_mj, reference_energy_mj(hotter))


@pytest.mark.parametrize("setting", ["static", "dynamic"])
@pytest.mark.parametrize("block_size", [1, 7, 101, 250])
def test_a_seed_means_the_same_trajectory_whatever_the_block_size(setting, block_size):
    def requests(block, n=300):
        sim = SimBackend("mi8pro", "non_streaming", setting, block_size=block)
        rng = np.random.default_rng(42)
        out = []
        for episode_length in (60, 240):  # the first episode leaves part of a block unused
            sim.reset(rng)
            blocks = []
            while sum(len(b) for b in blocks) < episode_length:
                blocks.append(sim.next_block())
            out.append([np.concatenate([getattr(b, k) for b in blocks])[:episode_length]
                        for k in ("network", "co_cpu_pct", "rssi_wifi_dbm", "latency_ms",
                                  "energy_mj")])
        return out

    want = requests(101)
    got = requests(block_size)
    for ep_got, ep_want in zip(got, want):
        for a, b in zip(ep_got, ep_want):
            assert a.tobytes() == b.tobytes()


def test_every_request_gets_fresh_words_across_episodes_and_worlds():
    sim = SimBackend("mi8pro", "non_streaming", "dynamic")
    state = SimState(3)
    rngs = [np.random.default_rng(s) for s in (0, 1, 2)]
    words = []
    for _ in range(2):  # two episodes of each world
        sim.reset_worlds(rngs, state, np.arange(3))
        words += [sim.draw(state, e) for e in range(3)]
    flat = np.concatenate([w.reshape(-1) for w in words])
    assert len(np.unique(flat)) == len(flat)  # no 64-bit word repeats anywhere


@pytest.mark.parametrize("setting", ["static", "dynamic"])
def test_many_worlds_at_once_equal_one_at_a_time(setting):
    sim = SimBackend("mi8pro", "non_streaming", setting)
    E = 6
    state = SimState(E)
    for e in range(E):
        sim.reset_world(np.random.default_rng(10 + e), state, e)
    singles = []
    for e in range(E):
        one = SimState(1)
        sim.reset_world(np.random.default_rng(10 + e), one, 0)
        blocks = []
        for _ in range(3):
            blocks.append([a.copy() for a in sim.generate(sim.draw(one, 0)[None], one,
                                                           slice(0, 1), scratch=Scratch())])
        singles.append(blocks)
    for b in range(3):
        raw = np.empty((E, sim.block_size, sim.words_per_request), dtype=np.uint64)
        for e in range(E):
            sim.draw(state, e, raw[e])
        order = np.array([3, 0, 5, 1, 4, 2])  # any subset, any order
        batch = sim.generate(raw[order], state, order, scratch=Scratch())
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


@pytest.mark.slow
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


@pytest.mark.parametrize("size", [5, 101, 5000])  # argmax path and row-loop path
def test_oracle_is_the_first_best_target_and_unknown_with_any_nan(size):
    rng = np.random.default_rng(size)
    rewards = rng.integers(-3, 0, (9, size)).astype(float)  # many ties
    rewards[4, 1] = np.nan
    rewards[0, 2] = np.nan
    got = oracle_actions(rewards, Scratch())
    want = rewards.argmax(axis=0)
    want[[1, 2]] = -1
    assert got.tolist() == want.tolist()


def test_outcomes_function_equals_the_sims_noise_free_expectation():
    sim = SimBackend("galaxy_s10e", "translation", "static")
    names = [w.name for w in sim.workloads]
    block = sim.expected(names[3], co_cpu_pct=40.0, co_mem_pct=20.0, rssi_wifi_dbm=-82.0,
                         rssi_p2p_dbm=-60.0)
    latency, energy = rules_outcomes(config.load_device("galaxy_s10e"), [3], [40.0], [20.0],
                                     [-82.0], [-60.0], scenario="translation")
    assert latency.shape == (9, 1)
    assert latency[:, 0].tobytes() == block.latency_ms[0].tobytes()
    assert energy[:, 0].tobytes() == block.energy_mj[0].tobytes()

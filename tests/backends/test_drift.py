"""The drift backend: the world is the sim's until the shift, then exactly one thing changes and
stays; the thermal shift is caused by the agent's own actions."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest

from autoscale_env.backends.drift import DriftBackend, expected_outcomes, load_drift
from autoscale_env.backends.sim import SimBackend
from autoscale_env.world.config import ConfigError, load_links
from autoscale_env.env import AutoScaleEnv
from autoscale_env.world.errors import UnknownNameError


def blocks(backend, n_blocks, seed=0):
    backend.reset(np.random.default_rng(seed))
    return [backend.next_block() for _ in range(n_blocks)]


def sim_blocks(n_blocks, scenario="non_streaming", seed=0):
    return blocks(SimBackend(scenario=scenario, setting="dynamic"), n_blocks, seed)


def targets_where(backend, pred):
    return np.array([pred(t) for t in backend.targets])


def test_before_the_shift_it_is_the_dynamic_sim_bit_for_bit():
    drift = blocks(DriftBackend(shift="heavy_app", shift_at=303), 5)
    sim = sim_blocks(5)
    for k in range(3):  # requests 0..302
        for field in ("network", "co_cpu_pct", "co_mem_pct", "rssi_wifi_dbm", "latency_ms",
                      "energy_mj"):
            assert getattr(drift[k], field).tobytes() == getattr(sim[k], field).tobytes()
    assert not np.array_equal(drift[3].co_cpu_pct, sim[3].co_cpu_pct)


def test_heavy_app_loads_the_phone_and_slows_only_local_targets():
    d, s = blocks(DriftBackend(shift="heavy_app", shift_at=0), 3), sim_blocks(3)
    local = targets_where(DriftBackend(shift="heavy_app"), lambda t: t.is_local)
    for bd, bs in zip(d, s):
        np.testing.assert_allclose(bd.co_cpu_pct, np.minimum(bs.co_cpu_pct + 60.0, 100.0))
        assert np.all(bd.latency_ms[:, local] > bs.latency_ms[:, local])
        np.testing.assert_array_equal(bd.latency_ms[:, ~local], bs.latency_ms[:, ~local])


def test_edge_gone_times_out_every_edge_request_after_the_shift():
    backend = DriftBackend(shift="edge_gone", shift_at=150)
    b = blocks(backend, 3)
    edge = targets_where(backend, lambda t: t.location == "edge")
    timeout = load_links()["p2p"].timeout_ms
    assert np.all(b[1].latency_ms[49:, edge] == timeout) and np.all(b[2].rssi_p2p_dbm == -120.0)
    # before the shift the edge link is the sim's own (which may itself drop out now and then)
    np.testing.assert_array_equal(b[1].latency_ms[:49, edge], sim_blocks(3)[1].latency_ms[:49, edge])


def test_cloud_slow_adds_the_mm1_wait_to_cloud_requests():
    backend = DriftBackend(shift="cloud_slow", shift_at=0)
    d, s = blocks(backend, 2), sim_blocks(2)
    cloud = targets_where(backend, lambda t: t.location == "cloud")
    extra = d[0].latency_ms - s[0].latency_ms
    assert np.all(extra[:, ~cloud] == 0.0)
    connected = s[0].rssi_wifi_dbm >= load_links()["wifi"].disconnect_rssi_dbm
    # rho = 0.9: the wait is 9 service times, so at least 9 x the 2 ms server overhead
    assert np.all(extra[connected][:, cloud] >= 9 * 2.0 - 1e-9)
    np.testing.assert_allclose(d[0].energy_mj - s[0].energy_mj,
                               backend.phone.base_power_w * extra)


def test_wifi_weak_moves_the_signal_from_strong_to_weak():
    b = blocks(DriftBackend(shift="wifi_weak", shift_at=505), 10)
    wifi = np.concatenate([x.rssi_wifi_dbm for x in b])
    assert np.median(wifi[:505]) > -62 and np.median(wifi[505:]) < -80
    before = np.concatenate([x.latency_ms for x in b])[:505]
    after = np.concatenate([x.latency_ms for x in b])[505:]
    cloud = targets_where(DriftBackend(shift="wifi_weak"), lambda t: t.location == "cloud")
    assert np.median(after[:, cloud]) > 2 * np.median(before[:, cloud])


def test_recomputed_outcomes_keep_the_requests_noise():
    """A shifted outcome is the noise-free model's ratio times the request's own outcome."""
    backend = DriftBackend(shift="heavy_app", shift_at=0)
    d, s = blocks(backend, 1)[0], sim_blocks(1)[0]
    lat_s, _ = expected_outcomes(backend.sim, s.network, s.co_cpu_pct, s.co_mem_pct,
                                 s.rssi_wifi_dbm, s.rssi_p2p_dbm)
    lat_d, _ = expected_outcomes(backend.sim, d.network, d.co_cpu_pct, d.co_mem_pct,
                                 d.rssi_wifi_dbm, d.rssi_p2p_dbm)
    np.testing.assert_allclose(d.latency_ms / lat_d, s.latency_ms / lat_s, rtol=1e-9)


def run_fixed(target, steps, shift_at, seed=0):
    backend = DriftBackend(shift="thermal", shift_at=shift_at)
    env = AutoScaleEnv(backend=backend)
    a = env.target_index(target)
    env.reset(seed=seed)
    lat, temp, oracle_ok = [], [], True
    for _ in range(steps):
        cf = env.counterfactuals()
        oracle_ok &= cf["reward"][env.oracle_action()] == cf["reward"].max()
        _, _, _, _, info = env.step(a)
        lat.append(info["latency_ms"])
        temp.append(backend.temperature_c)
    return np.array(lat), np.array(temp), oracle_ok


def test_thermal_a_policy_that_keeps_running_locally_gets_slower_over_time():
    lat, temp, oracle_ok = run_fixed("local/cpu/fp32", 9000, shift_at=3000)
    # against the same requests in the world without drift (the network mix varies a lot more
    # between windows than the throttling does)
    plain = AutoScaleEnv(scenario="streaming", setting="dynamic")
    plain.reset(seed=0)
    a = plain.target_index("local/cpu/fp32")
    lat = lat / np.array([plain.step(a)[4]["latency_ms"] for _ in range(9000)])
    windows = [lat[k:k + 1000].mean() for k in (2000, 3000, 5000, 8000)]
    assert windows[0] < windows[1] < windows[2] < windows[3]
    assert windows[3] > 1.4 * windows[0]
    assert temp[8999] > temp[2999] + 5.0
    assert oracle_ok  # the oracle stays the best target of every request's (throttled) outcomes


def test_thermal_throttling_is_caused_by_the_actions():
    """Same world, same seed: only the local CPU policy heats the phone past the trip point."""
    _, hot, _ = run_fixed("local/cpu/fp32", 6000, shift_at=0)
    lat_dsp, cool, _ = run_fixed("local/dsp/int8", 6000, shift_at=0)
    trip = load_drift()[1]["thermal"].params["trip_c"]
    assert hot[-1] > trip > cool[-1]
    assert abs(lat_dsp[-1000:].mean() / lat_dsp[:1000].mean() - 1.0) < 0.05  # DSP not throttled


def test_only_thermal_backends_have_the_env_hook():
    assert not hasattr(SimBackend(), "observe_action")
    assert not hasattr(DriftBackend(shift="wifi_weak"), "observe_action")
    assert callable(DriftBackend(shift="thermal").observe_action)


def test_deterministic_and_usable_through_gym_make():
    def roll():
        env = gym.make("AutoScale-v0", backend="drift", scenario="streaming",
                       backend_options={"shift": "thermal", "shift_at": 50})
        obs, _ = env.reset(seed=11)
        out = []
        for t in range(300):
            obs, r, term, trunc, info = env.step(t % 9)
            out.append((r, info["latency_ms"]))
            if trunc:
                env.reset()
        return out, env.unwrapped.backend.temperature_c
    assert roll() == roll()


def test_bad_names_and_files_are_refused(tmp_path):
    with pytest.raises(UnknownNameError, match="thermal"):
        DriftBackend(shift="earthquake")
    bad = tmp_path / "drift.toml"
    bad.write_text('[run]\nshift_at = 10\nafter = 10\nsource = "x"\n'
                   '[shifts.a]\ndescription = "d"\nscenario = "streaming"\nkind = "load"\n'
                   'add_cpu_pct = 10.0\nadd_mem_pct = 200.0\nsource = "x"\n')
    with pytest.raises(ConfigError, match=r"drift.toml: field 'shifts.a.add_mem_pct'"):
        load_drift(bad)
    bad.write_text(bad.read_text().replace("200.0", "20.0").replace('kind = "load"',
                                                                     'kind = "flood"'))
    with pytest.raises(ConfigError, match="kind"):
        load_drift(bad)

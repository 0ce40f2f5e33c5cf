"""The world's rules, per request: hand-computed cases from the data files, the reward, the oracle,
and the same code run as plain Python (``NUMBA_DISABLE_JIT=1``)."""

from __future__ import annotations

import dataclasses
import hashlib
import math
import os
import subprocess
import sys
import tomllib
from pathlib import Path

import numpy as np
import pytest

from autoscale_env.world import config, radio
from autoscale_env.world.config import get_reward_preset
from autoscale_env.world.reward import request_reward, reward
from autoscale_env.world.rules import OutcomeModel, oracle_actions, reference_energy_mj
from autoscale_env.world.rules import outcomes as rules_outcomes
from autoscale_env.backends.sim import SimBackend

DATA = Path(config.DATA_DIR)


def toml(name: str) -> dict:
    """A data file read straight from disk (not through config.py)."""
    with open(DATA / name, "rb") as f:
        return tomllib.load(f)


def mcs_goodput_by_hand(link: dict, rssi: float) -> float:
    """links.toml's rate model, written out: the highest MCS whose (shifted) sensitivity the RSSI
    clears, at PHY rate x multiplier x goodput fraction."""
    if rssi < link["disconnect_rssi_dbm"]:
        return 0.0
    usable = [k for k, r in enumerate(link["mcs_min_rssi_dbm"])
              if rssi >= r + link["threshold_shift_db"]]
    if not usable:
        return link["below_min_goodput_mbps"]
    return link["mcs_phy_mbps"][max(usable)] * link["phy_multiplier"] * link["goodput_fraction"]


def test_local_run_by_hand_from_the_profile():
    """mnv1 on the Mi 8 Pro's CPU with 50 % co-running CPU and 20 % memory, noise-free."""
    phone = toml("devices/mi8pro.toml")
    cpu = phone["processors"]["cpu"]
    base_w = phone["base"]["power_w"]
    busy_ms = phone["latency_ms"]["mnv1"]["cpu/fp32"] * (1 + cpu["mem_interference"] * 0.20)
    latency = busy_ms * (1 + cpu["cpu_interference"] * 0.50)
    energy = (cpu["busy_power_w"] * busy_ms + cpu["idle_power_w"] * (latency - busy_ms)
              + base_w * latency)
    model = OutcomeModel("mi8pro")
    j = [str(t) for t in model.targets].index("local/cpu/fp32")
    net = [w.name for w in model.workloads].index("mnv1")
    lat, en = model.outcomes([net], [50.0], [20.0], [-55.0], [-50.0])
    assert lat[0, j] == pytest.approx(latency, rel=1e-12)
    assert en[0, j] == pytest.approx(energy, rel=1e-12)


@pytest.mark.parametrize("rssi", [-50.0, -65.5, -78.0, -85.0])
def test_cloud_offload_by_hand_from_the_profiles_and_links(rssi):
    """mnv1 from the Mi 8 Pro to the cloud GPU over Wi-Fi at a given RSSI, noise-free."""
    phone, cloud = toml("devices/mi8pro.toml"), toml("devices/cloud_server.toml")
    wifi = toml("links.toml")["wifi"]
    net = toml("workloads.toml")["networks"]["mnv1"]
    scenario = toml("scenarios.toml")["non_streaming"]
    active_w, base_w = phone["base"]["wifi_active_w"], phone["base"]["power_w"]
    rate = mcs_goodput_by_hand(wifi, rssi)  # Mbit/s = kbit/ms
    up_ms, down_ms = net["input_bytes"] * 8e-3 / rate, net["output_bytes"] * 8e-3 / rate
    usable = [k for k, r in enumerate(wifi["mcs_min_rssi_dbm"])
              if rssi >= r + wifi["threshold_shift_db"]]
    mcs = max(usable) if usable else -1
    rtt = wifi["rtt_ms"] + wifi["rtt_per_mcs_step_below_4_ms"] * max(0, 4 - mcs)
    server = cloud["latency_ms"]["mnv1"]["gpu/fp32"] + cloud["overhead_ms"]
    latency = up_ms + rtt + server + down_ms
    band = sum(rssi < e for e in wifi["power_band_edges_dbm"])
    tx, rx = (active_w * wifi[k][band] for k in ("tx_power_multiplier", "rx_power_multiplier"))
    tail = active_w * wifi["tail_power_fraction"] * min(wifi["tail_ms"],
                                                        scenario["request_gap_ms"])
    energy = tx * up_ms + rx * down_ms + base_w * latency + tail
    model = OutcomeModel("mi8pro", "non_streaming")
    j = [str(t) for t in model.targets].index("cloud/gpu/fp32")
    k = [w.name for w in model.workloads].index("mnv1")
    lat, en = model.outcomes([k], [0.0], [0.0], [rssi], [-50.0])
    assert lat[0, j] == pytest.approx(latency, rel=1e-12)
    assert en[0, j] == pytest.approx(energy, rel=1e-12)


def test_disconnected_link_times_out_at_transmit_and_base_power():
    wifi = toml("links.toml")["wifi"]
    phone = toml("devices/mi8pro.toml")
    model = OutcomeModel("mi8pro")
    j = [str(t) for t in model.targets].index("cloud/cpu/fp32")
    rssi = wifi["disconnect_rssi_dbm"] - 1.0
    lat, en = model.outcomes([0], [0.0], [0.0], [rssi], [-50.0])
    band = sum(rssi < e for e in wifi["power_band_edges_dbm"])
    tx = phone["base"]["wifi_active_w"] * wifi["tx_power_multiplier"][band]
    assert lat[0, j] == wifi["timeout_ms"]
    assert en[0, j] == pytest.approx((tx + phone["base"]["power_w"]) * wifi["timeout_ms"])


def test_goodput_is_the_one_rate_function_and_weakens_with_the_signal():
    wifi_toml = toml("links.toml")["wifi"]
    link = radio.link_params(config.load_links()["wifi"])
    rssi = np.arange(-40.0, -95.0, -0.5).tolist()
    rate = [radio.goodput_mbps(link, x) for x in rssi]
    assert rate == pytest.approx([mcs_goodput_by_hand(wifi_toml, x) for x in rssi], rel=1e-12)
    assert np.all(np.diff(rate) <= 0) and rate[-1] == 0.0


def test_reference_energy_is_the_quiet_cpu_fp32_run_of_the_profile():
    phone = config.load_device("mi8pro")
    ref = reference_energy_mj(phone)
    cpu = phone.processors["cpu"]
    for k, w in enumerate(config.load_workloads().values()):
        assert ref[k] == pytest.approx(phone.latency_ms[w.name]["cpu/fp32"]
                                       * (cpu.busy_power_w + phone.base_power_w), rel=1e-12)
    assert np.array_equal(ref, SimBackend("mi8pro", "translation", "static").reference_energy_mj)
    hotter = dataclasses.replace(phone, base_power_w=phone.base_power_w + 1.0)
    assert np.all(reference_energy_mj(hotter) > ref)  # a loaded profile object is accepted
    assert np.array_equal(SimBackend(hotter).reference_energy_mj, reference_energy_mj(hotter))


def test_reward_by_hand():
    p = get_reward_preset("energy")
    c, w_lat, w_acc = p.violation_penalty, p.latency_weight, p.accuracy_weight
    args = (p.violation_penalty, p.latency_weight, p.accuracy_weight)
    # met: -E/E_ref
    assert request_reward(40.0, 30.0, 0.71, 60.0, 0.70, 50.0, *args) == (-0.5, True, True)
    # met but very costly: capped at C
    assert request_reward(40.0, 6000.0, 0.71, 60.0, 0.70, 50.0, *args)[0] == -c
    # late by 20 %: C + ratio + w_lat * 0.2
    r, qos, acc = request_reward(60.0, 30.0, 0.71, 60.0, 0.70, 50.0, *args)
    assert (qos, acc) == (False, True) and r == pytest.approx(-(c + 0.5 + w_lat * 0.2))
    # 1 point short of the accuracy target
    r, qos, acc = request_reward(40.0, 30.0, 0.69, 60.0, 0.70, 50.0, *args)
    assert (qos, acc) == (True, False) and r == pytest.approx(-(c + 0.5 + w_acc * 1.0))
    # unknown outcome
    r, qos, _ = request_reward(math.nan, math.nan, 0.71, 60.0, 0.70, 50.0, *args)
    assert math.isnan(r) and qos is False


def test_reward_of_arrays_is_the_formula_of_rewards_toml():
    rng = np.random.default_rng(0)
    preset = get_reward_preset("energy")
    shape = (40, 30, 9)
    latency = rng.uniform(1, 120, shape)
    energy = rng.uniform(1, 2000, shape)
    accuracy = rng.uniform(0.6, 0.8, shape)
    latency[:3, 0, 0] = np.nan
    energy[:3, 0, 1] = np.inf
    ref, target = rng.uniform(50, 500, (40, 30, 1)), 0.7
    value, qos, acc = reward(preset, latency_ms=latency, energy_mj=energy, accuracy=accuracy,
                             reference_energy_mj=ref, qos_ms=50.0, accuracy_target=target)
    ratio = energy / ref
    c = preset.violation_penalty
    missed = (c + ratio + preset.latency_weight * np.maximum(0.0, latency / 50.0 - 1.0)
              + preset.accuracy_weight * np.maximum(0.0, target - accuracy) * 100.0)
    met = (latency <= 50.0) & (accuracy >= target - 1e-12)
    plain = np.where(met, -np.minimum(ratio, c), -missed)
    np.testing.assert_allclose(value, plain, rtol=1e-12)
    assert np.isnan(value[:3, 0, 0]).all()  # unknown outcomes stay unknown
    assert np.array_equal(qos, latency <= 50.0) and np.array_equal(acc, accuracy >= target - 1e-12)


def test_oracle_is_the_first_best_target_and_unknown_with_any_nan():
    rng = np.random.default_rng(3)
    rewards = rng.integers(-3, 0, (500, 9)).astype(float)  # many ties
    rewards[1, 4] = np.nan
    rewards[2, 0] = np.nan
    rewards[3, :] = -np.inf
    want = rewards.argmax(axis=1)
    want[[1, 2]] = -1
    assert oracle_actions(rewards).tolist() == want.tolist()
    assert oracle_actions(rewards.reshape(20, 25, 9)).tolist() == want.reshape(20, 25).tolist()


@pytest.mark.parametrize("shape", [(), (7,), (3, 5), (2, 3, 4)])
def test_outcome_model_takes_any_batch_shape_with_the_same_bits(shape):
    model = OutcomeModel("moto_x_force", "streaming")  # 8 targets, a fallback unit
    rng = np.random.default_rng(0)
    size = int(np.prod(shape))
    net = rng.integers(len(model.workloads), size=size)
    ctx = [rng.uniform(0, 100, size), rng.uniform(0, 100, size), rng.uniform(-95, -40, size),
           rng.uniform(-95, -40, size)]
    noise = rng.lognormal(0, 0.1, (size, model.n_noise))
    flat = model.outcomes(net, *ctx, noise)
    shaped = model.outcomes(net.reshape(shape), *(c.reshape(shape) for c in ctx),
                            noise.reshape(shape + (-1,)))
    for a, b in zip(flat, shaped):
        assert b.shape == shape + (len(model.targets),)
        assert a.tobytes() == b.reshape(a.shape).tobytes()


def test_a_fallback_shares_its_units_noise():
    model = OutcomeModel("mi8pro", "translation")
    names = [str(t) for t in model.targets]
    cpu, gpu = names.index("local/cpu/fp32"), names.index("local/gpu/fp32")
    lstm = [w.name for w in model.workloads].index("lstm_nmt")
    noise = np.ones((1, model.n_noise))
    noise[0, cpu] = 1.3  # the CPU's runtime noise; the GPU target falls back to the CPU
    lat, _ = model.outcomes([lstm], [0.0], [0.0], [-55.0], [-50.0], noise)
    assert lat[0, gpu] / lat[0, cpu] == pytest.approx(model.phone.fallback_slowdown)


def test_outcomes_function_equals_the_sims_noise_free_expectation():
    sim = SimBackend("galaxy_s10e", "translation", "static")
    names = [w.name for w in sim.workloads]
    block = sim.expected(names[3], co_cpu_pct=40.0, co_mem_pct=20.0, rssi_wifi_dbm=-82.0,
                         rssi_p2p_dbm=-60.0)
    latency, energy = rules_outcomes(config.load_device("galaxy_s10e"), [3], [40.0], [20.0],
                                     [-82.0], [-60.0], scenario="translation")
    assert latency.shape == (1, 9)
    assert latency.tobytes() == block.latency_ms.tobytes()
    assert energy.tobytes() == block.energy_mj.tobytes()


_FINGERPRINT = """
import hashlib, numpy as np, gymnasium as gym
import autoscale_env
h = hashlib.sha256()
for setting in ("static", "dynamic"):
    env = gym.make("AutoScale-v0", setting=setting)
    obs, info = env.reset(seed=3)
    h.update(obs.tobytes())
    for t in range(30):
        obs, r, _, _, info = env.step(t % 9)
        h.update(obs.tobytes() + np.float64(r).tobytes() + np.float64(info["latency_ms"]).tobytes()
                 + np.int64(info["oracle_action"]).tobytes())
print(h.hexdigest())
"""


@pytest.mark.slow
def test_plain_python_runs_the_same_code_with_the_same_results():
    """``NUMBA_DISABLE_JIT=1``: the kernel runs as plain Python (for a debugger) and gives the
    compiled results bit for bit."""
    def run(disable: str) -> str:
        env = {**os.environ, "NUMBA_DISABLE_JIT": disable}
        out = subprocess.run([sys.executable, "-c", _FINGERPRINT], env=env, capture_output=True,
                             text=True, timeout=600, check=True)
        return out.stdout.strip()

    plain, compiled = run("1"), run("0")
    assert len(plain) == 64 and plain == compiled
    assert hashlib.sha256(b"").hexdigest() != plain

"""backend="live": real inference here and on real loopback server processes.

One environment (two servers) is shared by the module to keep the suite fast; the fault test
kills its cloud server, so it runs last in file order. The request mix is MobileNet v1 only and the
RSSI is held at good values, so every request takes tens of milliseconds.
"""

from __future__ import annotations

import os
import time

import gymnasium as gym
import numpy as np
import psutil
import pytest

pytest.importorskip("torch")

import autoscale_env  # noqa: E402,F401
from autoscale_env.traces import format as traces  # noqa: E402
from autoscale_env.backends.live import backend as live  # noqa: E402
from autoscale_env.backends.live.context import SystemMonitor, wireless_rssi_dbm  # noqa: E402
from autoscale_env.backends.live.load import CpuLoad, MemoryLoad  # noqa: E402
from autoscale_env.world.types import ENERGY_SOURCES  # noqa: E402
from autoscale_env.world.errors import ConfigError, UnknownNameError  # noqa: E402
from autoscale_env.traces.recorder import record  # noqa: E402

pytestmark = pytest.mark.live

GOOD_RSSI = (-50.0, -45.0)
OPTIONS = dict(networks=["mnv1"], rssi=GOOD_RSSI, calibration_runs=1)


def children() -> set[int]:
    return {p.pid for p in psutil.Process().children(recursive=True)}


@pytest.fixture(scope="module")
def env():
    before = children()
    e = gym.make("AutoScale-v0", backend="live", device="host", setting="static",
                 backend_options=OPTIONS)
    yield e
    e.close()
    assert children() <= before


def test_host_targets_are_cpu_and_servers(env):
    names = [str(t) for t in env.unwrapped.targets]
    assert names[:2] == ["local/cpu/fp32", "local/cpu/int8"]
    assert {"edge/cpu/fp32", "cloud/cpu/fp32"} <= set(names)
    assert ("local/gpu/fp16" in names) == live.cuda_available()
    pids = env.unwrapped.backend.server_pids
    assert set(pids) == {"edge", "cloud"} and all(psutil.pid_exists(p) for p in pids.values())


def test_every_target_runs_with_positive_latency_and_energy(env):
    obs, info = env.reset(seed=0)
    assert env.observation_space.contains(obs) and info["oracle_action"] == -1
    for a in range(env.action_space.n):
        obs, r, terminated, truncated, info = env.step(a)
        target = str(env.unwrapped.targets[a])
        assert info["target"] == target and info["error"] == "", info["error"]
        assert info["latency_ms"] > 0 and info["energy_mj"] > 0, (target, info)
        assert info["energy_source"] in ENERGY_SOURCES and info["energy_source"] != "none"
        assert 0 < info["accuracy"] <= 1 and np.isfinite(r)
        assert env.observation_space.contains(obs)
    # the reward's E_ref was measured at start-up for the one network in the mix
    reference = env.unwrapped.backend.reference_energy_mj
    assert np.isfinite(reference).sum() == 1 and np.nanmin(reference) > 0


def test_int8_reports_the_catalogs_int8_accuracy(env):
    env.reset(seed=1)
    _, _, _, _, info = env.step(1)
    assert info["accuracy"] == pytest.approx(0.70)  # workloads.toml: mnv1 accuracy_int8


def test_context_is_measured_and_rssi_held(env):
    env.reset(seed=2)
    _, _, _, _, info = env.step(0)
    # A quiet host may have next to nothing else resident: the share is measured, not invented
    assert 0.0 <= info["co_cpu_pct"] <= 100.0 and 0.0 <= info["co_mem_pct"] < 100.0
    assert (info["rssi_wifi_dbm"], info["rssi_p2p_dbm"]) == GOOD_RSSI


def test_a_link_below_its_disconnection_rssi_fails_without_trying(env):
    backend = env.unwrapped.backend
    block = backend.next_block()
    block.rssi_wifi_dbm[0] = -95.0
    cloud = [str(t) for t in backend.targets].index("cloud/cpu/fp32")
    t0 = time.perf_counter()
    outcome = backend.execute(block, 0, cloud)
    assert time.perf_counter() - t0 < 0.5  # the timeout is modelled, not slept
    assert "link down" in outcome.error and outcome.latency_ms == 1000.0
    assert outcome.energy_mj > 0 and outcome.accuracy == pytest.approx(0.71)  # as the sim


def test_a_remote_outcome_is_the_link_models_offload_around_the_measured_exchange(env):
    from autoscale_env.world import radio

    backend = env.unwrapped.backend
    block = backend.next_block()
    edge = [str(t) for t in backend.targets].index("edge/cpu/fp32")
    outcome = backend.execute(block, 0, edge)
    w = backend.workloads[int(block.network[0])]
    p = radio.link_params(backend.links["p2p"])
    wifi_w, base_w = backend.power.wifi_active_w, backend.power.base_power_w
    goodput, rtt, tx_w, rx_w = radio.link_state(p, wifi_w, GOOD_RSSI[1], 1.0)
    tail = radio.tail_energy_mj(p, wifi_w, backend.scenario.request_gap_ms)

    def offload(server_ms):
        return radio.offload(goodput, rtt, tx_w, rx_w, 1000.0, w.input_bytes * 8e-3,
                             w.output_bytes * 8e-3, server_ms, base_w, tail)

    link_ms = offload(0.0)[0]
    server_ms = outcome.latency_ms - link_ms  # what calibrate reads back as the server's time
    assert server_ms > 0
    # the same function with the measured server time gives the recorded latency and energy
    assert offload(server_ms) == pytest.approx((outcome.latency_ms, outcome.energy_mj))


def test_out_of_range_action_is_refused(env):
    env.reset(seed=3)
    with pytest.raises((ValueError, AssertionError)):
        env.step(env.action_space.n)


def test_record_live_gives_a_full_measured_trace(env, tmp_path):
    backend = env.unwrapped.backend
    out = record(backend, 3, tmp_path / "live.csv", seed=0, progress=False)
    trace = traces.load_trace(out)
    assert trace.header.device == "host" and trace.header.provenance["kind"] == "measured"
    assert trace.header.coverage == "full" and len(trace.latency_ms) == 3
    assert (trace.latency_ms > 0).all() and (trace.energy_mj > 0).all()
    replayed = gym.make("AutoScale-v0", backend="replay", trace=str(out))
    _, info = replayed.reset(seed=0)
    assert 0 <= info["oracle_action"] < len(backend.targets)


def test_killed_cloud_server_fails_cloud_requests_cleanly_and_local_goes_on(env):
    backend = env.unwrapped.backend
    names = [str(t) for t in backend.targets]
    env.reset(seed=4)
    backend.servers["cloud"].kill()
    t0 = time.perf_counter()
    _, r, _, _, info = env.step(names.index("cloud/cpu/fp32"))
    assert time.perf_counter() - t0 < backend.timeout_s
    assert info["error"] and not info["qos_met"] and info["energy_mj"] > 0 and np.isfinite(r)
    _, _, _, _, info = env.step(names.index("local/cpu/fp32"))
    assert info["error"] == "" and info["latency_ms"] > 0
    _, _, _, _, info = env.step(names.index("edge/cpu/fp32"))
    assert info["error"] == ""


def test_dynamic_setting_runs_load_generators_and_close_leaves_no_child():
    before = children()
    e = gym.make("AutoScale-v0", backend="live", device="host", setting="dynamic",
                 backend_options=dict(OPTIONS, max_memory_load_mb=32))
    backend = e.unwrapped.backend
    started = children() - before
    load_pids = {p for load in backend._loads for p in load.pids}
    assert load_pids and set(backend.server_pids.values()) | load_pids <= started
    e.reset(seed=0)
    for _ in range(3):
        _, _, _, _, info = e.step(1)
        assert info["error"] == ""
    e.close()
    e.close()  # idempotent
    for action in range(e.action_space.n):  # a clear error, not a KeyError from a closed client
        with pytest.raises(gym.error.ClosedEnvironmentError, match="closed"):
            e.step(action)
    deadline = time.monotonic() + 5
    while children() - before and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not children() - before


def test_connects_to_a_server_started_elsewhere():
    from autoscale_env.backends.live.server import ServerProcess

    with ServerProcess("cloud", extra_args=["--preload", "mnv1@cpu/fp32"]) as server:
        e = gym.make("AutoScale-v0", backend="live", setting="static",
                     backend_options=dict(OPTIONS, servers={"cloud": "127.0.0.1:%d" % server.port}))
        backend = e.unwrapped.backend
        assert set(backend.server_pids) == {"edge"}  # the cloud was given, not started
        e.reset(seed=0)
        _, _, _, _, info = e.step([str(t) for t in backend.targets].index("cloud/cpu/fp32"))
        assert info["error"] == "" and info["latency_ms"] > 0
        e.close()
        assert server.alive()  # not ours to stop


@pytest.mark.parametrize("kwargs, word", [
    (dict(device="mi8pro"), "host"),
    (dict(device="host", backend_options=dict(meter="joulemeter")), "joulemeter"),
    (dict(device="host", backend_options=dict(networks=["vgg16"])), "vgg16"),
    (dict(device="host", backend_options=dict(servers={"fog": "127.0.0.1:1"})), "fog"),
])
def test_bad_options_name_the_value_and_the_choices(kwargs, word):
    with pytest.raises(UnknownNameError, match=word):
        gym.make("AutoScale-v0", backend="live", **kwargs)


def test_a_power_profile_that_is_not_a_phone_is_refused_naming_the_file():
    with pytest.raises(ConfigError, match="galaxy_tab_s6.toml.*phone"):
        gym.make("AutoScale-v0", backend="live", backend_options={"power_profile": "galaxy_tab_s6"})


def test_system_monitor_excludes_the_processes_it_is_told_are_ours():
    # One spinning child; monitor A counts it as ours, B as a co-runner. Sampled over the same
    # interval, B reports the child's share more: its CPU time, read independently from psutil,
    # over all cores' time (on a loaded machine the child gets less than a core, and so does B).
    with CpuLoad(1.0, n_procs=1) as load:
        load.start()
        child = psutil.Process(load.pids[0])
        child_s0, total_s0 = sum(child.cpu_times()[:2]), sum(psutil.cpu_times())
        ours = SystemMonitor(own_pids=lambda: load.pids)
        theirs = SystemMonitor()
        time.sleep(0.5)
        a, mem_a = ours.sample()
        b, _ = theirs.sample()
        child_s1, total_s1 = sum(child.cpu_times()[:2]), sum(psutil.cpu_times())
    child_pct = 100.0 * (child_s1 - child_s0) / (total_s1 - total_s0)
    one_core = 100.0 / (os.cpu_count() or 1)
    assert child_pct > 0.0  # the child ran
    # The two monitors' windows differ by the microseconds between their calls, and psutil counts
    # 10 ms ticks: 5 % of a core plus 20 % of the share covers both, far below a core's share.
    assert b - a == pytest.approx(child_pct, abs=0.05 * one_core + 0.2 * child_pct)
    assert 0.0 < mem_a < 100.0


def test_system_monitor_counts_a_co_runners_memory_and_not_our_own():
    # One child holding 256 MB of touched private pages; monitor A counts it as ours, B as a
    # co-runner. B reports about 256 MB more of physical memory than A, whatever else the host holds.
    mb = 256
    with MemoryLoad(mb) as load:
        load.start()
        ours = SystemMonitor(own_pids=lambda: load.pids)
        theirs = SystemMonitor()
        _, mem_a = ours.sample()
        _, mem_b = theirs.sample()
    expected_pct = 100.0 * mb * 2**20 / psutil.virtual_memory().total
    assert mem_b - mem_a == pytest.approx(expected_pct, rel=0.2)


def test_wireless_rssi_parses_proc_net_wireless(tmp_path):
    f = tmp_path / "wireless"
    f.write_text("Inter-| sta-|   Quality        |   Discarded packets\n"
                 " face | tus | link level noise |  nwid  crypt   frag  retry   misc\n"
                 "wlan0: 0000   54.  -56.  -256        0      0      0      0    12\n")
    assert wireless_rssi_dbm(f) == -56.0
    assert wireless_rssi_dbm(tmp_path / "missing") is None
    f.write_text("Inter-|\n face |\n")
    assert wireless_rssi_dbm(f) is None

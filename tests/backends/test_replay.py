"""The replay backend (issue #6).

Sim traces replay the sim bit for bit, seeds fix the replay, partial traces, header checks,
bundled traces through gym.make.
"""

from __future__ import annotations

import warnings
from dataclasses import replace
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env

from autoscale_env.traces import format as traces
from autoscale_env.backends.replay import ReplayBackend
from autoscale_env.backends.sim import SimBackend
from autoscale_env.world.types import Outcome, RequestBlock
from autoscale_env.world.errors import ConfigError, TraceFormatError, UnknownNameError
from autoscale_env.traces.recorder import record
from conftest import rollout

SEED = 11
N_EPISODES = 20
N_REQUESTS = N_EPISODES * 101  # 20 gym.make episodes: a reset observation + 100 steps each


@pytest.fixture(scope="module")
def recorded(tmp_path_factory) -> dict[str, Path]:
    """Sim recordings (mi8pro, non_streaming) of both settings, seed SEED."""
    d = tmp_path_factory.mktemp("replay")
    return {s: record(SimBackend("mi8pro", "non_streaming", s), N_REQUESTS,
                      d / f"sim-{s}.csv.gz", seed=SEED, progress=False)
            for s in ("static", "dynamic")}


@pytest.mark.parametrize("setting", ["static", "dynamic"])
def test_replaying_a_sim_trace_reproduces_the_sim_bit_for_bit(recorded, setting):
    # The whole recording: 20 episodes with TimeLimit truncations and plain resets in between.
    n = N_EPISODES * 100 - 1
    sim = rollout(SEED, n, device="mi8pro", scenario="non_streaming", setting=setting)
    replay = rollout(SEED, n, backend="replay", trace=str(recorded[setting]))
    assert len(sim) == len(replay)
    for a, b in zip(sim, replay, strict=True):  # latency, energy, reward, obs, oracle, ...
        assert repr(a) == repr(b)
    assert repr(rollout(SEED, n, action_seed=5, device="mi8pro", setting=setting)) == \
        repr(rollout(SEED, n, action_seed=5, backend="replay", trace=str(recorded[setting])))


def test_2000_request_recording_replays_deterministically_with_the_oracle(recorded):
    path = str(recorded["dynamic"])
    assert traces.load_trace(path).n_requests >= 2000

    def run(seed):
        env = gym.make("AutoScale-v0", backend="replay", trace=path, max_episode_steps=10**6)
        obs, info = env.reset(seed=seed)
        actions = np.random.default_rng(0).integers(env.action_space.n, size=2000)
        out, oracles = [], [info["oracle_action"]]
        for a in actions:
            cf = env.unwrapped.counterfactuals()
            assert env.unwrapped.oracle_action() == int(np.argmax(cf["reward"]))
            obs, r, _, trunc, info = env.step(int(a))
            assert not trunc
            out.append((obs.tobytes(), r, info["latency_ms"], info["energy_mj"]))
            oracles.append(info["oracle_action"])
        return out, oracles

    a, oracle_a = run(4)
    b, oracle_b = run(4)
    assert a == b and oracle_a == oracle_b
    assert min(oracle_a) >= 0  # a full trace: the oracle is always known
    assert len(set(oracle_a)) > 1


def test_shuffle_is_a_seeded_permutation(recorded):
    path = recorded["dynamic"]
    t = traces.load_trace(path)

    def contexts(seed):
        b = ReplayBackend(path, order="shuffle")
        b.reset(np.random.default_rng(seed))
        got, n = [], 0
        while n < t.n_requests:
            block = b.next_block()
            got.append(np.column_stack([block.network, block.co_cpu_pct, block.rssi_wifi_dbm,
                                        block.latency_ms]))
            n += len(block)
        return np.concatenate(got)

    a, b, c = contexts(1), contexts(1), contexts(2)
    assert a.tobytes() == b.tobytes() and a.tobytes() != c.tobytes()
    whole = np.column_stack([t.network, t.co_cpu_pct, t.rssi_wifi_dbm, t.latency_ms])
    assert not np.array_equal(a, whole)  # really shuffled ...
    key = lambda m: m[np.lexsort(m.T[::-1])]  # noqa: E731
    assert np.array_equal(key(a), key(whole))  # ... and each request exactly once


def test_vector_env_replays_through_sync_mode(recorded):
    envs = gym.make_vec("AutoScale-v0", num_envs=2, vectorization_mode="sync", backend="replay",
                        trace=str(recorded["static"]), backend_options={"order": "shuffle"})
    envs.reset(seed=0)
    mem = []
    for _ in range(150):
        obs, r, term, trunc, info = envs.step(envs.action_space.sample())
        assert np.all(info["oracle_action"] >= 0) and envs.observation_space.contains(obs)
        mem.append(info["co_mem_pct"])
    mem = np.array(mem)
    assert not np.array_equal(mem[:, 0], mem[:, 1])  # seeds 0 and 1: different permutations
    envs.close()


def test_sequential_rewinds_on_a_seed_and_continues_on_plain_resets(recorded):
    b = ReplayBackend(recorded["static"])
    rng = np.random.default_rng(0)
    b.reset(rng)
    first = b.next_block()
    assert len(first) == 101 and b.position == 101
    b.next_block()
    b.reset(rng)  # same generator: continue at the next recorded episode (request 202)
    assert b.position == 202
    b.next_block()
    b.reset(np.random.default_rng(0))  # new generator: rewind
    again = b.next_block()
    assert again.latency_ms.tobytes() == first.latency_ms.tobytes()


def test_the_tape_wraps_at_its_end(small_trace):
    b = ReplayBackend(small_trace, block_size=4)
    b.reset(np.random.default_rng(0))
    seen = np.concatenate([b.next_block().co_mem_pct for _ in range(5)])  # 12 requests, 3 blocks
    t = traces.load_trace(small_trace)
    assert np.array_equal(seen[:12], t.co_mem_pct) and np.array_equal(seen[12:], t.co_mem_pct[:8])


@pytest.fixture(scope="module")
def small_trace(tmp_path_factory) -> Path:
    """12 requests, one continuous stream (no episode boundaries)."""
    out = tmp_path_factory.mktemp("small") / "stream.csv"
    return record(SimBackend("galaxy_s10e", "streaming", "dynamic"), 12, out, seed=0,
                  episode_requests=0, progress=False)


def test_check_env_passes_on_replay(recorded):
    env = gym.make("AutoScale-v0", backend="replay", trace=str(recorded["dynamic"]))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        check_env(env.unwrapped, skip_render_check=True)


# ---- partial traces ----------------------------------------------------------------------------



@pytest.fixture(scope="module")
def partial(recorded, tmp_path_factory) -> tuple[Path, np.ndarray]:
    """The static recording with only one target per request kept (a phone's log)."""
    t = traces.load_trace(recorded["static"])
    chosen = np.random.default_rng(0).integers(len(t.targets), size=t.n_requests)
    keep = np.arange(len(t.targets))[None, :] == chosen[:, None]
    lat = np.where(keep, t.latency_ms, np.nan)
    out = tmp_path_factory.mktemp("partial") / "log.csv"
    traces.write_trace(replace(t, latency_ms=lat), out,
                       header=replace(t.header, coverage="partial"))
    return out, chosen


def test_partial_trace_loads_with_unknown_outcomes(partial):
    path, chosen = partial
    t = traces.load_trace(path)
    assert not t.complete and np.isfinite(t.latency_ms).sum(axis=1).max() == 1
    assert np.array_equal(np.nanargmin(np.isnan(t.latency_ms), axis=1), chosen)


def test_partial_trace_has_no_oracle(partial):
    env = gym.make("AutoScale-v0", backend="replay", trace=str(partial[0]))
    _, info = env.reset(seed=0)
    assert info["oracle_action"] == -1 and env.unwrapped.oracle_action() == -1
    _, _, _, _, info = env.step(0)
    assert info["oracle_action"] == -1


def test_partial_trace_steps_give_recorded_values_or_an_error(partial):
    path, chosen = partial
    t = traces.load_trace(path)
    env = gym.make("AutoScale-v0", backend="replay", trace=str(path))
    env.reset(seed=0)
    penalty = env.unwrapped.reward_preset.violation_penalty
    for i in range(100):
        recorded = int(chosen[i])
        a = recorded if i % 2 else (recorded + 1) % len(t.targets)
        _, r, _, _, info = env.step(a)
        if a == recorded:
            assert info["error"] == "" and info["latency_ms"] == t.latency_ms[i, a]
        else:
            assert info["error"] and np.isnan(info["latency_ms"]) and r == -penalty
            assert info["qos_met"] is False


# ---- header checks, reference energy, bundled traces -------------------------------------------


def test_arguments_must_agree_with_the_header(recorded):
    path = str(recorded["static"])
    gym.make("AutoScale-v0", backend="replay", trace=path, device="mi8pro",
             scenario="non_streaming", setting="static")
    for kw in ({"scenario": "translation"}, {"setting": "dynamic"}, {"device": "galaxy_s10e"}):
        with pytest.raises(ConfigError, match=f"header field '{next(iter(kw))}'"):
            gym.make("AutoScale-v0", backend="replay", trace=path, **kw)


def test_missing_or_unknown_trace():
    with pytest.raises(ConfigError, match="needs trace="):
        gym.make("AutoScale-v0", backend="replay")
    with pytest.raises(UnknownNameError, match="sim-mi8pro"):
        gym.make("AutoScale-v0", backend="replay", trace="sim-nokia")
    with pytest.raises(UnknownNameError, match="order"):
        ReplayBackend(traces.bundled_traces()[0], order="backwards")


@pytest.mark.slow
def test_reference_energy_of_an_unbundled_device_comes_from_the_trace(recorded, tmp_path):
    t = traces.load_trace(recorded["static"])
    mine = traces.write_trace(t, tmp_path / "mine.csv", header=replace(t.header, device="my_phone"))
    b = ReplayBackend(mine)
    ref = b.reference_energy_mj
    cpu = t.target_names.index("local/cpu/fp32")
    for k in np.unique(t.network):
        e = t.energy_mj[t.network == k, cpu]
        quiet = (t.co_cpu_pct[t.network == k] == 0) & (t.co_mem_pct[t.network == k] == 0)
        assert ref[k] == (np.median(e[quiet]) if quiet.any() else e.min())
    sim_ref = SimBackend("mi8pro", "non_streaming", "static").reference_energy_mj
    assert np.allclose(ref[np.unique(t.network)], sim_ref[np.unique(t.network)], rtol=0.3)

    # Without local/cpu/fp32 rows it cannot be derived: a clear error, and an override fixes it.
    lat = t.latency_ms.copy()
    lat[:, cpu] = np.nan
    no_cpu = traces.write_trace(replace(t, latency_ms=lat), tmp_path / "nocpu.csv",
                                header=replace(t.header, device="my_phone", coverage="partial"))
    with pytest.raises(TraceFormatError, match="reference_energy_mj"):
        ReplayBackend(no_cpu)
    names = [w.name for w in t.workloads]
    override = {names[k]: 100.0 for k in np.unique(t.network)}
    b = ReplayBackend(no_cpu, reference_energy_mj=override)
    assert all(b.reference_energy_mj[k] == 100.0 for k in np.unique(t.network))


@pytest.mark.slow
def test_bundled_traces_replay_by_name():
    for name in traces.bundled_traces():
        env = gym.make("AutoScale-v0", backend="replay", trace=name)
        obs, info = env.reset(seed=0)
        assert env.observation_space.contains(obs) and info["oracle_action"] >= 0
        for _ in range(5):
            obs, r, _, _, info = env.step(env.action_space.sample())
            assert np.isfinite(r) and info["error"] == ""
        env.close()


class ExecuteOnly:
    """A backend that must run each request (as live does), answering from the sim's numbers."""

    deterministic = False

    def __init__(self):
        self.sim = SimBackend("mi8pro", "non_streaming", "dynamic")
        self.targets, self.workloads = self.sim.targets, self.sim.workloads
        self.reference_energy_mj, self.scenario = self.sim.reference_energy_mj, self.sim.scenario
        self.setting, self.phone = "dynamic", self.sim.phone
        self.calls = 0

    def reset(self, rng):
        self.sim.reset(rng)

    def next_block(self):
        self._full = self.sim.next_block()
        b = self._full
        return RequestBlock(b.network, b.co_cpu_pct, b.co_mem_pct, b.rssi_wifi_dbm,
                            b.rssi_p2p_dbm)

    def execute(self, block, index, action):
        self.calls += 1
        b = self._full
        return Outcome(b.latency_ms[index, action], b.energy_mj[index, action],
                       b.accuracy[index, action], energy_source="rapl" if action < 5 else "model")

    def close(self):
        pass


def test_recording_a_backend_without_outcomes_executes_every_target(recorded, tmp_path):
    backend = ExecuteOnly()
    out = record(backend, 150, tmp_path / "live.csv", seed=SEED, progress=False)
    assert backend.calls == 150 * 9
    t, sim = traces.load_trace(out), traces.load_trace(recorded["dynamic"])
    assert t.complete and t.header.provenance["kind"] == "measured" and "host" in \
        t.header.provenance
    assert t.latency_ms.tobytes() == sim.latency_ms[:150].tobytes()
    assert set(t.request_energy_source()) == {"model"}  # mixed cells: the humbler label

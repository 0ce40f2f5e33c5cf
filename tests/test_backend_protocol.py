"""A backend written from ``core.Backend`` alone works with the env, check_env and vector envs."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env

import autoscale_env  # noqa: F401
from autoscale_env.world.config import get_scenario
from autoscale_env.world.types import Backend, Outcome, RequestBlock, Target, Workload


class TinyBackend:
    """Two targets, two networks, outcomes known in advance (``execute_only``: only by execute)."""

    targets = (Target("local", "cpu", "fp32"), Target("cloud", "gpu", "fp32"))
    workloads = (
        Workload("small", "Small", conv=10, fc=1, rc=0, input_bytes=1000, output_bytes=10,
                 accuracy={"fp32": 0.7, "fp16": 0.7, "int8": 0.69}),
        Workload("rnn", "RNN", conv=0, fc=2, rc=3, input_bytes=500, output_bytes=50,
                 accuracy={"fp32": 0.8, "fp16": 0.8, "int8": 0.78}),
    )
    scenario = get_scenario("non_streaming")
    setting = "static"
    device_name = "tiny-phone"
    reference_energy_mj = np.array([100.0, 50.0])
    deterministic = True

    def __init__(self, execute_only: bool = False, block_size: int = 4):
        self.execute_only = execute_only
        self.block_size = block_size
        self._rng: np.random.Generator | None = None

    def reset(self, rng):
        self._rng = rng

    def next_block(self):
        n = self.block_size
        network = self._rng.integers(2, size=n)
        wifi = self._rng.uniform(-90, -40, n)
        latency = np.column_stack([np.where(network == 0, 30.0, 70.0), 20 - wifi / 2])
        energy = np.column_stack([self.reference_energy_mj[network], np.full(n, 40.0)])
        accuracy = np.array([[w.accuracy["fp32"]] * 2 for w in self.workloads])[network]
        block = RequestBlock(network=network, co_cpu_pct=np.zeros(n), co_mem_pct=np.zeros(n),
                             rssi_wifi_dbm=wifi, rssi_p2p_dbm=np.full(n, -50.0))
        self._full = (latency, energy, accuracy)
        if not self.execute_only:
            block.latency_ms, block.energy_mj, block.accuracy = latency, energy, accuracy
        return block

    def execute(self, block, index, action):
        latency, energy, accuracy = self._full
        return Outcome(latency[index, action], energy[index, action], accuracy[index, action])

    def provenance(self):
        return {"kind": "test"}

    def close(self):
        pass


def test_the_tiny_backend_implements_the_protocol_and_an_incomplete_one_does_not():
    assert isinstance(TinyBackend(), Backend)

    class NoScenario(TinyBackend):
        scenario = property(lambda self: (_ for _ in ()).throw(AttributeError("scenario")))

    assert not isinstance(NoScenario(), Backend)


@pytest.mark.parametrize("execute_only", [False, True])
def test_gym_make_and_check_env_accept_a_protocol_only_backend(execute_only):
    env = gym.make("AutoScale-v0", backend=TinyBackend(execute_only=execute_only))
    check_env(env.unwrapped, skip_render_check=True)
    obs, info = env.reset(seed=3)
    assert env.action_space.n == 2 and obs in env.observation_space
    assert info["oracle_action"] == (-1 if execute_only else env.unwrapped.oracle_action())
    total = 0.0
    for t in range(10):  # crosses blocks of 4
        obs, r, term, trunc, info = env.step(t % 2)
        assert np.isfinite(r) and info["target"] == str(TinyBackend.targets[t % 2])
        total += r
    assert total < 0


def test_the_same_seed_gives_the_same_run_on_a_protocol_only_backend():
    def run():
        env = gym.make("AutoScale-v0", backend=TinyBackend())
        env.reset(seed=7)
        return [env.step(1)[1] for _ in range(9)]

    assert run() == run()


def test_sync_vector_env_builds_one_backend_per_sub_env_from_the_class():
    envs = gym.make_vec("AutoScale-v0", num_envs=3, vectorization_mode="sync",
                        backend=TinyBackend, backend_options={"block_size": 3})
    backends = [e.unwrapped.backend for e in envs.envs]
    assert len({id(b) for b in backends}) == 3 and all(b.block_size == 3 for b in backends)
    obs, infos = envs.reset(seed=0)
    assert obs.shape[0] == 3
    for _ in range(5):
        obs, rewards, term, trunc, infos = envs.step(np.array([0, 1, 0]))
        assert np.all(np.isfinite(rewards))
    envs.close()


def test_native_vector_env_refuses_a_non_sim_backend_and_names_sync_mode():
    with pytest.raises(ValueError, match="vectorization_mode='sync'"):
        gym.make_vec("AutoScale-v0", num_envs=2, vectorization_mode="vector_entry_point",
                     backend=TinyBackend)

"""Oracle-based metrics of a world: what the sensitivity analysis measures."""

from __future__ import annotations

import gymnasium as gym
import pytest

from agents.experiments.evaluation import evaluate
from agents.baselines import OracleAgent
from agents.experiments.world_metrics import Cell, cell_stats, grid_cells, metric_names, world_metrics
from autoscale_env.backends.sim import SimBackend

CELLS = grid_cells(["mi8pro", "moto_x_force"], ["translation"], ["static", "dynamic"])


def sim(cell: Cell):
    return SimBackend(cell.device, cell.scenario, cell.setting)


def test_metrics_are_named_and_sane():
    m = world_metrics(sim, CELLS, episodes=3)
    assert list(m) == metric_names(["mi8pro", "moto_x_force"])
    assert m["oracle_vs_cpu"] >= 1.0 and m["oracle_vs_cloud"] >= 1.0
    assert 0 < m["state_ceiling"] <= 1
    assert sum(v for k, v in m.items() if k.startswith("share:")) == pytest.approx(1.0)


def test_same_seed_same_metrics_and_cells_use_their_own_seeds():
    a = world_metrics(sim, CELLS, episodes=2, seed=5)
    assert a == world_metrics(sim, CELLS, episodes=2, seed=5)
    assert a != world_metrics(sim, CELLS, episodes=2, seed=6)


def test_oracle_totals_match_the_environments_own_evaluation():
    """The batched totals equal an oracle agent stepped through AutoScale-v0 on the same requests."""
    backend = SimBackend("mi8pro", "non_streaming", "static", block_size=100)
    s = cell_stats(backend, episodes=1, seed=11)
    env = gym.make("AutoScale-v0", backend=SimBackend("mi8pro", "non_streaming", "static",
                                                       block_size=100))
    res = evaluate(OracleAgent(env), env, 100, seed=11)  # exactly the one block of 100 requests
    assert res.oracle_matches == res.requests == s.requests == 100
    assert res.energy_mj == pytest.approx(s.oracle_energy_mj, rel=1e-12)
    assert res.cpu_energy_mj == pytest.approx(s.cpu_energy_mj, rel=1e-12)
    assert res.cloud_energy_mj == pytest.approx(s.cloud_energy_mj, rel=1e-12)
    assert res.ceiling_matches == s.ceiling_matches


def test_the_q_learners_near_optimal_rate_is_optional_and_learns():
    cell = Cell("mi8pro", "translation", "static")
    untrained = world_metrics(sim, [cell], episodes=1, qlearning_steps=1, qlearning_eval_requests=300)
    trained = world_metrics(sim, [cell], episodes=1, qlearning_steps=3_000,
                            qlearning_eval_requests=300)
    assert "qlearning_near_optimal" not in world_metrics(sim, [cell], episodes=1)
    assert 0.0 <= untrained["qlearning_near_optimal"] < trained["qlearning_near_optimal"] <= 1.0


class ProtocolOnly:
    """A backend seen only through the Backend protocol (no batched interface)."""

    def __init__(self, sim):
        self._sim = sim
        self.targets, self.workloads, self.scenario = sim.targets, sim.workloads, sim.scenario
        self.reference_energy_mj = sim.reference_energy_mj

    def reset(self, rng):
        self._sim.reset(rng)

    def next_block(self):
        return self._sim.next_block()


@pytest.mark.parametrize("setting", ["static", "dynamic"])
def test_the_batched_pass_equals_the_protocol_loop_bit_for_bit(setting):
    cell = Cell("galaxy_s10e", "streaming", setting)
    fast = cell_stats(sim(cell), episodes=7, seed=3)
    slow = cell_stats(ProtocolOnly(sim(cell)), episodes=7, seed=3)
    assert fast == slow

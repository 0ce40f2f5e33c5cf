"""What a world implies for the headline results, read off the oracle (no training needed).

For a set of cells (phone x scenario x setting) and a way to build each cell's backend, this runs a
fixed number of episodes per cell with a fixed seed (the same requests for every world, so two
worlds differ only by their numbers: common random numbers) and measures:

* ``oracle_vs_cpu`` / ``oracle_vs_cloud``: energy of always running on ``local/cpu/fp32`` /
  ``cloud/gpu/fp32`` over the oracle's energy on the same requests, per cell, then the geometric
  mean over cells (ratios average geometrically; one weak-signal cell cannot dominate);
* ``state_ceiling``: the best match with the oracle any policy of the observation alone could reach
  (per state, the share of its most frequent oracle action), averaged over cells;
* ``share:<target>``: the share of each target among the oracle's decisions, over every request;
* optionally ``qlearning_near_optimal``: the paper's tabular Q-learner, trained online on each cell
  for ``qlearning_steps`` requests, then evaluated greedily on fresh requests: the share of them
  whose chosen target meets both targets and uses at most 5 % more energy than the oracle's,
  averaged over cells.

Only the backend protocol is used (``reset``, ``next_block`` with every target's outcome), so any
backend that knows counterfactual outcomes works.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from autoscale_env.world import config
from autoscale_env.world.types import RequestBlock
from autoscale_env.world.rules import Scorer
from autoscale_env.world.observation import StateEncoder

MOBILE_CPU_TARGET = "local/cpu/fp32"
CLOUD_TARGET = "cloud/gpu/fp32"
HEADLINE_METRICS = ("oracle_vs_cpu", "oracle_vs_cloud", "state_ceiling")
QLEARNING_METRIC = "qlearning_near_optimal"
#: A decision is near-optimal when it meets both targets within this factor of the oracle's energy.
NEAR_OPTIMAL_ENERGY_FACTOR = 1.05
#: Offset between a cell's training seed and its evaluation seed (fresh requests).
EVAL_SEED_OFFSET = 10_000


@dataclass(frozen=True)
class Cell:
    """One phone in one scenario and setting."""

    device: str
    scenario: str
    setting: str

    def __str__(self) -> str:
        return f"{self.device}/{self.scenario}/{self.setting}"


def grid_cells(devices: Sequence[str], scenarios: Sequence[str], settings: Sequence[str]) -> list[Cell]:
    """Every combination, in a stable order."""
    return [Cell(d, sc, st) for d in devices for sc in scenarios for st in settings]


def all_target_names(devices: Sequence[str]) -> list[str]:
    """Every target any of ``devices`` offers, in a stable order (the ``share:`` metrics)."""
    names: list[str] = []
    for d in devices:
        for t in config.load_device(d).targets:
            if str(t) not in names:
                names.append(str(t))
    return names


def metric_names(devices: Sequence[str], qlearning: bool = False) -> list[str]:
    """The metrics :func:`world_metrics` returns for cells of ``devices``."""
    return [*HEADLINE_METRICS, *(f"share:{t}" for t in all_target_names(devices)),
            *([QLEARNING_METRIC] if qlearning else [])]


@dataclass
class CellStats:
    """Totals of one cell."""

    requests: int
    cpu_energy_mj: float
    cloud_energy_mj: float
    oracle_energy_mj: float
    ceiling_matches: int
    oracle_counts: dict[str, int]


def cell_stats(backend, *, episodes: int, seed: int, features: str | None = None,
               reward_preset: str = "energy") -> CellStats:
    """Run ``episodes`` episodes (one block each, :func:`episode_blocks`) of ``backend`` from
    ``seed``; oracle totals."""
    names = [str(t) for t in backend.targets]
    cpu, cloud = names.index(MOBILE_CPU_TARGET), names.index(CLOUD_TARGET)
    workloads = backend.workloads
    encoder = StateEncoder(config.load_features(features), workloads)
    scorer = Scorer(config.get_reward_preset(reward_preset), backend.scenario, workloads,
                    backend.reference_energy_mj)
    T = len(names)
    b = _concatenate(episode_blocks(backend, episodes, seed))
    _, _, _, best = scorer.score_all(b.network, b.latency_ms, b.energy_mj, b.accuracy)
    energy = b.energy_mj
    e_cpu = float(energy[:, cpu].sum())
    e_cloud = float(energy[:, cloud].sum())
    e_oracle = float(energy[np.arange(len(best)), best].sum())
    states = np.asarray(encoder.flat_index(encoder.encode_block(b))).reshape(-1)
    # per state, the count of its most frequent oracle action
    _, state_id = np.unique(states, return_inverse=True)
    table = np.bincount(state_id * T + best, minlength=(state_id.max() + 1) * T).reshape(-1, T)
    counts = np.bincount(best, minlength=T)
    return CellStats(requests=len(best), cpu_energy_mj=e_cpu, cloud_energy_mj=e_cloud,
                     oracle_energy_mj=e_oracle, ceiling_matches=int(table.max(axis=1).sum()),
                     oracle_counts={n: int(c) for n, c in zip(names, counts)})


def episode_blocks(backend, episodes: int, seed: int) -> list[RequestBlock]:
    """One block (one episode) per episode, episode ``e`` from its own generator
    ``default_rng(SeedSequence([seed, e]))``.

    With the sim's batched interface (``reset_worlds``, ``generate``, as the native vector env
    uses it) all episodes come from one compiled pass, returned as one concatenated block; its
    numbers equal those of the protocol loop (``reset`` + ``next_block`` per episode) bit for
    bit. Other backends take the loop.
    """
    rngs = [np.random.default_rng(np.random.SeedSequence([seed, e])) for e in range(episodes)]
    if not all(hasattr(backend, a) for a in ("reset_worlds", "generate")):
        blocks = []
        for rng in rngs:
            backend.reset(rng)
            blocks.append(backend.next_block())
        return blocks
    from autoscale_env.backends.sim import SimState

    state = SimState(episodes)
    worlds = np.arange(episodes)
    backend.reset_worlds(rngs, state, worlds)
    r = backend.generate(state, worlds)
    T = r.latency_ms.shape[-1]
    network = r.network.reshape(-1)
    return [RequestBlock(
        network=network, co_cpu_pct=r.co_cpu_pct.reshape(-1), co_mem_pct=r.co_mem_pct.reshape(-1),
        rssi_wifi_dbm=r.rssi_wifi_dbm.reshape(-1), rssi_p2p_dbm=r.rssi_p2p_dbm.reshape(-1),
        latency_ms=r.latency_ms.reshape(-1, T), energy_mj=r.energy_mj.reshape(-1, T),
        accuracy=backend.accuracy_table[network], energy_source=backend.energy_source)]


def _concatenate(blocks: Sequence[RequestBlock]) -> RequestBlock:
    """One block of every request (so totals do not depend on how the episodes were made)."""
    if len(blocks) == 1:
        return blocks[0]
    cat = {k: np.concatenate([getattr(b, k) for b in blocks])
           for k in ("network", "co_cpu_pct", "co_mem_pct", "rssi_wifi_dbm", "rssi_p2p_dbm",
                     "latency_ms", "energy_mj", "accuracy")}
    return RequestBlock(**cat, energy_source=blocks[0].energy_source)


def summarize(stats: Sequence[CellStats], target_names: Sequence[str]) -> dict[str, float]:
    """The metrics of the module docstring from per-cell totals."""
    vs_cpu = [s.cpu_energy_mj / s.oracle_energy_mj for s in stats]
    vs_cloud = [s.cloud_energy_mj / s.oracle_energy_mj for s in stats]
    total = sum(s.requests for s in stats)
    out = {
        "oracle_vs_cpu": geometric_mean(vs_cpu),
        "oracle_vs_cloud": geometric_mean(vs_cloud),
        "state_ceiling": float(np.mean([s.ceiling_matches / s.requests for s in stats])),
    }
    for t in target_names:
        out[f"share:{t}"] = sum(s.oracle_counts.get(t, 0) for s in stats) / total
    return out


def geometric_mean(values: Sequence[float]) -> float:
    """exp(mean(log x)) of positive values."""
    return math.exp(sum(math.log(v) for v in values) / len(values))


def world_metrics(make_backend: Callable[[Cell], object], cells: Sequence[Cell], *, episodes: int,
                  seed: int = 0, features: str | None = None, qlearning_steps: int = 0,
                  qlearning_eval_requests: int = 2_000) -> dict[str, float]:
    """The metrics of one world over ``cells``; cell ``i`` always uses seed ``(seed, i)``."""
    stats, near = [], []
    for i, cell in enumerate(cells):
        backend = make_backend(cell)
        cell_seed = _cell_seed(seed, i)
        stats.append(cell_stats(backend, episodes=episodes, seed=cell_seed, features=features))
        if qlearning_steps:
            near.append(qlearning_near_optimal(backend, train_steps=qlearning_steps,
                                               eval_requests=qlearning_eval_requests,
                                               seed=cell_seed % 2**31, features=features))
    out = summarize(stats, all_target_names(list(dict.fromkeys(c.device for c in cells))))
    if qlearning_steps:
        out[QLEARNING_METRIC] = float(np.mean(near))
    return out


def qlearning_near_optimal(backend, *, train_steps: int, eval_requests: int, seed: int,
                           features: str | None = None) -> float:
    """Train the paper's Q-learner on ``backend`` online, then the share of near-optimal greedy
    decisions on fresh requests (module docstring)."""
    import gymnasium as gym

    from agents.qlearning import QLearningAgent

    env = gym.make("AutoScale-v0", backend=backend, features=features)
    agent = QLearningAgent(env, seed=seed)
    agent.learn(train_steps)
    u = env.unwrapped
    obs, _ = env.reset(seed=EVAL_SEED_OFFSET + seed)
    near = 0
    for _ in range(eval_requests):
        cf = u.counterfactuals()
        best_mj = float(cf["energy_mj"][u.oracle_action()])
        action, _ = agent.predict(obs, deterministic=True)
        obs, _, terminated, truncated, info = env.step(int(action))
        near += bool(info["qos_met"] and info["accuracy_met"]
                     and info["energy_mj"] <= NEAR_OPTIMAL_ENERGY_FACTOR * best_mj)
        if terminated or truncated:
            obs, _ = env.reset()
    return near / eval_requests


def _cell_seed(seed: int, index: int) -> int:
    return int(np.random.SeedSequence([seed, index]).generate_state(1)[0])

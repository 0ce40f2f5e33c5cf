"""Baselines for the fleet (:mod:`autoscale_env.fleet`): who decides, and with what view.

* :class:`IndependentQLearners`: one paper Q-learner per phone (``QLearningAgent``'s update rule and
  hyperparameters), all phones' tables as one array so a round is a handful of numpy operations.
* :func:`per_phone_oracle`: each phone's best target *if it ran alone* (ignores the others).
* :class:`CentralisedOracle`: the joint action that maximises the fleet's summed reward, found
  exhaustively over every joint action (small fleets only: ``T ** N`` candidates per round).
* :func:`fixed_target`: every phone on one target (e.g. forced to the edge).

:func:`run_policy` plays any of them on a :class:`~autoscale_env.fleet.FleetCore` and measures
energy per request, QoS violations, reward and where the requests ran. The shared-parameter PPO
is in :mod:`agents.fleet_ppo` (it needs SuperSuit and Stable-Baselines3).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from agents.qlearning import QLearningConfig
from autoscale_env.world.types import Target
from autoscale_env.fleet.core import FleetCore

#: A policy maps the core (pending round) and its observations to one action per phone.
Policy = Callable[[FleetCore, np.ndarray], np.ndarray]

LOCATIONS = ("local", "edge", "cloud")


class IndependentQLearners:
    """N independent tabular Q-learners, one per phone, updated together.

    Each phone keeps its own table over the fleet's observation (the paper state, plus the load
    signal when the core has it) and learns from its own reward only, with
    :class:`agents.qlearning.QLearningAgent`'s rule and defaults: epsilon-greedy, then
    ``q[s, a] += alpha * (r + gamma * max q[s'] - q[s, a])``; ties go to the lowest action.

    Args:
        core: the fleet.
        seed: seeds the exploration generator.
        **hyperparameters: as :class:`agents.qlearning.QLearningConfig`.
    """

    def __init__(self, core: FleetCore, seed: int = 0, **hyperparameters: float):
        self.config = QLearningConfig(**hyperparameters)
        self.core = core
        N, T = core.n_phones, core.T
        self.q = np.zeros((N, core.n_states, T), dtype=np.float32)
        # a phone's missing targets (padding) never look best
        self.q[np.broadcast_to(~core.valid_actions[:, None, :], self.q.shape)] = -np.inf
        self.epsilon = self.config.epsilon
        self.rng = np.random.default_rng(seed)
        self._phones = np.arange(N)
        self.num_timesteps = 0

    def act(self, obs: np.ndarray, explore: bool = False) -> np.ndarray:
        """One action per phone: greedy, or epsilon-greedy when ``explore``."""
        s = self.core.flat_state(obs)
        a = self.q[self._phones, s].argmax(axis=1)
        if explore:
            rand = self.rng.random(len(a)) < self.epsilon
            if rand.any():
                pick = (self.rng.random(len(a)) * self.core.n_targets).astype(np.int64)
                a = np.where(rand, pick, a)
        return a

    def update(self, obs: np.ndarray, actions: np.ndarray, rewards: np.ndarray,
               next_obs: np.ndarray) -> None:
        """One update of every phone's table."""
        p = self._phones
        s, s2 = self.core.flat_state(obs), self.core.flat_state(next_obs)
        target = rewards + self.config.gamma * self.q[p, s2].max(axis=1)
        q = self.q[p, s, actions]
        self.q[p, s, actions] = q + self.config.alpha * (target - q)

    def learn(self, rounds: int, seed: int | None = None, progress: bool = False) -> IndependentQLearners:
        """Play ``rounds`` rounds on the core, exploring and updating online."""
        from tqdm.auto import tqdm
        obs, _ = self.core.reset(seed)
        c = self.config
        for _ in tqdm(range(rounds), desc="independent Q", disable=not progress, leave=False):
            a = self.act(obs, explore=True)
            nxt, r, _ = self.core.step(a)
            self.update(obs, a, r, nxt)
            obs = nxt
            self.epsilon = max(c.epsilon_min, self.epsilon * c.epsilon_decay)
            self.num_timesteps += self.core.n_phones
        return self

    def policy(self, core: FleetCore, obs: np.ndarray) -> np.ndarray:
        """Greedy actions (a :data:`Policy`)."""
        return self.act(obs)


def per_phone_oracle(core: FleetCore, obs: np.ndarray) -> np.ndarray:
    """Each phone's best target for its request alone, ignoring the others (a :data:`Policy`)."""
    return core.context()["oracle_action"]


def fixed_target(name: str) -> Policy:
    """Every phone on target ``name`` (e.g. ``"edge/gpu/fp32"``); phones without it fail loudly."""
    target = Target.parse(name)

    def policy(core: FleetCore, obs: np.ndarray) -> np.ndarray:
        out = np.empty(core.n_phones, dtype=np.int64)
        for k, ts in enumerate(core.targets):
            if target not in ts:
                raise ValueError(f"phone {k} has no target {name}; its targets: "
                                 f"{', '.join(str(t) for t in ts)}")
            out[k] = ts.index(target)
        return out

    return policy


#: Most joint actions :func:`centralised_oracle` evaluates per round (memory and time bound).
MAX_JOINT_ACTIONS = 200_000


def joint_actions(n_targets: np.ndarray) -> np.ndarray:
    """Every joint action of phones with ``n_targets`` targets each, (prod(n_targets), N)."""
    total = int(np.prod(n_targets.astype(float)))
    if total > MAX_JOINT_ACTIONS:
        raise ValueError(f"{total:.3g} joint actions per round is too many for the exhaustive "
                         f"centralised oracle (limit {MAX_JOINT_ACTIONS}); use fewer phones")
    grids = np.meshgrid(*[np.arange(int(t)) for t in n_targets], indexing="ij")
    return np.stack([g.reshape(-1) for g in grids], axis=1).astype(np.int64)


class CentralisedOracle:
    """The joint action with the highest summed reward this round, contention included, found by
    evaluating every joint action (ties: the first in lexicographic order). A :data:`Policy` for
    the core it was built for (small fleets: ``prod(n_targets)`` must stay within
    :data:`MAX_JOINT_ACTIONS`)."""

    def __init__(self, core: FleetCore):
        self.joint = joint_actions(core.n_targets)

    def __call__(self, core: FleetCore, obs: np.ndarray) -> np.ndarray:
        total = core.evaluate(self.joint)["reward"].sum(axis=1)
        return self.joint[int(np.argmax(total))]


class CoordinateAscent:
    """Round by round, improve a joint action one phone at a time (a :data:`Policy`).

    Starting from each phone's best target alone, every phone in turn switches to the target that
    maximises ``objective`` given the others' current actions, for up to ``sweeps`` passes or
    until nobody moves:

    * ``"social"``: the fleet's summed reward: a centralised heuristic for fleets too big for the
      exhaustive :class:`CentralisedOracle` (its welfare is a lower bound on the optimum's);
    * ``"selfish"``: the phone's own reward: best-response dynamics; when it stops, the joint
      action is a pure Nash equilibrium of the round (phones that know what the others do).
    """

    def __init__(self, objective: str = "social", sweeps: int = 4):
        if objective not in ("social", "selfish"):
            raise ValueError(f"objective must be 'social' or 'selfish', got {objective!r}")
        self.objective = objective
        self.sweeps = int(sweeps)
        self.converged = 0
        self.rounds = 0

    def __call__(self, core: FleetCore, obs: np.ndarray) -> np.ndarray:
        a = np.array(core.context()["oracle_action"], dtype=np.int64)
        N, T = core.n_phones, core.T
        candidates = np.arange(T)
        self.rounds += 1
        for _ in range(self.sweeps):
            moved = False
            for k in range(N):
                n_k = int(core.n_targets[k])
                joint = np.repeat(a[None], n_k, axis=0)
                joint[:, k] = candidates[:n_k]
                r = core.evaluate(joint)["reward"]
                value = r.sum(axis=1) if self.objective == "social" else r[:, k]
                best = int(np.argmax(value))
                if value[best] > value[a[k]]:
                    a[k] = best
                    moved = True
            if not moved:
                self.converged += 1
                break
        return a


@dataclass
class RunStats:
    """What a policy did over a run (all per request, over every phone and round)."""

    policy: str
    n_phones: int
    rounds: int
    energy_mj: float
    """Mean phone energy per request."""
    qos_violation: float
    """Fraction of requests over their latency target."""
    reward: float
    """Mean reward per request."""
    latency_ms: float
    edge_latency_ms: float
    """Mean latency of the requests that ran on the edge (NaN if none)."""
    edge_alone_latency_ms: float
    """The same requests' mean latency had each phone been alone (contention terms removed)."""
    edge_wait_ms: float
    upload_extra_ms: float
    location_share: dict[str, float] = field(default_factory=dict)
    """Fraction of requests per location (local, edge, cloud)."""
    target_share: dict[str, float] = field(default_factory=dict)

    def as_dict(self) -> dict:
        """Plain dict (JSON-ready)."""
        return dict(self.__dict__)


def run_policy(core: FleetCore, policy: Policy, rounds: int, seed: int, name: str = "") -> RunStats:
    """Play ``policy`` for ``rounds`` rounds from ``core.reset(seed)`` and measure it."""
    obs, _ = core.reset(seed)
    N = core.n_phones
    loc_of = np.array([[LOCATIONS.index(t.location) for t in ts] + [0] * (core.T - len(ts))
                       for ts in core.targets])
    names = sorted({str(t) for ts in core.targets for t in ts})
    name_of = np.array([[names.index(str(t)) for t in ts] + [0] * (core.T - len(ts))
                        for ts in core.targets])
    energy = latency = reward = wait = extra = 0.0
    violations = 0
    edge_lat, edge_alone, edge_n = 0.0, 0.0, 0
    loc_count = np.zeros(len(LOCATIONS))
    name_count = np.zeros(len(names))
    phones = np.arange(N)
    for _ in range(rounds):
        a = np.asarray(policy(core, obs), dtype=np.int64)
        obs, r, info = core.step(a)
        energy += info["energy_mj"].sum()
        latency += info["latency_ms"].sum()
        reward += r.sum()
        violations += int(np.count_nonzero(~info["qos_met"]))
        wait += info["edge_wait_ms"].sum()
        extra += info["upload_extra_ms"].sum()
        loc = loc_of[phones, a]
        on_edge = loc == 1
        edge_lat += info["latency_ms"][on_edge].sum()
        edge_alone += (info["latency_ms"] - info["upload_extra_ms"]
                       - info["edge_wait_ms"])[on_edge].sum()
        edge_n += int(on_edge.sum())
        loc_count += np.bincount(loc, minlength=len(LOCATIONS))
        name_count += np.bincount(name_of[phones, a], minlength=len(names))
    n = rounds * N
    return RunStats(
        policy=name, n_phones=N, rounds=rounds, energy_mj=energy / n, qos_violation=violations / n,
        reward=reward / n, latency_ms=latency / n,
        edge_latency_ms=edge_lat / edge_n if edge_n else float("nan"),
        edge_alone_latency_ms=edge_alone / edge_n if edge_n else float("nan"),
        edge_wait_ms=wait / n, upload_extra_ms=extra / n,
        location_share={k: float(v / n) for k, v in zip(LOCATIONS, loc_count)},
        target_share={k: float(v / n) for k, v in zip(names, name_count) if v})

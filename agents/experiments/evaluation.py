"""Metrics every agent is scored by (SPEC section 9), for training windows and evaluation."""

from __future__ import annotations

import time
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from typing import Any

import gymnasium as gym
import numpy as np

from agents.base import batched_env
from agents.experiments.tracking import ScalarWriter


class TrainingMonitor:
    """Windowed training metrics from ``info``, written to TensorBoard with the shared tags.

    Scores each executed request against the oracle action of *that* request (the one announced
    with the observation the agent acted on), so it must see every reset and step.
    """

    def __init__(self, writer: ScalarWriter | None, log_interval: int = 1000):
        self.writer = writer
        self.log_interval = int(log_interval)
        self.step = 0
        self.curve: list[dict[str, float]] = []
        self._pending_oracle = -1
        self._reset_window()

    def _reset_window(self) -> None:
        self._n = self._match = self._qos_miss = self._acc_miss = 0
        self._reward = self._energy = 0.0

    def on_reset(self, info: dict[str, Any]) -> None:
        """Remember the oracle of the first request of the episode."""
        self._pending_oracle = info.get("oracle_action", -1)

    def on_step(self, action: int, reward: float, info: dict[str, Any]) -> bool:
        """Account one executed request; writes a point every ``log_interval`` steps."""
        self._n += 1
        self._reward += reward
        self._energy += info["energy_mj"]
        self._match += int(action) == self._pending_oracle
        self._qos_miss += not info["qos_met"]
        self._acc_miss += not info["accuracy_met"]
        self._pending_oracle = info["oracle_action"]
        self.step += 1
        if self.step % self.log_interval == 0:
            self.flush()
        return True

    def on_steps(self, executed: Any) -> bool:
        """:meth:`on_step` for a batch of steps (``AutoScaleEnv.advance``'s arrays): the same
        windows, sums added in the same order (so the same logged values at the same steps)."""
        k = len(executed.action)
        acted = np.empty(k, dtype=np.int64)  # the oracle of the request each action was taken on
        if k:
            acted[0] = self._pending_oracle
            acted[1:] = executed.oracle_action[:-1]
        match = executed.action == acted
        j = 0
        while j < k:
            m = min(k - j, self.log_interval - self.step % self.log_interval)
            part = slice(j, j + m)
            self._n += m
            self._reward = _sequential_sum(self._reward, executed.reward[part])
            self._energy = _sequential_sum(self._energy, executed.energy_mj[part])
            self._match += int(np.count_nonzero(match[part]))
            self._qos_miss += m - int(np.count_nonzero(executed.qos_met[part]))
            self._acc_miss += m - int(np.count_nonzero(executed.accuracy_met[part]))
            self.step += m
            j += m
            if self.step % self.log_interval == 0:
                self.flush()
        if k:
            self._pending_oracle = int(executed.oracle_action[-1])
        return True

    def flush(self) -> None:
        """Write the current window (if any) and start a new one."""
        if not self._n:
            return
        point = {
            "step": self.step,
            "rollout/reward_mean": self._reward / self._n,
            "autoscale/energy_mj": self._energy / self._n,
            "autoscale/qos_violation_rate": self._qos_miss / self._n,
            "autoscale/accuracy_violation_rate": self._acc_miss / self._n,
            "autoscale/oracle_match": self._match / self._n,
        }
        self.curve.append(point)
        if self.writer is not None:
            self.writer.scalar_group({tag: value for tag, value in point.items()
                                      if tag != "step"}, self.step)
        self._reset_window()


def _sequential_sum(start: float, values: np.ndarray) -> float:
    """``start + values[0] + values[1] + ...`` left to right, as a Python loop of ``+=`` adds
    (``np.add.accumulate`` is sequential; ``np.sum`` pairs terms and rounds differently)."""
    if len(values) == 0:
        return start
    return float(np.add.accumulate(np.concatenate(([start], values)))[-1])


@dataclass
class EvalResult:
    """Greedy evaluation of one agent on one cell and seed (totals over the evaluated requests)."""

    requests: int = 0
    energy_mj: float = 0.0
    cpu_energy_mj: float = 0.0
    cloud_energy_mj: float = 0.0
    oracle_energy_mj: float = 0.0
    qos_violations: int = 0
    accuracy_violations: int = 0
    oracle_matches: int = 0
    ceiling_matches: int = 0
    near_optimal: int = 0
    """Requests whose chosen target met both targets within ``NEAR_OPTIMAL_SLACK`` of the oracle's
    energy."""
    by_signal: dict[str, list[float]] = field(default_factory=dict)
    """"regular" / "weak" Wi-Fi (:data:`WEAK_WIFI_DBM`) -> [agent, mobile-CPU, cloud energy mJ,
    requests]."""
    decision_seconds: float = 0.0
    per_network: dict[str, list[float]] = field(default_factory=dict)
    """network -> [agent energy mJ, mobile-CPU energy mJ, requests]."""

    def metrics(self) -> dict[str, float]:
        """The reported metrics (rates are fractions; ``energy_mj`` is per request).

        ``ppw_vs_cpu_weak`` etc. restrict the ratios to requests at weak / regular Wi-Fi signal
        (NaN where the evaluation saw none)."""
        n = max(self.requests, 1)
        split = {}
        for band in ("regular", "weak"):
            agent, cpu, cloud, count = self.by_signal.get(band, [0.0, 0.0, 0.0, 0])
            split[f"ppw_vs_cpu_{band}"] = cpu / agent if count else float("nan")
            split[f"ppw_vs_cloud_{band}"] = cloud / agent if count else float("nan")
        return {
            "energy_mj": self.energy_mj / n,
            "ppw_vs_cpu": self.cpu_energy_mj / self.energy_mj,
            "ppw_vs_cloud": self.cloud_energy_mj / self.energy_mj,
            "qos_violation_rate": self.qos_violations / n,
            "accuracy_violation_rate": self.accuracy_violations / n,
            "oracle_match": self.oracle_matches / n,
            "oracle_match_ceiling": self.ceiling_matches / n,
            "near_optimal_rate": self.near_optimal / n,
            **split,
            "energy_gap_to_oracle": self.energy_mj / self.oracle_energy_mj - 1.0,
            "decision_us": self.decision_seconds / n * 1e6,
        }


#: A request is near-optimal when its target meets both targets and uses at most this much more
#: energy than the oracle's target.
NEAR_OPTIMAL_SLACK = 0.05
#: Wi-Fi RSSI at or below which a request counts as "weak signal" in the split ratios: the weak bin
#: of the paper reconstruction's state (``features.toml``).
WEAK_WIFI_DBM = -80.0


def evaluate(agent: Any, env: gym.Env, n_requests: int, seed: int,
             cpu_target: str = "local/cpu/fp32", cloud_target: str = "cloud/gpu/fp32") -> EvalResult:
    """Run ``agent`` greedily for ``n_requests`` on ``env`` from ``reset(seed=seed)``.

    The baselines' energies (mobile CPU, cloud, oracle) are read from the same requests'
    counterfactual outcomes, so every ratio compares identical requests. Needs a backend that
    knows every target's outcome (sim, full replay traces).

    ``oracle_match_ceiling`` is the best match any policy of the observation alone could reach on
    these requests: per state, the share of its most frequent oracle action. It measures how much
    the state bins alias requests whose best targets differ.

    ``near_optimal_rate`` is the share of requests whose chosen target met both the latency and
    the accuracy target and used at most ``1 + NEAR_OPTIMAL_SLACK`` times the oracle target's
    energy (a request on which no target meets both can never count).
    """
    if int(n_requests) < 1:
        raise ValueError(f"evaluation needs n_requests >= 1 (--eval-steps), got {n_requests}")
    if hasattr(agent, "predict_block"):
        batched = batched_env(env)
        if batched is not None and getattr(agent, "predicts_own_env", False) \
                and agent.env.unwrapped is not batched[0]:
            batched = None  # the oracle reads its own env, which is not this one
        if batched is not None:
            return _evaluate_blocks(agent, env, *batched, int(n_requests), seed, cpu_target,
                                    cloud_target)
    u = env.unwrapped
    cpu, cloud = u.target_index(cpu_target), u.target_index(cloud_target)
    res = EvalResult()
    per_state: dict[bytes, Counter] = defaultdict(Counter)
    obs, info = env.reset(seed=seed)
    for _ in range(n_requests):
        cf = u.counterfactuals()
        if cf is None:
            raise ValueError("evaluate() needs a backend that knows every target's outcome")
        oracle = u.oracle_action()
        t0 = time.perf_counter()
        action, _ = agent.predict(obs, deterministic=True)
        res.decision_seconds += time.perf_counter() - t0
        action = int(action)
        state_key = np.asarray(obs["state"] if isinstance(obs, dict) else obs).tobytes()
        per_state[state_key][oracle] += 1
        wifi_dbm = float(u.context["rssi_wifi_dbm"])
        obs, reward, terminated, truncated, info = env.step(action)
        e = info["energy_mj"]
        oracle_mj = float(cf["energy_mj"][oracle])
        res.near_optimal += bool(info["qos_met"] and info["accuracy_met"]
                                 and e <= oracle_mj * (1.0 + NEAR_OPTIMAL_SLACK))
        band = res.by_signal.setdefault("weak" if wifi_dbm <= WEAK_WIFI_DBM else "regular",
                                        [0.0, 0.0, 0.0, 0])
        band[0] += e
        band[1] += float(cf["energy_mj"][cpu])
        band[2] += float(cf["energy_mj"][cloud])
        band[3] += 1
        res.requests += 1
        res.energy_mj += e
        res.cpu_energy_mj += float(cf["energy_mj"][cpu])
        res.cloud_energy_mj += float(cf["energy_mj"][cloud])
        res.oracle_energy_mj += oracle_mj
        res.qos_violations += not info["qos_met"]
        res.accuracy_violations += not info["accuracy_met"]
        res.oracle_matches += action == oracle
        row = res.per_network.setdefault(info["network"], [0.0, 0.0, 0])
        row[0] += e
        row[1] += float(cf["energy_mj"][cpu])
        row[2] += 1
        if terminated or truncated:
            obs, info = env.reset()
    res.ceiling_matches = sum(c.most_common(1)[0][1] for c in per_state.values())
    return res


def _evaluate_blocks(agent: Any, env: gym.Env, u: Any, time_limit: Any, n_requests: int,
                     seed: int, cpu_target: str, cloud_target: str) -> EvalResult:
    """:func:`evaluate` over blocks of requests, for agents whose greedy decision is a pure
    function of the pending request (``agent.predict_block(block) -> actions``): the same
    :class:`EvalResult`, sums added in the same order (``tests/agents/test_evaluation.py``
    compares the two loops). ``decision_seconds`` is then the batched decisions' time."""
    cpu, cloud = u.target_index(cpu_target), u.target_index(cloud_target)
    res = EvalResult()
    counts = np.zeros((u.encoder.n_states, len(u.targets)), dtype=np.int64)
    names = [w.name for w in u.workloads]
    env.reset(seed=seed)
    done = 0
    while done < n_requests:
        block = u.pending_block()
        if block is None:
            raise ValueError("evaluate() needs a backend that knows every target's outcome")
        k = min(n_requests - done, len(block.state))
        if time_limit is not None:
            k = min(k, time_limit._max_episode_steps - time_limit._elapsed_steps)
        t0 = time.perf_counter()
        actions = np.asarray(agent.predict_block(block), dtype=np.int64)[:k]
        res.decision_seconds += time.perf_counter() - t0
        rows = np.arange(k)
        oracle = block.oracle_action[:k]
        energy = block.energy_mj[:k]
        e = energy[rows, actions]
        oracle_mj = energy[rows, oracle]
        cpu_mj, cloud_mj = energy[:, cpu], energy[:, cloud]
        qos, acc = block.qos_met[rows, actions], block.accuracy_met[rows, actions]
        np.add.at(counts, (block.state[:k], oracle), 1)
        res.near_optimal += int(np.count_nonzero(
            qos & acc & (e <= oracle_mj * (1.0 + NEAR_OPTIMAL_SLACK))))
        weak = block.rssi_wifi_dbm[:k] <= WEAK_WIFI_DBM
        for band, mask in _first_seen((("weak", weak), ("regular", ~weak))):
            row = res.by_signal.setdefault(band, [0.0, 0.0, 0.0, 0])
            row[0] = _sequential_sum(row[0], e[mask])
            row[1] = _sequential_sum(row[1], cpu_mj[mask])
            row[2] = _sequential_sum(row[2], cloud_mj[mask])
            row[3] += int(np.count_nonzero(mask))
        res.requests += k
        res.energy_mj = _sequential_sum(res.energy_mj, e)
        res.cpu_energy_mj = _sequential_sum(res.cpu_energy_mj, cpu_mj)
        res.cloud_energy_mj = _sequential_sum(res.cloud_energy_mj, cloud_mj)
        res.oracle_energy_mj = _sequential_sum(res.oracle_energy_mj, oracle_mj)
        res.qos_violations += k - int(np.count_nonzero(qos))
        res.accuracy_violations += k - int(np.count_nonzero(acc))
        res.oracle_matches += int(np.count_nonzero(actions == oracle))
        net = block.network[:k]
        present, first = np.unique(net, return_index=True)
        for w in present[np.argsort(first)].tolist():  # dict order: first seen, as per step
            mask = net == w
            row = res.per_network.setdefault(names[w], [0.0, 0.0, 0])
            row[0] = _sequential_sum(row[0], e[mask])
            row[1] = _sequential_sum(row[1], cpu_mj[mask])
            row[2] += int(np.count_nonzero(mask))
        u.advance(actions)
        done += k
        if time_limit is not None:
            time_limit._elapsed_steps += k
            if time_limit._elapsed_steps >= time_limit._max_episode_steps:
                env.reset()
    res.ceiling_matches = int(counts.max(axis=1).sum())
    return res


def _first_seen(bands):
    """The bands present, in the order of their first request (the per-step dict order)."""
    firsts = [(int(np.argmax(mask)), band, mask) for band, mask in bands if mask.any()]
    return [(band, mask) for _, band, mask in sorted(firsts)]

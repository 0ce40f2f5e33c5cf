"""Metrics every agent is scored by (SPEC section 9), for training windows and evaluation."""

from __future__ import annotations

import time
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from typing import Any

import gymnasium as gym
import numpy as np

from agents.tracking import ScalarWriter


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
            for tag, value in point.items():
                if tag != "step":
                    self.writer.scalar(tag, value, self.step)
        self._reset_window()


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
    decision_seconds: float = 0.0
    per_network: dict[str, list[float]] = field(default_factory=dict)
    """network -> [agent energy mJ, mobile-CPU energy mJ, requests]."""

    def metrics(self) -> dict[str, float]:
        """The reported metrics (rates are fractions; ``energy_mj`` is per request)."""
        n = max(self.requests, 1)
        return {
            "energy_mj": self.energy_mj / n,
            "ppw_vs_cpu": self.cpu_energy_mj / self.energy_mj,
            "ppw_vs_cloud": self.cloud_energy_mj / self.energy_mj,
            "qos_violation_rate": self.qos_violations / n,
            "accuracy_violation_rate": self.accuracy_violations / n,
            "oracle_match": self.oracle_matches / n,
            "oracle_match_ceiling": self.ceiling_matches / n,
            "energy_gap_to_oracle": self.energy_mj / self.oracle_energy_mj - 1.0,
            "decision_us": self.decision_seconds / n * 1e6,
        }


def evaluate(agent: Any, env: gym.Env, n_requests: int, seed: int,
             cpu_target: str = "local/cpu/fp32", cloud_target: str = "cloud/gpu/fp32") -> EvalResult:
    """Run ``agent`` greedily for ``n_requests`` on ``env`` from ``reset(seed=seed)``.

    The baselines' energies (mobile CPU, cloud, oracle) are read from the same requests'
    counterfactual outcomes, so every ratio compares identical requests. Needs a backend that
    knows every target's outcome (sim, full replay traces).

    ``oracle_match_ceiling`` is the best match any policy of the observation alone could reach on
    these requests: per state, the share of its most frequent oracle action. It measures how much
    the paper's state bins alias requests whose best targets differ.
    """
    if int(n_requests) < 1:
        raise ValueError(f"evaluation needs n_requests >= 1 (--eval-steps), got {n_requests}")
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
        obs, reward, terminated, truncated, info = env.step(action)
        e = info["energy_mj"]
        res.requests += 1
        res.energy_mj += e
        res.cpu_energy_mj += float(cf["energy_mj"][cpu])
        res.cloud_energy_mj += float(cf["energy_mj"][cloud])
        res.oracle_energy_mj += float(cf["energy_mj"][oracle])
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
